"""Starting a run from pretrained params (e.g. an HF checkpoint converted by
`multimodal.models.convert`) instead of a random initialisation.

`config.init.params` names a .npz of our params ("/"-joined paths, as the converters write)
or another run's workdir (its latest checkpoint's params: e.g. a pretraining run, whose heads
the fine-tuning config lists in `skip`);
`config.init.skip` lists path prefixes that keep their random initialisation (a new head);
`config.init.load`, if not empty, lists the only prefixes to load (e.g. the `image_encoder`
of a scene-parser run): everything else keeps its random initialisation and the file's
other arrays are ignored. An entry "ours=theirs" loads our prefix `ours` from the file's
`theirs`, and "ours=" from the file's root: e.g. "image_tokenizer=" puts a whole
image-tokenizer run under a text-to-image model's `image_tokenizer`. From a workdir, the
model state under those prefixes (non-param collections, e.g. a VQ codebook) is loaded too
(`merge_model_state`); without `load`, params only.
Every param to load must be in the file with its shape, and (without `load`) every array of
the file must be a param of the model or under a skipped prefix: a mismatch is an error that
names the paths, never a silent partial load.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util


def load_flat(path: str) -> dict[str, np.ndarray]:
  """"/"-joined param path -> array, from a .npz file or a workdir's latest checkpoint."""
  if epath.Path(path, "checkpoints").is_dir():
    return checkpoint_params(path)
  try:
    with np.load(path) as flat:
      return dict(flat)
  except FileNotFoundError:
    raise FileNotFoundError(f"config.init.params: no file {path!r} (a .npz of params, as "
                            "`python -m multimodal.models.convert.* --output=...` writes, or "
                            "a workdir with checkpoints/).") from None


def checkpoint_params(workdir: str) -> dict[str, np.ndarray]:
  """The params of the latest checkpoint under `workdir`/checkpoints, flattened, as numpy
  arrays on the host."""
  return checkpoint_arrays(workdir, "params")


def load_model_state(path: str) -> dict[str, np.ndarray]:
  """"collection/path" -> array: the model state (`TrainState.model_state`) of a workdir's
  latest checkpoint; {} for a .npz (params only) or a run without state."""
  if not epath.Path(path, "checkpoints").is_dir():
    return {}
  return checkpoint_arrays(path, "model_state")


def checkpoint_arrays(workdir: str, field: str) -> dict[str, np.ndarray]:
  """One field of the latest checkpoint's train state ("params", "model_state"), flattened,
  as numpy arrays on the host ({} when the checkpoint has no such field)."""
  directory = epath.Path(workdir, "checkpoints").resolve()
  manager = ocp.CheckpointManager(directory, item_handlers=ocp.StandardCheckpointHandler(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"config.init.params: {directory} holds no checkpoint.")
  # Without a target the whole saved state comes back as host arrays; one field is kept.
  restored = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  return {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(restored.get(field) or {}, sep="/").items()}


def _skipped(path: str, skip: Sequence[str]) -> bool:
  return any(path == s or path.startswith(s.rstrip("/") + "/") for s in skip)


def _load_prefixes(load: Sequence[str]) -> list[tuple[str, str]]:
  """`config.init.load` entries -> (our prefix, the file's prefix; "" for its root)."""
  pairs = [entry.split("=", 1) if "=" in entry else (entry, entry) for entry in load]
  return [(ours.rstrip("/"), theirs.rstrip("/")) for ours, theirs in pairs]


def _renamed(pretrained: dict[str, np.ndarray], pairs: Sequence[tuple[str, str]]
             ) -> dict[str, np.ndarray]:
  """The file's arrays under each pair's prefix, at the paths they take in our model."""
  out = {}
  for ours, theirs in pairs:
    for path, value in pretrained.items():
      if not theirs:
        out[f"{ours}/{path}"] = value
      elif _skipped(path, [theirs]):
        out[ours + path[len(theirs):]] = value
  return out


def merge(params: Any, pretrained: dict[str, np.ndarray], skip: Sequence[str] = (),
          load: Sequence[str] = (), kind: str = "param") -> Any:
  """`params` (a pytree of sharded arrays) with every leaf to load (under a `load` prefix, or
  any when `load` is empty; not under a `skip` prefix) replaced by the pretrained array of the
  same path, placed with the leaf's sharding and dtype."""
  ours = traverse_util.flatten_dict(params, sep="/")
  if load:
    pairs = _load_prefixes(load)
    prefixes = [prefix for prefix, _ in pairs]
    unknown = [prefix for prefix in prefixes if not any(_skipped(k, [prefix]) for k in ours)]
    if unknown:
      raise ValueError(f"config.init.load: the model has no {kind}s under {unknown}.")
    pretrained = _renamed(pretrained, pairs)
    skip = (*skip, *(k for k in ours if not _skipped(k, prefixes)))
  problems = [f"in the file, not a {kind} of the model: {k}" for k in sorted(pretrained)
              if k not in ours and not _skipped(k, skip)]
  for path, leaf in sorted(ours.items()):
    if _skipped(path, skip):
      continue
    if path not in pretrained:
      problems.append(f"a {kind} of the model, not in the file: {path} {tuple(leaf.shape)}")
    elif pretrained[path].shape != leaf.shape:
      problems.append(f"shape of {path}: file {pretrained[path].shape}, model "
                      f"{tuple(leaf.shape)}")
  if problems:
    raise ValueError("config.init.params does not fit the model (list prefixes to keep "
                     "random in config.init.skip):\n  " + "\n  ".join(problems))
  merged = {path: leaf if _skipped(path, skip) else
            jax.device_put(pretrained[path].astype(leaf.dtype), leaf.sharding)
            for path, leaf in ours.items()}
  return traverse_util.unflatten_dict(merged, sep="/")


def merge_model_state(model_state: dict[str, Any], pretrained: dict[str, np.ndarray],
                      skip: Sequence[str] = (), load: Sequence[str] = ()) -> dict[str, Any]:
  """`model_state` ({collection: tree}) with, for each `load` prefix (its path inside the
  collection, mapped as in `merge`), every leaf under it replaced by the file's
  "collection/path" array (`load_model_state`); a missing or misshapen one is an error.
  Collections with nothing under the prefixes, and everything without `load`, are kept."""
  if not load:
    return model_state
  merged = {}
  for collection, tree in model_state.items():
    ours = traverse_util.flatten_dict(tree, sep="/")
    present = [entry for entry, (prefix, _) in zip(load, _load_prefixes(load))
               if any(_skipped(k, [prefix]) for k in ours)]
    if not present:
      merged[collection] = tree
      continue
    head = collection + "/"
    theirs = {k[len(head):]: v for k, v in pretrained.items() if k.startswith(head)}
    try:
      merged[collection] = merge(tree, theirs, skip, present, kind="model state array")
    except ValueError as error:
      raise ValueError(f"Model state collection {collection!r}: {error}") from None
  return merged
