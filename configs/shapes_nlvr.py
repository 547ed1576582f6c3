"""NLVR on the built-in Shapes pairs with a fusion-library model: is the statement true of
the left and right images?

  python -m multimodal.main --config=configs/shapes_nlvr.py --workdir=/tmp/shapes_nlvr
  python -m multimodal.main --config=configs/shapes_nlvr.py:fusion=late --workdir=/tmp/nlvr_late

Both images go through one ViT (the Shapes VQA job's: conv stem, 8x8 patches, width 128,
depth 2); their tokens stand side by side as one `image` modality (a learned embedding marks
each image's tokens); the statement goes through a text encoder; then the fusion module and a
classifier over false / true (models/fusion_nlvr.py). Evaluated on validation during
training, and at the end on `test` (new scenes) and `test_heldout` (held-out template and
color combinations), each broken down by template and label. configs/shapes_nlvr_beit3.py is
the BEiT-3 model on the same data.

Arguments (`--config=configs/shapes_nlvr.py:ARG`, comma-separated key=value):
  data=default|small|tiny   the shapes_nlvr builder config (30k / 6k / 64 training pairs)
  res=64                    image resolution
  total_steps=2000          training steps
  batch_size=128            global batch size
  fusion=cross_attention    any fusion module (early, late, hybrid, weighted_sum, concat_mlp,
                            gated, cross_attention, co_attention, bottleneck, multiway,
                            relation_network: pairs of object tokens, with image=object_...)
  query=text,context=image  cross_attention: the statement's tokens attend to both images'
  pair=joint|separate       both images as one modality, or the statement with each image in
                            its own pass of the fusion module (BEiT-3's NLVR head's layout)
  image=vit|object_tokens|object_readings
                            the image encoder: the ViT's patch tokens, or the scene
                            parser's (models/scene_parser.py): only the cells that hold an
                            object, the others masked: their ViT tokens (region features),
                            or what the parser read there (attribute probabilities, center)
  image_init=               a configs/shapes_scene_parser.py workdir (same width and depth):
                            start the image encoder from its (only its) params
  freeze_image=false        keep the image encoder as it starts (no backward pass through it)
  precompute=false          with image=object_readings and image_init=PARSER_WORKDIR: read
                            every image once with the frozen parser before training
                            (data/object_features.py; kept under PARSER_WORKDIR/objects/ for
                            the next run) and train on those readings: the same model as
                            freeze_image=true, without running the parser at every step
  init=                     a configs/shapes_vqa.py workdir with tokenizer=shapes_vl and the
                            same fusion, image encoder and sizes: start the image encoder, the
                            text encoder and the fusion module from it (the head is new; with
                            precompute=true, the text encoder and the fusion module)
  tiny=false                a minute-long smoke-test setting

With a scene-parser encoder (pretrained in a few minutes to read every object's shape, color,
size and position):
  python -m multimodal.main --config=configs/shapes_scene_parser.py --workdir=/tmp/scene_parser
  python -m multimodal.main --config=configs/shapes_nlvr.py:image=object_tokens,\
image_init=/tmp/scene_parser,freeze_image=true --workdir=/tmp/nlvr_objects
"""
from multimodal import config_utils


def get_config(arg: str | None = None):
  args = config_utils.parse_arg(arg, data="default", res=64, total_steps=2000, batch_size=128,
                                fusion="cross_attention", query="text", context="image",
                                image="vit", image_init="", freeze_image=False,
                                init="", pair="joint", precompute=False, tiny=False)
  c = config_utils.shapes_base(args, dataset="shapes_nlvr")
  if args.precompute and args.image != "object_readings":
    raise ValueError(f"precompute=true computes object readings once; it needs "
                     f"image=object_readings, not {args.image!r}.")
  pp = config_utils.nlvr_pp(args.res, decode_images=not args.precompute)
  c.pp_train = pp
  c.task = dict(type="classification", num_classes=2, tokenizer=config_utils.NLVR_TOKENIZER,
                label_key="label")

  width = 64 if args.tiny else 128
  depth = 1 if args.tiny else 2
  image = (config_utils.precomputed_readings(c, args.image_init, args.res,
                                             ("left_image", "right_image"))
           if args.precompute else config_utils.shapes_image_encoder(args.image, width, depth))
  c.model = dict(
      type="fusion_nlvr",
      image=image,
      text=dict(type="text_encoder", variant=None, width=width, depth=depth,
                mlp_dim=2 * width, num_heads=4, pool_type="gap"),
      fusion=dict(type=args.fusion, width=width, depth=depth, num_heads=4, mlp_dim=2 * width,
                  **config_utils.fusion_settings(args.fusion, depth, args.query,
                                                 args.context)),
      head=dict(type="classifier", hidden_dim=2 * width, dropout=0.0),
      pair=args.pair, dtype="float32")

  config_utils.shapes_nlvr_training(c, pp, args.tiny)
  if args.precompute:  # the image encoder has no params: the readings come with the data
    if args.init:
      config_utils.start_from(c, args.init, ["text_encoder", "fusion"])
    return c
  if args.image_init and args.init:
    raise ValueError("Give image_init (the image encoder from a scene parser) or init (image "
                     "encoder, text encoder and fusion from a VQA run), not both.")
  frozen = ["image_encoder"] if args.freeze_image else []
  if args.init:
    config_utils.start_from(c, args.init, ["image_encoder", "text_encoder", "fusion"], frozen)
  else:
    config_utils.start_from(c, args.image_init, ["image_encoder"], frozen)
  return c
