"""Starting a run from pretrained params (e.g. an HF checkpoint converted by
`multimodal.models.convert`) instead of a random initialisation.

`config.init.params` names a .npz of our params ("/"-joined paths, as the converters write)
or another run's workdir (its latest checkpoint's params: e.g. a pretraining run, whose heads
the fine-tuning config lists in `skip`);
`config.init.skip` lists path prefixes that keep their random initialisation (a new head);
`config.init.load`, if not empty, lists the only prefixes to load (e.g. the `image_encoder`
of a scene-parser run): everything else keeps its random initialisation and the file's
other arrays are ignored.
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
  directory = epath.Path(workdir, "checkpoints").resolve()
  manager = ocp.CheckpointManager(directory, item_handlers=ocp.StandardCheckpointHandler(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"config.init.params: {directory} holds no checkpoint.")
  # Without a target the whole saved state comes back as host arrays; only params are kept.
  restored = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  return {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(restored["params"], sep="/").items()}


def _skipped(path: str, skip: Sequence[str]) -> bool:
  return any(path == s or path.startswith(s.rstrip("/") + "/") for s in skip)


def merge(params: Any, pretrained: dict[str, np.ndarray], skip: Sequence[str] = (),
          load: Sequence[str] = ()) -> Any:
  """`params` (a pytree of sharded arrays) with every leaf to load (under a `load` prefix, or
  any when `load` is empty; not under a `skip` prefix) replaced by the pretrained array of the
  same path, placed with the leaf's sharding and dtype."""
  ours = traverse_util.flatten_dict(params, sep="/")
  if load:
    unknown = [prefix for prefix in load if not any(_skipped(k, [prefix]) for k in ours)]
    if unknown:
      raise ValueError(f"config.init.load: the model has no params under {unknown}.")
    pretrained = {k: v for k, v in pretrained.items() if _skipped(k, load)}
    skip = (*skip, *(k for k in ours if not _skipped(k, load)))
  problems = [f"in the file, not a param of the model: {k}" for k in sorted(pretrained)
              if k not in ours and not _skipped(k, skip)]
  for path, leaf in sorted(ours.items()):
    if _skipped(path, skip):
      continue
    if path not in pretrained:
      problems.append(f"a param of the model, not in the file: {path} {tuple(leaf.shape)}")
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
