"""Generative VQA on the built-in Shapes scenes, PaLI-style: the model writes the answer.

  python -m multimodal.main --config=configs/shapes_vqa_generative.py --workdir=/tmp/shapes_gen

The image encoder, data, budget and optimiser are those of configs/shapes_vqa.py (the
classifier-head baseline), so the two compare on the same budget. The ViT's patch tokens are
projected to a Gemma-style decoder (RMSNorm, rotary positions, multi-query attention, gated
GELU) and placed before "BOS question"; the decoder is trained on the answer tokens and EOS
only (prefix-LM: image and question see each other, the answer is causal). Evaluation decodes
greedily on the device and scores the text with `metric=soft`: exact match for Shapes' single
answers (the official leave-one-out VQA metric, `metric=vqa`, needs VQAv2's ten annotators).

Arguments (`--config=configs/shapes_vqa_generative.py:ARG`, comma-separated key=value):
  data=default|large|small|tiny  the shapes_vqa builder config
  res=64                    image resolution
  total_steps=3600          training steps
  batch_size=128            global batch size
  model=paligemma           paligemma (one prefix-LM decoder over image, question and answer)
                            or pali (PaLI's encoder-decoder: an encoder over image and question,
                            a decoder with cross-attention writes the answer)
  decoder_depth=4           the decoder's layers: 4, as many as the classifier baseline runs
                            over the question (a 2-layer text encoder, 2 fusion layers); the
                            tiny setting: 1
  num_kv_heads=1            1: multi-query attention; 4: multi-head
  beam_size=1               1: greedy decoding in evaluation; more: beam search
  image=vit                 vit, object_tokens or object_readings (the scene parser as the
                            image encoder, only the cells it reads as objects kept: their ViT
                            tokens or its readings; see configs/shapes_nlvr.py)
  image_init=               a configs/shapes_scene_parser.py workdir to start the image
                            encoder from (only it)
  freeze_image=false        keep the image encoder as it starts
  tiny=false                a minute-long smoke-test setting
"""
from ml_collections import config_dict

from multimodal import config_utils

MAX_LEN = 20  # BOS, a question (at most 12 pieces), an answer (at most 3) and EOS.
PP_IMAGE = "decode|resize({res})|value_range(-1, 1)"
MODEL_INPUTS = "keep('image', 'text_tokens', 'text_mask', 'prefix_mask')"


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, data="default", res=64, total_steps=3600, batch_size=128,
                                model="paligemma", decoder_depth=4, num_kv_heads=1, beam_size=1,
                                tiny=False, image="vit", image_init="", freeze_image=False)
  config_utils.choices([args.model], ("paligemma", "pali"), "model")
  c = config_utils.shapes_base(args)
  image_pp = PP_IMAGE.format(res=args.res)
  c.pp_train = (f"{image_pp}|tok_prompt_answer(max_len={MAX_LEN}, model='shapes')|"
                f"{MODEL_INPUTS}")
  eval_pp = f"{image_pp}|tok_prompt_answer(max_len={MAX_LEN}, model='shapes', with_answer=False)"
  c.task = dict(type="image_to_text", tokenizer="shapes", max_answer_tokens=4,
                beam_size=args.beam_size)

  width = 64 if args.tiny else 128
  depth = 1 if args.tiny else 2
  c.model = dict(
      type=args.model,
      # The classifier baseline's image encoder (configs/shapes_vqa.py).
      image=config_utils.shapes_image_encoder(args.image, width, depth),
      decoder=config_utils.shapes_decoder(width, depth if args.tiny else args.decoder_depth,
                                          args.num_kv_heads),
      dtype="float32")
  if args.model == "pali":
    c.model.encoder_depth = depth

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 2 if args.tiny else 200
  c.optimizer.weight_decay = 1e-4
  c.evals = dict(validation=dict(
      type="generative_vqa", split="validation", pp=eval_pp, batch_size=32 if args.tiny else 256,
      every_steps=0 if args.tiny else 500, max_examples=config_dict.placeholder(int),
      metric="soft"))
  c.checkpoint = dict(every_steps=10 if args.tiny else 500, keep=2)
  config_utils.start_from(c, args.image_init, ["image_encoder"],
                          frozen=["image_encoder"] if args.freeze_image else [])
  return c
