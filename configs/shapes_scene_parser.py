"""The Shapes scene parser: every object's shape, color, size and position read off the image.

  python -m multimodal.main --config=configs/shapes_scene_parser.py --workdir=/tmp/scene_parser

A ViT (the Shapes configs' image encoder) and per-token heads: each token's 8x8-pixel cell says
whether an object's center lies in it, that object's attributes and the center's place in
the cell (models/scene_parser.py, tasks/object_attributes.py), trained on the rendered
`shapes_captions` scenes. Two uses:
  - the attribute classifier that checks generated images against their prompts (its accuracy
    on real validation scenes is the ceiling of that measurement);
  - dense, cheap pretraining of the image encoder for the reasoning tasks:
    configs/shapes_nlvr.py:image_init=WORKDIR loads its `image_encoder` (same width and depth).

Arguments (`--config=configs/shapes_scene_parser.py:ARG`, comma-separated key=value):
  data=default|small|tiny   the shapes_captions builder config (50k / 10k / 128 images)
  res=64                    image resolution (a multiple of the 8-pixel patches)
  width=128, depth=2        the ViT's size (match the model that will load it)
  total_steps=1500          training steps
  batch_size=64             global batch size
  tiny=false                a minute-long smoke-test setting
"""
from ml_collections import config_dict

from multimodal import config_utils

PATCH = 8  # shapes_vit's
INPUTS = ("image", "grid_object", "grid_shape", "grid_color", "grid_size", "grid_offset")


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, data="default", res=64, width=128, depth=2,
                                total_steps=1500, batch_size=64, tiny=False)
  if args.res % PATCH:
    raise ValueError(f"res must be a multiple of the {PATCH}-pixel patches; got {args.res}.")
  c = config_utils.shapes_base(args, dataset="shapes_captions")
  c.pp_train = (f"{config_utils.image_pp(args.res)}|object_grid(grid={args.res // PATCH})|"
                f"keep{INPUTS!r}")
  c.task = dict(type="object_attributes", threshold=config_utils.SHAPES_OBJECT_THRESHOLD,
                min_separation=config_utils.SHAPES_MIN_SEPARATION, offset_weight=1.0)
  width, depth = (64, 1) if args.tiny else (args.width, args.depth)  # tiny: shapes_nlvr's
  encoder = config_utils.shapes_image_encoder("object_tokens", width, depth)
  c.model = dict(type="scene_parser", image=encoder["image"], hidden_dim=encoder["hidden_dim"],
                 dtype="float32")

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 2 if args.tiny else 100
  c.optimizer.weight_decay = 1e-4
  evaluator = lambda split, every: dict(
      type="object_attributes", split=split, pp=c.pp_train, batch_size=32 if args.tiny else 250,
      every_steps=every, max_examples=config_dict.placeholder(int))
  c.evals = dict(validation=evaluator("validation", 0 if args.tiny else 500),
                 test=evaluator("test", 0))
  c.checkpoint = dict(every_steps=10 if args.tiny else 500, keep=2)
  return c
