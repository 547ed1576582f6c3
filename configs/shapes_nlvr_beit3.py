"""NLVR on the built-in Shapes pairs with BEiT-3, as the release fine-tunes it on NLVR2.

  python -m multimodal.main --config=configs/shapes_nlvr_beit3.py --workdir=/tmp/nlvr_beit3
  # From a masked-data-modeling run (configs/shapes_mdm_beit3.py) in /tmp/mdm_beit3:
  python -m multimodal.main --config=configs/shapes_nlvr_beit3.py:init=/tmp/mdm_beit3 \
      --workdir=/tmp/nlvr_beit3_pretrained

The statement goes through the encoder once with each image (the joint sequence: CLS, the
patches, then the text); the two passes' vision and language CLS states feed the release's
NLVR head (models/beit3_models.py). Data, budget and evaluation as configs/shapes_nlvr.py:
validation during training, test (new scenes) and test_heldout (held-out template and color
combinations) at the end, each per template and label.

Arguments (`--config=configs/shapes_nlvr_beit3.py:ARG`, comma-separated key=value):
  data=default|small|tiny   the shapes_nlvr builder config
  res=64                    image resolution (8x8 patches)
  total_steps=2000          training steps
  batch_size=128            global batch size
  width=128, depth=4        the encoder's sizes (4 heads, MLP 2x wide)
  variant=release           release (torchscale's BEiT3) or paper (shared attention, the top
                            vl_layers blocks with one vision-language FFN)
  vl_layers=0               the paper variant's vision-language blocks
  init=                     a pretraining workdir (or a .npz of params) to start from; its
                            masked-modeling heads are left out and the NLVR head starts random
  tiny=false                a minute-long smoke-test setting
"""
from multimodal import config_utils

PRETRAINING_HEADS = ("mlm_head", "mim_head")


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, data="default", res=64, total_steps=2000, batch_size=128,
                                width=128, depth=4, variant="release", vl_layers=0, init="",
                                tiny=False)
  c = config_utils.shapes_base(args, dataset="shapes_nlvr")
  pp = config_utils.nlvr_pp(args.res)
  c.pp_train = pp
  c.task = dict(type="classification", num_classes=2, tokenizer=config_utils.NLVR_TOKENIZER,
                label_key="label")
  width, depth = (32, 1) if args.tiny else (args.width, args.depth)
  c.model = dict(type="beit3_nlvr", dtype="float32",
                 encoder=config_utils.shapes_beit3(width, depth, args.res,
                                                   variant=args.variant,
                                                   vl_layers=args.vl_layers))
  if args.init:
    c.init.params = args.init
    c.init.skip = ("head", *PRETRAINING_HEADS)

  config_utils.shapes_nlvr_training(c, pp, args.tiny)
  return c
