"""Captioning on the built-in Shapes scenes, PaLI-style: the model writes the caption.

  python -m multimodal.main --config=configs/shapes_captions.py --workdir=/tmp/shapes_captions

The ViT's patch tokens are projected to a Gemma-style decoder and placed before "BOS caption";
the decoder is trained on one of the image's five captions (drawn anew each time the image is
seen) and EOS. Evaluation decodes greedily (or by beam search) on the device and scores the
captions against all five references with BLEU-4 and CIDEr-D as coco-caption computes them.

Arguments (`--config=configs/shapes_captions.py:ARG`, comma-separated key=value):
  data=default|small|tiny   the shapes_captions builder config (50k / 10k / 128 images)
  res=64                    image resolution
  total_steps=3000          training steps
  batch_size=128            global batch size
  beam_size=1               1: greedy decoding in evaluation; more: beam search
  tiny=false                a minute-long smoke-test setting
"""
from ml_collections import config_dict

from multimodal import config_utils

TOKENIZER = "shapes_text"
PROMPT = "caption"
MAX_LEN = 28  # BOS, the prompt (1 piece), a caption (at most 23 pieces) and EOS, rounded up.
MAX_CAPTION_TOKENS = 24  # A caption and EOS.
PP_IMAGE = "decode|resize({res})|value_range(-1, 1)"
MODEL_INPUTS = "keep('image', 'text_tokens', 'text_mask', 'prefix_mask')"


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, data="default", res=64, total_steps=3000, batch_size=128,
                                beam_size=1, tiny=False)
  c = config_utils.shapes_base(args, dataset="shapes_captions")
  image_pp = PP_IMAGE.format(res=args.res)
  tok = f"tok_prompt_answer(max_len={MAX_LEN}, model={TOKENIZER!r}, prompt={PROMPT!r}"
  c.pp_train = (f"{image_pp}|choice('captions', out_key='caption')|"
                f"{tok}, answer_key='caption')|{MODEL_INPUTS}")
  eval_pp = f"{image_pp}|{tok}, with_answer=False)|{MODEL_INPUTS}"
  c.task = dict(type="image_to_text", tokenizer=TOKENIZER,
                max_answer_tokens=MAX_CAPTION_TOKENS, beam_size=args.beam_size)

  width = 64 if args.tiny else 128
  depth = 1 if args.tiny else 2
  c.model = dict(type="paligemma", image=config_utils.shapes_vit(width, depth),
                 decoder=config_utils.shapes_decoder(width, depth), dtype="float32")

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 2 if args.tiny else 200
  c.optimizer.weight_decay = 1e-4
  c.evals = dict(validation=dict(
      type="captioning", split="validation", pp=eval_pp, batch_size=32 if args.tiny else 250,
      every_steps=0 if args.tiny else 1000, max_examples=config_dict.placeholder(int)))
  c.checkpoint = dict(every_steps=10 if args.tiny else 500, keep=2)
  return c
