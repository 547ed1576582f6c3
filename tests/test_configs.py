"""Every shipped config loads, and builds and runs its model (shrunk to a tiny size)."""
import glob
import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import pytest

from multimodal import config_utils, models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
TINY_SIZES = dict(variant=None, width=32, depth=1, mlp_dim=64, num_heads=4)


def tiny_autoencoder(spec):
  """An image autoencoder's spec at the tiny geometry MODEL_IO's shapes assume: 32 px images
  to 8 x 8 cells (its patch_size, if it has one, then 2x levels) of 512 codes, 16 wide."""
  levels = (32 // 8 // spec.get("patch_size", 1)).bit_length()
  return {**spec, "image_size": 32, "channels": 16, "blocks_per_level": 1, "norm_groups": 8,
          "channel_multipliers": (1,) + (2,) * (levels - 1), "codebook_size": 512}


def load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def shrink(spec):
  """The same model spec at a tiny size (encoders, fusion, head keep their types)."""
  spec = dict(spec)
  for key in ("image", "text"):
    if key in spec:
      spec[key] = {**spec[key], **{k: v for k, v in TINY_SIZES.items()}}
  if "encoders" in spec:  # fusion_classifier: one encoder per modality
    spec["encoders"] = {m: {**e, **TINY_SIZES} for m, e in spec["encoders"].items()}
  if "fusion" in spec:
    spec["fusion"] = {**spec["fusion"], "width": 32, "depth": 1, "num_heads": 4, "mlp_dim": 64}
    if "fusion_layer" in spec["fusion"]:
      spec["fusion"]["fusion_layer"] = min(spec["fusion"]["fusion_layer"], 1)
  if "head" in spec:
    spec["head"] = {**spec["head"], "hidden_dim": 32}
  if "encoder" in spec:  # BEiT-3: 8 px patches of 32 px images
    spec["encoder"] = {**spec["encoder"], "width": 32, "depth": 1, "num_heads": 4,
                       "mlp_dim": 64, "patch_size": 8, "image_size": 32}
  if "decoder" in spec:
    spec["decoder"] = {**spec["decoder"], "width": 32, "depth": 1, "num_heads": 4,
                       "head_dim": 8, "mlp_dim": 64}
    if "num_kv_heads" in spec["decoder"]:  # multi-query stays so, multi-head too (4 of 4)
      spec["decoder"]["num_kv_heads"] = math.gcd(4, spec["decoder"]["num_kv_heads"])
  if spec.get("type") == "image_autoencoder":
    spec = tiny_autoencoder(spec)
  if spec.get("autoencoder"):  # text to image over a (frozen) image autoencoder
    spec["autoencoder"] = tiny_autoencoder(spec["autoencoder"])
    if "image_size" in spec:
      spec["image_size"] = 32
  if "channel_multipliers" in (spec.get("network") or {}):  # a diffusion UNet: two levels
    spec["network"] = {**spec["network"], "channels": 16, "channel_multipliers": (1, 2),
                       "blocks_per_level": 1, "attention_levels": (1,), "num_heads": 4,
                       "norm_groups": 8}
  return spec


# What each model type takes (for a batch of 2) and gives, at vocab_size 50 and 11 answers.
CLASSIFIER_BATCH = dict(image=jnp.zeros((2, 32, 32, 3)),
                        question_tokens=jnp.ones((2, 8), jnp.int32),
                        question_mask=jnp.ones((2, 8), bool))
NLVR_BATCH = dict(left_image=jnp.zeros((2, 32, 32, 3)), right_image=jnp.zeros((2, 32, 32, 3)),
                  text_tokens=jnp.ones((2, 8), jnp.int32), text_mask=jnp.ones((2, 8), bool))
MODEL_IO = {
    "fusion_vqa": (CLASSIFIER_BATCH, (2, 11)),
    "text_only_vqa": (CLASSIFIER_BATCH, (2, 11)),
    "paligemma": (dict(image=jnp.zeros((2, 32, 32, 3)), text_tokens=jnp.ones((2, 8), jnp.int32),
                       text_mask=jnp.ones((2, 8), bool), prefix_mask=jnp.ones((2, 8), bool)),
                  (2, 8, 50)),
    "pali": (dict(image=jnp.zeros((2, 32, 32, 3)), text_tokens=jnp.ones((2, 8), jnp.int32),
                  text_mask=jnp.ones((2, 8), bool),
                  prefix_mask=jnp.broadcast_to(jnp.arange(8) < 3, (2, 8))),
             (2, 8, 50)),
    "two_towers": (dict(image=jnp.zeros((2, 32, 32, 3)), text_tokens=jnp.ones((2, 8), jnp.int32),
                        text_mask=jnp.ones((2, 8), bool)),
                   {"image": (2, 32), "text": (2, 32), "temperature": (), "bias": ()}),
    "fusion_nlvr": (NLVR_BATCH, (2, 2)),
    # shapes_av: 98 x 64 log-mel frames and 16 frames of 32 px; 8 events.
    "fusion_classifier": (dict(audio=jnp.zeros((2, 98, 64)), video=jnp.zeros((2, 16, 32, 32, 3))),
                          (2, 8)),
    "sync_offset": (dict(audio=jnp.zeros((2, 98, 64)), video=jnp.zeros((2, 16, 32, 32, 3))),
                    (2, 31)),  # 31 offset bins of 20 ms
    "paired_embeddings": (dict(audio=jnp.zeros((2, 98, 64)),
                               video=jnp.zeros((2, 16, 32, 32, 3))),
                          {"audio": (2, 32), "video": (2, 32), "temperature": (), "bias": ()}),
    "beit3_nlvr": (NLVR_BATCH, (2, 2)),
    "beit3_mdm": (dict(image=jnp.zeros((2, 32, 32, 3)), text_tokens=jnp.ones((2, 8), jnp.int32),
                       text_mask=jnp.ones((2, 8), bool)),
                  {"text_logits": (2, 8, 50), "text_targets": (2, 8), "text_weights": (2, 8),
                   "image_predictions": (2, 16, 192), "image_targets": (2, 16, 192),
                   "image_weights": (2, 16)}),
    "scene_parser": (dict(image=jnp.zeros((2, 32, 32, 3))),
                     {"object": (2, 16), "offset": (2, 16, 2), "shape": (2, 16, 3),
                      "color": (2, 16, 6), "size": (2, 16, 2)}),
    "image_autoencoder": (dict(image=jnp.zeros((2, 32, 32, 3))),
                          {"reconstruction": (2, 32, 32, 3), "codes": (2, 64),
                           "code_counts": (2, 512), "losses": {"commitment": ()},
                           "stats": {"restarted_codes": ()}}),
    # 32 px through the 4x-downsampling tokenizer: 64 codes of 512.
    **{name: (dict(image=jnp.zeros((2, 32, 32, 3)), text_tokens=jnp.ones((2, 8), jnp.int32),
                   text_mask=jnp.ones((2, 8), bool)),
              {"logits": (2, 64, 512), "targets": (2, 64), "weights": (2, 64)})
       for name in ("dalle", "maskgit")},
    # Diffusion: the noised input's prediction, its target and the timesteps drawn.
    **{name: (dict(image=jnp.zeros((2, 32, 32, 3)), text_tokens=jnp.ones((2, 8), jnp.int32),
                   text_mask=jnp.ones((2, 8), bool)),
              {"prediction": (2, 32, 32, 3), "target": (2, 32, 32, 3), "t": (2,)})
       for name in ("diffusion_unet", "dit")},
}
# The sizes each model type takes from its task, at vocab_size 50 and 11 answers.
MODEL_KWARGS = {"paligemma": dict(vocab_size=50), "pali": dict(vocab_size=50),
                "two_towers": dict(vocab_size=50),
                "fusion_nlvr": dict(num_classes=2, vocab_size=50),
                "fusion_classifier": dict(num_classes=8), "sync_offset": dict(num_classes=31),
                "paired_embeddings": dict(),
                "beit3_nlvr": dict(num_classes=2, vocab_size=50),
                "beit3_mdm": dict(vocab_size=50, mask_id=4),
                "scene_parser": dict(attributes=dict(shape=3, color=6, size=2)),
                "image_autoencoder": dict(), "dalle": dict(vocab_size=50),
                "maskgit": dict(vocab_size=50), "diffusion_unet": dict(vocab_size=50),
                "dit": dict(vocab_size=50)}


def test_there_are_configs():
  assert any(p.endswith("shapes_vqa.py") for p in CONFIGS)


@pytest.mark.parametrize("path,arg", [(p, None) for p in CONFIGS] + [
    (os.path.join(REPO, "configs", "shapes_vqa_generative.py"), "model=pali"),
    (os.path.join(REPO, "configs", "shapes_t2i_dalle.py"), "model=maskgit"),
    (os.path.join(REPO, "configs", "shapes_t2i_diffusion.py"), "model=dit"),
    (os.path.join(REPO, "configs", "shapes_av.py"), "task=offset"),
    (os.path.join(REPO, "configs", "shapes_av.py"), "task=contrastive"),
    (os.path.join(REPO, "configs", "shapes_av.py"), "co_learning=dcca,modality_dropout=0.3")],
    ids=lambda v: os.path.basename(v) if isinstance(v, str) and v.endswith(".py") else str(v))
def test_config_loads_and_builds_its_model(path, arg):
  config = load(path).get_config(arg)
  batch, output_shape = MODEL_IO[config.model.type]
  kwargs = MODEL_KWARGS.get(config.model.type, dict(num_answers=11, vocab_size=50))
  spec = shrink(config.model.to_dict())
  if "embed_dim" in spec:
    spec["embed_dim"] = 32
  model = models.MODELS.build(spec, **kwargs)
  outputs, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), batch,
                                                             train=False))
  assert jax.tree.map(lambda x: x.shape, outputs) == output_shape
  for name, spec in config.evals.items():
    assert "type" in spec and "split" in spec, name


@pytest.mark.parametrize("arg", ["text_only=true", "fusion=early", "tiny=true,res=32",
                                 "image=object_readings,freeze_image=true"])
def test_shapes_vqa_arguments(arg):
  config = load(os.path.join(REPO, "configs", "shapes_vqa.py")).get_config(arg)
  model = models.MODELS.build(config.model.to_dict(), num_answers=19, vocab_size=160)
  res = 32 if "res=32" in arg else 64
  batch = dict(image=jnp.zeros((2, res, res, 3)), question_tokens=jnp.ones((2, 16), jnp.int32),
               question_mask=jnp.ones((2, 16), bool))
  logits, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), batch,
                                                            train=False))
  assert logits.shape == (2, 19)


@pytest.mark.parametrize("arg, patch", [("task=offset", 16), ("task=event", 8),
                                        ("task=offset,video_patch=8", 8),
                                        ("task=event,video_patch=16", 16)])
def test_shapes_av_video_patch_defaults_by_task(arg, patch):
  config = load(os.path.join(REPO, "configs", "shapes_av.py")).get_config(arg)
  assert config.model.encoders.video.patch_size == patch


def test_config_arguments_are_typed_and_typos_name_the_nearest_key():
  args = config_utils.parse_arg("res=32,text_only=true,name=x", res=64, text_only=False,
                                name="")
  assert (args.res, args.text_only, args.name) == (32, True, "x")
  with pytest.raises(KeyError, match='Did you mean "res"'):
    config_utils.parse_arg("rez=32", res=64)
  with pytest.raises(ValueError, match="key=value"):
    config_utils.parse_arg("res", res=64)
  with pytest.raises(ValueError, match="true or false"):
    config_utils.parse_arg("text_only=maybe", text_only=False)


def test_locked_config_names_the_nearest_key():
  config = load(os.path.join(REPO, "configs", "shapes_vqa.py")).get_config()
  config.lock()
  with pytest.raises(AttributeError, match='Did you mean "total_steps"'):
    config.total_stpes = 3


FUSION_MODULES = ("early", "late", "hybrid", "weighted_sum", "concat_mlp", "gated",
                  "cross_attention", "co_attention", "bottleneck", "multiway")


@pytest.mark.parametrize("config_name", ["shapes_vqa.py", "jsonl_vqa.py"])
@pytest.mark.parametrize("fusion", FUSION_MODULES)
def test_every_fusion_module_is_a_config_switch(config_name, fusion):
  config = load(os.path.join(REPO, "configs", config_name)).get_config(
      f"fusion={fusion},eval_missing=true,modality_dropout=0.25")
  assert config.model.fusion.type == fusion and config.model.modality_dropout == 0.25
  assert tuple(config.evals.missing.missing_modalities) == ("image", "text")
  model = models.MODELS.build(shrink(config.model.to_dict()), num_answers=7, vocab_size=50)
  batch = dict(image=jnp.zeros((2, 32, 32, 3)), question_tokens=jnp.ones((2, 8), jnp.int32),
               question_mask=jnp.ones((2, 8), bool))
  logits, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), batch,
                                                            train=False))
  assert logits.shape == (2, 7)


def test_fusion_settings_are_listed_for_overrides():
  config = load(os.path.join(REPO, "configs", "shapes_vqa.py")).get_config("fusion=bottleneck")
  assert config.model.fusion.fusion_layer == 1 and config.model.fusion.n_bottlenecks == 4
  config = load(os.path.join(REPO, "configs", "shapes_vqa.py")).get_config("fusion=late")
  assert config.model.fusion.combine == "mean"


def test_shapes_vqa_generative_over_object_readings():
  config = load(os.path.join(REPO, "configs", "shapes_vqa_generative.py")).get_config(
      "image=object_readings,image_init=/runs/parser,freeze_image=true")
  assert config.model.image.type == "object_tokens" and config.model.image.max_tokens == 8
  assert config.model.decoder.depth == 4
  assert tuple(config.init.load) == ("image_encoder",) and config.init.params == "/runs/parser"
  assert tuple(config.optimizer.frozen) == ("image_encoder",)
  model = models.MODELS.build(config.model.to_dict(), vocab_size=160)
  batch = dict(image=jnp.zeros((2, 64, 64, 3)), text_tokens=jnp.ones((2, 20), jnp.int32),
               text_mask=jnp.ones((2, 20), bool), prefix_mask=jnp.ones((2, 20), bool))
  logits, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), batch,
                                                            train=False))
  assert logits.shape == (2, 20, 160)
