"""Image-text contrastive learning (SigLIP or CLIP) on the built-in Shapes captions, scored
by zero-shot retrieval.

  python -m multimodal.main --config=configs/shapes_retrieval.py --workdir=/tmp/shapes_siglip
  python -m multimodal.main --config=configs/shapes_retrieval.py:loss=softmax --workdir=...

Two towers: the Shapes ViT pooled by multi-head attention (MAP, as SigLIP) and a text
transformer, each projected to one width and L2-normalised; the logits are
exp(t) * cosine + b with t and b learned. Each training pair is an image and one of its five
captions, drawn anew each time the image is seen. Evaluation embeds every validation image
and all five of its captions and reports R@1/5/10 in both directions (each validation scene
has a distinct description, so each caption has one right image); at the end, zero-shot
classification of the one-object validation images among the 36 kinds of object.

Arguments (`--config=configs/shapes_retrieval.py:ARG`, comma-separated key=value):
  data=default|small|tiny   the shapes_captions builder config (50k / 10k / 128 images)
  loss=sigmoid              sigmoid (SigLIP), sigmoid_chunked (SigLIP computed across the
                            devices in chunks) or softmax (CLIP)
  res=64                    image resolution
  total_steps=3000          training steps
  batch_size=256            global batch size (the number of pairs scored against each other)
  tiny=false                a minute-long smoke-test setting
"""
import math

from ml_collections import config_dict

from multimodal import config_utils
from multimodal.data.shapes import captions

TOKENIZER = "shapes_text"
MAX_LEN = 24  # BOS and a caption (at most 23 pieces).
PP_IMAGE = "decode|resize({res})|value_range(-1, 1)"
TEXT = f"max_len={MAX_LEN}, model={TOKENIZER!r}, out_key='text_tokens', mask_key='text_mask'"
MODEL_INPUTS = "keep('image', 'text_tokens', 'text_mask')"
# (log temperature, bias) at the start: SigLIP's t = 10, b = -10; CLIP's 1 / 0.07 and no bias.
_LOGIT_INIT = {"sigmoid": (math.log(10.0), -10.0), "sigmoid_chunked": (math.log(10.0), -10.0),
               "softmax": (math.log(1 / 0.07), 0.0)}


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, data="default", loss="sigmoid", res=64, total_steps=3000,
                                batch_size=256, tiny=False)
  config_utils.choices([args.loss], tuple(_LOGIT_INIT), "loss")
  c = config_utils.shapes_base(args, dataset="shapes_captions")
  image_pp = PP_IMAGE.format(res=args.res)
  c.pp_train = (f"{image_pp}|choice('captions', out_key='caption')|"
                f"tok(key='caption', {TEXT})|{MODEL_INPUTS}")
  eval_pp = f"{image_pp}|tok(key='captions', {TEXT})|{MODEL_INPUTS}"
  c.task = dict(type="contrastive", tokenizer=TOKENIZER, loss=args.loss)

  width = 64 if args.tiny else 128
  depth = 1 if args.tiny else 2
  log_temperature, bias = _LOGIT_INIT[args.loss]
  c.model = dict(
      type="two_towers",
      image=config_utils.shapes_vit(width, depth, pool_type="map"),
      text=dict(type="text_encoder", variant=None, width=width, depth=depth,
                mlp_dim=2 * width, num_heads=4, pool_type="map"),
      embed_dim=width, temperature_init=log_temperature, bias_init=bias, dtype="float32")

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 2 if args.tiny else 200
  c.optimizer.weight_decay = 1e-4
  eval_batch = 32 if args.tiny else 250
  c.evals = dict(
      validation=dict(type="retrieval", split="validation", pp=eval_pp, batch_size=eval_batch,
                      every_steps=0 if args.tiny else 500,
                      max_examples=config_dict.placeholder(int)),
      # The validation images of one object, classified among all 36 kinds of object by
      # the nearest of the texts "a small red circle", ...
      zero_shot=dict(type="zero_shot_classification", split="validation",
                     pp=f"{image_pp}|single_object_kind|keep('image', 'label')",
                     class_texts=captions.kind_phrases(), text_pp=f"tok(key='text', {TEXT})",
                     batch_size=eval_batch, every_steps=0))
  c.checkpoint = dict(every_steps=10 if args.tiny else 500, keep=2)
  return c
