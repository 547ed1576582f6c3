"""Masked data modeling for BEiT-3 on Shapes image-caption pairs: the pretraining that
configs/shapes_nlvr_beit3.py:init=WORKDIR fine-tunes from.

  python -m multimodal.main --config=configs/shapes_mdm_beit3.py --workdir=/tmp/mdm_beit3

Each step takes an image of shapes_captions with one of its captions (drawn anew each time),
masks half of the caption's tokens (after BOS) and 40% of the patches, and trains the encoder
to fill both in from what is left of the pair (models/beit3_pretraining.py): cross-entropy on
the masked tokens, mean squared error on the masked patches' normalised pixels. The encoder
is the NLVR config's (config_utils.shapes_beit3), so the checkpoint loads there as it is.

Arguments (`--config=configs/shapes_mdm_beit3.py:ARG`, comma-separated key=value):
  data=default|small|tiny   the shapes_captions builder config (50k / 10k / 128 images)
  res=64                    image resolution (8x8 patches)
  total_steps=2000          training steps
  batch_size=128            global batch size
  width=128, depth=4        the encoder's sizes (as the NLVR config's)
  text_mask_rate=0.5        the share of caption tokens masked
  image_mask_rate=0.4       the share of patches masked
  tiny=false                a minute-long smoke-test setting
"""
from multimodal import config_utils

MAX_LEN = 24  # BOS and a caption of at most 23 pieces (shapes_vl)


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, data="default", res=64, total_steps=2000, batch_size=128,
                                width=128, depth=4, text_mask_rate=0.5, image_mask_rate=0.4,
                                tiny=False)
  c = config_utils.shapes_base(args, dataset="shapes_captions")
  c.pp_train = (f"{config_utils.image_pp(args.res)}|choice('captions', out_key='caption')|"
                f"tok(max_len={MAX_LEN}, model={config_utils.NLVR_TOKENIZER!r}, key='caption', "
                "out_key='text_tokens', mask_key='text_mask')|"
                "keep('image', 'text_tokens', 'text_mask')")
  c.task = dict(type="masked_data_modeling", tokenizer=config_utils.NLVR_TOKENIZER,
                image_loss_weight=1.0)
  width, depth = (32, 1) if args.tiny else (args.width, args.depth)
  c.model = dict(type="beit3_mdm", dtype="float32",
                 encoder=config_utils.shapes_beit3(width, depth, args.res),
                 text_mask_rate=args.text_mask_rate, image_mask_rate=args.image_mask_rate)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 2 if args.tiny else 200
  c.optimizer.weight_decay = 1e-4
  c.evals = {}
  c.checkpoint = dict(every_steps=10 if args.tiny else 500, keep=2)
  return c
