"""torchscale BEiT-3 (`torchscale.model.BEiT3.BEiT3`, the encoder of microsoft/unilm's beit3
checkpoints) -> our `beit3.Beit3Encoder` params (variant "release").

torchscale's multiway experts `A` (image) and `B` (text) become our `_image` and `_text`
params; its Linear weights [out, in] our kernels [in, out] (split into heads for the attention);
its Conv2d patch embedding our NHWC convolution. A checkpoint holds no config: the sizes come
from the arrays' shapes except the number of heads (`config_from_state`).

Only safetensors files or `torch.load(..., weights_only=True)` are read, never arbitrary
pickles. unilm's beit3 checkpoints nest the state dict under "model"; its models (a
BEiT3Wrapper) keep the encoder under "beit3.": `load_state_dict(path, prefix="beit3.")` takes
those keys and leaves the task heads' out.

Command line:
  python -m multimodal.models.convert.beit3 --checkpoint=FILE --num_heads=12 \
      [--prefix=beit3.] --output=PARAMS.npz
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import app, flags

from multimodal.models.beit3 import IMAGE, POSITION_OFFSET, TEXT, Beit3Config
from multimodal.models.convert import hf_checkpoint as hf
from multimodal.models.convert.hf_checkpoint import Params, Rules
# The generic weight/bias rules (Linear -> Dense, LayerNorm -> LayerNorm).
from multimodal.models.convert.siglip import layer_norm, linear
from multimodal.models.transformer import scanned_layout

EXPERTS = {IMAGE: "A", TEXT: "B"}  # our modality -> torchscale's MultiwayNetwork expert
WHAT = "torchscale BEiT-3 encoder"
TORCH_CHECKPOINT = re.compile(r"\.(pt|pth|bin|ckpt)$")  # else safetensors (a file or folder)


def load_state_dict(path: str, prefix: str = "") -> dict[str, np.ndarray]:
  """torchscale names -> float32 arrays, from a .safetensors file (or a folder of them) or a
  torch checkpoint read with weights_only=True (the state dict itself or nested under "model"
  or "module", as unilm saves it). With `prefix`, only the keys that start with it, stripped."""
  if TORCH_CHECKPOINT.search(path):
    import torch  # Only for torch checkpoints; converting safetensors needs no torch.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "module"):
      if isinstance(checkpoint.get(key), dict):
        checkpoint = checkpoint[key]
        break
    state = {k: v.float().numpy() for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
  else:
    state = hf.load_state_dict(path)
  if prefix:
    chosen = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not chosen:
      raise ValueError(f"No key of {path} starts with {prefix!r}; some keys: "
                       f"{sorted(state)[:5]}.")
    state = chosen
  return {k: np.asarray(v, np.float32) for k, v in state.items()}


def config_from_state(state: dict[str, np.ndarray], num_heads: int,
                      **settings: Any) -> Beit3Config:
  """The release-variant config whose params have the arrays' shapes; `settings` (e.g.
  layer_norm_eps, stacking) go to the config as they are."""
  def shape(key: str) -> tuple[int, ...]:
    if key not in state:
      raise ValueError(f"The {WHAT} checkpoint has no {key}, which gives the model's sizes.")
    return state[key].shape

  vocab_size, width = shape("text_embed.weight")
  patch_size = shape("vision_embed.proj.weight")[-1]
  image_positions = shape("encoder.embed_positions.A.weight")[0]
  extra = 1 + POSITION_OFFSET  # the CLS token's row and the rows before the first position
  grid = int(round((image_positions - extra) ** 0.5))
  if grid * grid + extra != image_positions:
    raise ValueError(f"encoder.embed_positions.A.weight has {image_positions} rows; a square "
                     f"grid of n * n patches needs n * n + {extra}.")
  layers = {int(m.group(1)) for m in map(re.compile(r"encoder\.layers\.(\d+)\.").match, state)
            if m}
  settings.setdefault("normalize_output", "encoder.layer_norm.A.weight" in state)
  return Beit3Config(width=width, depth=len(layers), num_heads=num_heads,
                     mlp_dim=shape("encoder.layers.0.ffn.A.fc1.weight")[0],
                     patch_size=patch_size, image_size=grid * patch_size, vocab_size=vocab_size,
                     max_text_positions=shape("encoder.embed_positions.B.weight")[0],
                     **settings)


def multiway(rules_of: Callable[[str, str], Rules], theirs: str, ours: str) -> Rules:
  """Rules for torchscale's MultiwayNetwork `theirs` (`theirs.A`, `theirs.B`) -> our
  per-modality `{ours}_{m}`."""
  return {k: v for m, expert in EXPERTS.items()
          for k, v in rules_of(f"{theirs}.{expert}", f"{ours}_{m}").items()}


def attention(theirs: str, ours: str, num_heads: int) -> Rules:
  """torchscale's MultiheadAttention (multiway q/k/v/out_proj, inner_attn_ln) -> our
  Beit3Attention."""
  def projection(kind: str, ours_kind: str, weight, bias) -> Rules:
    return multiway(lambda t, o: {f"{o}/kernel": (f"{t}.weight", weight),
                                  f"{o}/bias": (f"{t}.bias", bias)},
                    f"{theirs}.{kind}", f"{ours}/{ours_kind}")

  rules = multiway(layer_norm, f"{theirs}.inner_attn_ln", f"{ours}/inner_ln")
  for kind, ours_kind in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
    rules.update(projection(kind, ours_kind, hf.heads_in(num_heads), hf.head_bias(num_heads)))
  rules.update(projection("out_proj", "out", hf.heads_out(num_heads), hf.same))
  return rules


def ffn(theirs: str, ours: str) -> Rules:
  """torchscale's FeedForwardNetwork with subln -> our Beit3Mlp."""
  return {**linear(f"{theirs}.fc1", f"{ours}/fc1"), **linear(f"{theirs}.fc2", f"{ours}/fc2"),
          **layer_norm(f"{theirs}.ffn_layernorm", f"{ours}/ln")}


def rules(config: Beit3Config) -> Rules:
  """Our param path -> (torchscale key, array transform) for every param of the encoder."""
  out = {"image_embed/patch/kernel": ("vision_embed.proj.weight", hf.conv),
         "image_embed/patch/bias": ("vision_embed.proj.bias", hf.same),
         "image_embed/cls": ("vision_embed.cls_token", hf.same),
         "image_embed/mask_token": ("vision_embed.mask_token", hf.same),
         "image_embed/posemb": ("encoder.embed_positions.A.weight", hf.same),
         "text_embed/embedding/embedding": ("text_embed.weight", hf.same),
         "text_embed/posemb": ("encoder.embed_positions.B.weight", hf.same)}
  if config.normalize_output:
    out.update(multiway(layer_norm, "encoder.layer_norm", "ln_final"))
  for i in range(config.depth):
    theirs, block = f"encoder.layers.{i}", f"block{i}"
    out.update(multiway(layer_norm, f"{theirs}.self_attn_layer_norm", f"{block}/ln_self"))
    out.update(attention(f"{theirs}.self_attn", f"{block}/self_attention", config.num_heads))
    out.update(multiway(layer_norm, f"{theirs}.final_layer_norm", f"{block}/ln_mlp"))
    out.update(multiway(ffn, f"{theirs}.ffn", f"{block}/mlp"))
  return out


def convert(state: dict[str, np.ndarray], config: Beit3Config) -> Params:
  """torchscale BEiT3 weights (names -> arrays) -> our Beit3Encoder params for `config`.
  Raises a ValueError naming every unexpected or missing key."""
  hf.require(config.variant == "release",
             f"variant {config.variant!r} (torchscale's BEiT3 is the 'release' variant)")
  params = hf.apply_rules(state, rules(config), WHAT)
  return scanned_layout(params) if config.stacking.scan_layers else params


def main() -> None:
  """The command line: --checkpoint=FILE --num_heads=N [--prefix=P] --output=PARAMS.npz."""
  checkpoint = flags.DEFINE_string("checkpoint", None, "A torchscale BEiT-3 checkpoint "
                                   "(.safetensors, or .pth read with weights_only).",
                                   required=True)
  num_heads = flags.DEFINE_integer("num_heads", None, "Attention heads (12 for base, 16 for "
                                   "large); the checkpoint does not say.", required=True)
  prefix = flags.DEFINE_string("prefix", "", "Only keys that start with this, stripped (e.g. "
                               "'beit3.' for unilm's fine-tuned checkpoints).")
  output = flags.DEFINE_string("output", None, "Where to write our params (.npz); the config "
                               "goes beside it (.json).", required=True)

  def run(argv: list[str]) -> None:
    del argv
    state = load_state_dict(checkpoint.value, prefix.value)
    config = config_from_state(state, num_heads.value)
    hf.save(convert(state, config), dataclasses.asdict(config), output.value)

  app.run(run)


if __name__ == "__main__":
  main()
