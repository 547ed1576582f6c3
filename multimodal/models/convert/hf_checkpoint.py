"""Reading HF transformers checkpoints (safetensors and config.json only, never pickles) and
mapping their arrays onto our params, with errors that name every key that does not fit.

A converter describes the mapping as `Rules`: for each of our params (a "/"-joined path), the
HF key it comes from and how the array changes on the way (PyTorch Linear weights are
[out, in], our kernels [in, out], ...). One HF array may fill several of our params.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import app, flags
from flax import traverse_util
from safetensors.numpy import load_file

Params = dict[str, Any]
Spec = dict[str, Any]
# Our param path ("image_encoder/stem/kernel") -> (HF key, HF array -> our array).
Rules = dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """HF names -> arrays from a .safetensors file or from every one in a folder (shards)."""
  if not os.path.isdir(path):
    return load_file(path)
  files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  if not files:
    raise FileNotFoundError(f"No .safetensors file in {path} (pickled .bin checkpoints are not "
                            "read; convert them with transformers' save_pretrained first).")
  state = {}
  for name in files:
    shard = load_file(os.path.join(path, name))
    repeated = state.keys() & shard.keys()
    if repeated:
      raise ValueError(f"{name} in {path} repeats keys of another shard: {sorted(repeated)[:5]}.")
    state.update(shard)
  return state


def load_config(folder: str) -> dict[str, Any]:
  with open(os.path.join(folder, "config.json")) as f:
    return json.load(f)


def apply_rules(state: dict[str, np.ndarray], rules: Rules, what: str) -> Params:
  """Our nested params (float32 numpy arrays) filled from `state` by `rules`.

  Raises a ValueError listing the HF keys no rule reads and our params whose HF key is absent.
  """
  unexpected = sorted(state.keys() - {hf for hf, _ in rules.values()})
  unfilled = sorted(f"{ours} (from {hf})" for ours, (hf, _) in rules.items() if hf not in state)
  if unexpected or unfilled:
    lines = ([f"unexpected HF key: {k}" for k in unexpected]
             + [f"our param left unfilled: {k}" for k in unfilled])
    raise ValueError(f"The checkpoint does not match the {what} its config describes:\n  "
                     + "\n  ".join(lines))
  return traverse_util.unflatten_dict(
      {ours: np.asarray(transform(state[hf]), np.float32)
       for ours, (hf, transform) in rules.items()}, sep="/")


def sub_config(config: dict[str, Any], key: str, defaults: dict[str, Any]) -> dict[str, Any]:
  """config[key] (e.g. "vision_config") with HF's defaults for what it leaves out."""
  return {**defaults, **(config.get(key) or {})}


def require(condition: bool, message: str) -> None:
  """Raises a ValueError for an HF config setting our models do not reproduce."""
  if not condition:
    raise ValueError(f"Unsupported HF config: {message}.")


# Array layouts: PyTorch Linear weights are float[out, in].
def dense(w: np.ndarray) -> np.ndarray:
  """float[out, in] -> our Dense kernel float[in, out]."""
  return w.T


def heads_in(num_heads: int) -> Callable[[np.ndarray], np.ndarray]:
  """float[H * Dh, D] -> a query/key/value kernel float[D, H, Dh]."""
  return lambda w: w.T.reshape(w.shape[1], num_heads, -1)


def heads_out(num_heads: int) -> Callable[[np.ndarray], np.ndarray]:
  """float[D, H * Dh] -> an output kernel float[H, Dh, D]."""
  return lambda w: w.T.reshape(num_heads, -1, w.shape[0])


def head_bias(num_heads: int) -> Callable[[np.ndarray], np.ndarray]:
  """float[H * Dh] -> float[H, Dh]."""
  return lambda b: b.reshape(num_heads, -1)


def conv(w: np.ndarray) -> np.ndarray:
  """A Conv2d weight float[out, in, kh, kw] -> our kernel float[kh, kw, in, out]."""
  return w.transpose(2, 3, 1, 0)


def same(x: np.ndarray) -> np.ndarray:
  return x


def save(params: Params, spec: Spec, output: str) -> None:
  """Writes params to `output` (.npz, keys are "/"-joined paths) and the spec beside it (.json)."""
  if not output.endswith(".npz"):
    raise ValueError(f"--output should name a .npz file; got {output!r}.")
  np.savez(output, **traverse_util.flatten_dict(params, sep="/"))
  with open(_spec_path(output), "w") as f:
    json.dump(spec, f, indent=2)


def load(output: str) -> tuple[Params, Spec]:
  """What `save` wrote: (our params, our model spec)."""
  with np.load(output) as flat:
    params = traverse_util.unflatten_dict(dict(flat), sep="/")
  with open(_spec_path(output)) as f:
    return params, json.load(f)


def _spec_path(output: str) -> str:
  return os.path.splitext(output)[0] + ".json"


def main(convert_folder: Callable[[str], tuple[Params, Spec]]) -> None:
  """The command line of a converter module: --hf_dir=FOLDER --output=PARAMS.npz."""
  hf_dir = flags.DEFINE_string("hf_dir", None, "A downloaded HF checkpoint folder.",
                               required=True)
  output = flags.DEFINE_string("output", None, "Where to write our params (.npz); the model "
                               "spec goes beside it (.json).", required=True)
  app.run(lambda argv: save(*convert_folder(hf_dir.value), output.value))
