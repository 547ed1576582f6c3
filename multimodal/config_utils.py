"""Helpers for config files: typed `:key=value` arguments and the trainer's base settings."""
from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from typing import Any, Sequence

import ml_collections
from ml_collections import config_dict

from multimodal.training import sharding, workdir_config


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses "key=value,key2=value2" (the part after ':' in --config=configs/x.py:ARG).

  Each value takes the type of its default; unknown keys name the nearest valid one.
  """
  args = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    if "=" not in item:
      raise ValueError(f"Config argument {item!r} is not of the form key=value.")
    key, value = (s.strip() for s in item.split("=", 1))
    if key not in defaults:
      close = difflib.get_close_matches(key, defaults, n=1, cutoff=0.5)
      hint = f' Did you mean "{close[0]}"?' if close else ""
      raise KeyError(f"Unknown config argument {key!r}.{hint} Valid: {sorted(defaults)}.")
    default = defaults[key]
    if isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"Config argument {key} must be true or false, got {value!r}.")
      parsed: Any = value.lower() in ("true", "1")
    elif isinstance(default, (int, float)):
      parsed = type(default)(ast.literal_eval(value))
    else:
      parsed = value
    setattr(args, key, parsed)
  return args


def base_config() -> ml_collections.ConfigDict:
  """Every setting the trainer reads, with defaults; experiment configs fill in the rest."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 64
  c.log_every_steps = 50
  c.grad_accum_steps = 1     # micro-batches per step: the same update, 1/N of the activations
  c.on_nonfinite = "stop"    # a NaN/Inf loss or gradient: "stop" the run, or "skip" the step
  # Keep an exponential moving average of the params, ema = d * ema + (1 - d) * params each
  # step, which the evaluators then use (None or 0: none). None rather than 0.0 so that
  # workdirs started before this setting existed still resume (workdir_config).
  c.ema_decay = config_dict.placeholder(float)
  c.data = dict(name="", config="", split="train", shuffle_buffer=10_000,
                data_dir=config_dict.placeholder(str),     # TFDS data dir (default ~/tensorflow_datasets)
                manual_dir=config_dict.placeholder(str),   # a user's files, for real datasets
                # Shards of the training stream (default: one per process); fixing it makes
                # the global batches the same on any number of hosts.
                num_shards=config_dict.placeholder(int),
                # Train only on examples whose features take these values, e.g.
                # {"question_type": ("relation",)}; empty: all of them.
                where={})
  c.pp_train = ""
  c.task = dict()
  c.model = dict()
  c.optimizer = dict(learning_rate=1e-3, warmup_steps=100, end_lr_fraction=0.01,
                     weight_decay=1e-4, b1=0.9, b2=0.999, grad_clip_norm=1.0,
                     # Layer-wise learning-rate decay (BEiT's fine-tuning): None for none.
                     layer_decay=config_dict.placeholder(float),
                     # Path prefixes of params kept as they are (e.g. a pretrained encoder).
                     frozen=())
  c.evals = dict()
  c.mesh = dict(data=-1, fsdp=1, model=1)
  c.partition_rules = sharding.DEFAULT_RULES
  c.checkpoint = dict(every_steps=500, keep=3)
  # Pretrained params to start from (a .npz a converter wrote, or another run's workdir), the
  # path prefixes that keep their random initialisation, and (if not empty) the only prefixes
  # to load (training/init_params.py).
  c.init = dict(params=config_dict.placeholder(str), skip=(), load=())
  return c


def fusion_settings(fusion: str, depth: int, query: str = "text", context: str = "image"
                    ) -> dict[str, Any]:
  """A fusion module's own settings with their defaults, listed in the config so that
  `--config.model.fusion.KEY=VALUE` reaches them (a locked config refuses new keys)."""
  fusion_layer = depth // 2  # modality-specific blocks before the modalities meet
  return {
      "cross_attention": dict(query=query, context=context, null_context=False),
      "relation_network": dict(query=query, context=context, conditioning="concat"),
      "late": dict(combine="mean"),
      "gated": dict(granularity="feature", balance_loss_weight=0.0),
      "hybrid": dict(fusion_layer=fusion_layer, combine="mean",
                     groups=config_dict.placeholder(tuple)),
      "bottleneck": dict(fusion_layer=fusion_layer, n_bottlenecks=4),
      "multiway": dict(shared_attention=False, vl_layers=0),
  }.get(fusion, {})


def choices(values: list[str], allowed: tuple[str, ...], arg: str) -> tuple[str, ...]:
  """The values of a config argument, each checked against `allowed`."""
  unknown = [v for v in values if v not in allowed]
  if unknown:
    raise ValueError(f"{arg}: unknown {unknown}; expected some of {list(allowed)}.")
  return tuple(values)


def missing_modalities_eval(pp: str, batch_size: int, split: str = "validation",
                            where: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
  """A VQA evaluator that also scores each modality removed (image, text); it runs at the
  end only (every_steps=0): it makes three passes over the split."""
  return dict(type="vqa", split=split, pp=pp, batch_size=batch_size, every_steps=0,
              write_predictions=False, missing_modalities=("image", "text"),
              max_examples=config_dict.placeholder(int), where=where or {})


def shapes_base(args: ml_collections.ConfigDict, dataset: str = "shapes_vqa"
                ) -> ml_collections.ConfigDict:
  """`base_config` on a built-in Shapes dataset, from a Shapes config's arguments (data,
  total_steps, batch_size, tiny); tiny=true sets the tiny data, 20 steps and batch 16 (and
  writes them back into `args`)."""
  if args.tiny:
    args.data, args.total_steps, args.batch_size = "tiny", 20, 16
  c = base_config()
  c.total_steps = args.total_steps
  c.batch_size = args.batch_size
  c.log_every_steps = 5 if args.tiny else 50
  c.data.name = dataset
  c.data.config = args.data
  return c


def coco_base(args: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`base_config` for a real-scale config on `coco_karpathy` (from its manual_dir), from its
  arguments total_steps and batch_size; params and optimizer state split over every device
  (fsdp)."""
  c = base_config()
  c.total_steps, c.batch_size = args.total_steps, args.batch_size
  c.data.name = "coco_karpathy"
  c.data.shuffle_buffer = 50_000
  c.mesh = dict(data=1, fsdp=-1, model=1)
  return c


def shapes_vit(width: int, depth: int, **overrides: Any) -> dict[str, Any]:
  """The image encoder of the Shapes configs.

  A convolutional stem lets each 8x8-pixel token see whole shapes (9-15 px). Fixed 2-D
  sin-cos positions give relation questions coordinates from step 0; the stem skips
  LayerNorm, which costs ~13% of the step on a CPU and learned shapes no faster in a probe.
  """
  return {**dict(type="vit", variant=None, width=width, depth=depth, mlp_dim=2 * width,
                 num_heads=4, patch_size=8, stem="conv", stem_channels=(16, 32),
                 stem_norm=False, posemb="sincos2d", pool_type="none"), **overrides}


def shapes_decoder(width: int, depth: int, num_kv_heads: int = 1) -> dict[str, Any]:
  """The Gemma-style text decoder of the Shapes image-to-text configs (4 heads)."""
  return dict(width=width, depth=depth, num_heads=4, num_kv_heads=num_kv_heads,
              head_dim=width // 4, mlp_dim=2 * width)


# shapes_nlvr: the statements' tokenizer (it also covers Shapes VQA questions and captions, for
# a BEiT-3 pretrained on captions) and the longest statement (at most 14 pieces) with BOS.
NLVR_TOKENIZER = "shapes_vl"
NLVR_MAX_LEN = 16
NLVR_INPUTS = "keep('left_image', 'right_image', 'text_tokens', 'text_mask', 'label')"


SHAPES_MAX_OBJECT_TOKENS = 8  # the object tokens a Shapes scene-parser encoder hands on
# The object probability above which a cell's token is kept, and the distance (a fraction of
# the image side) below which two cells' read centers are one object, read twice (the scenes
# put centers 12 px apart at 64 px; half that). With the second, the first can sit low: on
# validation scenes a 1,500-step parser read every object of 86.6% of them at 0.5 without it,
# 99.0% at 0.2 with it (multimodal/benchmarks/scene_parser_decoding.py).
SHAPES_OBJECT_THRESHOLD = 0.2
SHAPES_MIN_SEPARATION = 6 / 64


def shapes_image_encoder(kind: str, width: int, depth: int, **vit_overrides: Any
                         ) -> dict[str, Any]:
  """"vit" (`shapes_vit`), or the scene parser as an encoder (the same ViT and its per-cell
  heads; only the cells read as holding an object are kept), whose params a
  configs/shapes_scene_parser.py run of the same width and depth provides: "object_tokens"
  (their ViT tokens) or "object_readings" (what the parser read: attribute probabilities and
  the center), at most SHAPES_MAX_OBJECT_TOKENS of them (a Shapes scene holds at most 6
  objects). `vit_overrides` go to the ViT either way."""
  vit = shapes_vit(width, depth, **vit_overrides)
  if kind == "vit":
    return vit
  if kind in ("object_tokens", "object_readings"):
    return dict(type="object_tokens", image=vit, hidden_dim=2 * width,
                threshold=SHAPES_OBJECT_THRESHOLD, min_separation=SHAPES_MIN_SEPARATION,
                tokens="features" if kind == "object_tokens" else "reading",
                max_tokens=SHAPES_MAX_OBJECT_TOKENS)
  raise ValueError(f"Unknown Shapes image encoder {kind!r}; use 'vit', 'object_tokens' or "
                   "'object_readings'.")


def start_from(c: ml_collections.ConfigDict, workdir: str, parts: Sequence[str],
               frozen: Sequence[str] = ()) -> None:
  """Starts the model's `parts` (param prefixes) from another run's latest checkpoint (the
  rest keeps its random initialisation) and keeps `frozen` ones fixed (in place)."""
  if workdir:
    c.init.params = workdir
    c.init.load = tuple(parts)
  c.optimizer.frozen = tuple(frozen)


def image_pp(res: int, key: str = "image") -> str:
  """Decode an image feature, resize it to res x res, values in [-1, 1]."""
  return f"decode(key={key!r})|resize({res}, key={key!r})|value_range(-1, 1, key={key!r})"


def nlvr_pp(res: int, tokenizer: str = NLVR_TOKENIZER, max_len: int = NLVR_MAX_LEN,
            decode_images: bool = True) -> str:
  """The NLVR model inputs: both images (as they are where `decode_images` is false: object
  readings computed before training), the statement's tokens, the label."""
  images = f"{image_pp(res, 'left_image')}|{image_pp(res, 'right_image')}|" if decode_images else ""
  return (f"{images}tok(max_len={max_len}, model={tokenizer!r}, key='statement', "
          f"out_key='text_tokens', mask_key='text_mask')|{NLVR_INPUTS}")


def precomputed_readings(c: ml_collections.ConfigDict, parser: str, res: int,
                         image_keys: Sequence[str]) -> dict[str, Any]:
  """Reads the images as a scene parser's object readings computed once before training
  (`data/object_features.py`) instead of running the frozen parser at every step: sets
  `c.data.objects` (in place) and returns the image encoder that takes them. The result
  equals `shapes_image_encoder("object_readings", ...)` started from `parser` and frozen."""
  if not parser:
    raise ValueError("precompute=true reads a scene parser's readings computed once: give "
                     "image_init=PARSER_WORKDIR (a configs/shapes_scene_parser.py run).")
  c.data.objects = dict(parser=parser, pp="|".join(image_pp(res, key) for key in image_keys),
                        max_tokens=SHAPES_MAX_OBJECT_TOKENS, threshold=SHAPES_OBJECT_THRESHOLD,
                        min_separation=SHAPES_MIN_SEPARATION)
  return dict(type="precomputed")


def nlvr_evals(pp: str, batch_size: int, every_steps: int) -> dict[str, Any]:
  """Accuracy (per template and per label) on validation during training, and at the end on
  the test split (new scenes) and test_heldout (held-out template-and-color combinations)."""
  def evaluator(split: str, every: int) -> dict[str, Any]:
    return dict(type="classification", split=split, pp=pp, batch_size=batch_size,
                every_steps=every, group_by=("template", "label"), text_key="statement",
                max_examples=config_dict.placeholder(int))
  return dict(validation=evaluator("validation", every_steps), test=evaluator("test", 0),
              test_heldout=evaluator("test_heldout", 0))


def shapes_nlvr_training(c: ml_collections.ConfigDict, pp: str, tiny: bool) -> None:
  """The optimiser, evaluations and checkpoints the Shapes NLVR configs share (in place)."""
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 2 if tiny else 200
  c.optimizer.weight_decay = 1e-4
  c.evals = nlvr_evals(pp, batch_size=32 if tiny else 250, every_steps=0 if tiny else 500)
  c.checkpoint = dict(every_steps=10 if tiny else 500, keep=2)


def shapes_beit3(width: int, depth: int, res: int, **overrides: Any) -> dict[str, Any]:
  """The BEiT-3 encoder of the Shapes configs (`beit3.Beit3Config` fields but vocab_size):
  8x8 patches, 4 heads, MLP 2x wide, room for 32 text tokens. Pretraining
  (configs/shapes_mdm_beit3.py) and NLVR fine-tuning share it, so that one's params fit the
  other."""
  return {**dict(width=width, depth=depth, num_heads=4, mlp_dim=2 * width, patch_size=8,
                 image_size=res, max_text_positions=32 + 2, variant="release", vl_layers=0,
                 dropout=0.0, stacking=dict(remat=False, policy="nothing_saveable",
                                            scan_layers=False)),
          **overrides}


CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs")


def image_autoencoder_settings(workdir: str, arg_name: str, quantizers: Sequence[str],
                               res: int, stand_in: str | None,
                               config_file: str = "shapes_image_tokenizer.py") -> dict[str, Any]:
  """The `image_autoencoder` model settings of a run of configs/`config_file` (its workdir's
  config.json), checked to have one of `quantizers` and image_size res. Without a workdir:
  that config's settings for the `stand_in` argument string (for example
  "quantizer=vq,res=32,tiny=true"; a randomly initialised stand-in for smoke tests), or an
  error naming `arg_name` when stand_in is None."""
  run = f"configs/{config_file} run (quantizer={' or '.join(quantizers)})"
  if workdir:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{arg_name}: no {path}; give the workdir of a {run}.")
    spec = workdir_config.read(workdir)["model"]
  elif stand_in is not None:
    path = os.path.join(CONFIGS_DIR, config_file)
    loader = importlib.util.spec_from_file_location(config_file.removesuffix(".py"), path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    spec = module.get_config(stand_in).model.to_dict()
  else:
    raise ValueError(f"{arg_name}= is needed: the workdir of a {run}.")
  if spec.get("type") != "image_autoencoder" or spec.get("quantizer") not in quantizers:
    raise ValueError(f"{arg_name}: the run's model is {spec.get('type')!r} with quantizer "
                     f"{spec.get('quantizer')!r}; this config needs an image_autoencoder with "
                     f"quantizer={' or '.join(quantizers)}.")
  if spec.get("image_size") != res:
    raise ValueError(f"{arg_name}: the autoencoder was trained at image_size "
                     f"{spec.get('image_size')}, this run's res is {res}.")
  return spec


T2I_TOKENIZER = "shapes_vl"  # the text-to-image prompts' sentencepiece model
T2I_MAX_LEN = 24  # BOS and the longest Shapes caption (23 pieces)


def shapes_t2i_pp(res: int, tokenizer: str = T2I_TOKENIZER, max_len: int = T2I_MAX_LEN
                  ) -> str:
  """A shapes_captions image (res x res, in [-1, 1]) and one of its captions, drawn anew each
  time the image is seen, as text_tokens / text_mask (max_len pieces of `tokenizer`; also
  coco_karpathy's, which has the same image and captions features)."""
  return (f"{image_pp(res)}|choice('captions', out_key='caption')|"
          f"tok(max_len={max_len}, model={tokenizer!r}, key='caption', "
          f"out_key='text_tokens', mask_key='text_mask')|"
          "keep('image', 'text_tokens', 'text_mask')")


def shapes_t2i_evals(pp: str, res: int, classifier: str, tiny: bool) -> dict[str, Any]:
  """The text-to-image evaluators: the validation loss with the true, a shuffled and the
  empty caption ("conditioning", every 1000 steps); with classifier (a
  configs/shapes_scene_parser.py workdir) also, at the end, the prompt-match accuracy per
  prompt kind, FID in the classifier's feature space and a sample grid ("text_to_image")."""
  evals = dict(conditioning=dict(
      type="conditioning", split="validation", pp=pp, batch_size=16 if tiny else 250,
      every_steps=0 if tiny else 1000, max_examples=config_dict.placeholder(int)))
  if classifier:
    evals["text_to_image"] = dict(
        type="text_to_image", classifier_workdir=classifier,
        real_pp=f"{image_pp(res)}|keep('image')", real_split="validation",
        max_real=config_dict.placeholder(int), prompts_per_kind=2 if tiny else 20,
        samples_per_prompt=2 if tiny else 4, batch_size=16 if tiny else 64,
        tokenizer=T2I_TOKENIZER, max_len=T2I_MAX_LEN, every_steps=0)
  return evals
