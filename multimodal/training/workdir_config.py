"""The config a workdir was started with, kept beside its checkpoints.

Resuming a workdir with a different config silently mixes two experiments (or fails deep in a
restore), so the trainer refuses unless asked: `--allow_config_change`.
"""
from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections
from absl import logging
from etils import epath

FILENAME = "config.json"
# Settings that change how a run is watched or stored, not what it computes.
IGNORED = ("log_every_steps", "evals", "checkpoint")


def as_tuples(tree: Any) -> Any:
  """A config read back from JSON with its lists as the tuples it had (module settings must
  be hashable)."""
  if isinstance(tree, dict):
    return {k: as_tuples(v) for k, v in tree.items()}
  return tuple(as_tuples(v) for v in tree) if isinstance(tree, list) else tree


def read(workdir: str) -> dict[str, Any]:
  """The config a workdir was started with (its config.json), lists as tuples."""
  return as_tuples(json.loads((epath.Path(workdir) / FILENAME).read_text()))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"optimizer.learning_rate": 0.001, ...} from nested dicts; other values as JSON sees them."""
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: json.loads(json.dumps(tree, default=str))}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """Lines like "optimizer.learning_rate: 0.001 -> 0.01" for every differing setting."""
  keep = lambda k: not any(k == i or k.startswith(i + ".") for i in IGNORED)
  old, new = flatten(old), flatten(new)
  # A setting that one config lacks and the other leaves off (None, empty) is no difference:
  # settings added to the codebase later must not make older workdirs unresumable.
  off = (None, [], "", {})
  old = {k: v for k, v in old.items() if k in new or v not in off}
  new = {k: v for k, v in new.items() if k in old or v not in off}
  missing = object()
  return [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}"
          for k in sorted(set(old) | set(new))
          if keep(k) and old.get(k, missing) != new.get(k, missing)]


def check_and_record(config: ml_collections.ConfigDict, workdir: str,
                     allow_change: bool = False) -> None:
  """Records the config in a new workdir; in a used one, refuses a different config.

  Raises:
    ValueError: naming every differing setting, unless `allow_change` (then the new config is
      recorded and the differences logged).
  """
  path = epath.Path(workdir) / FILENAME
  new = json.loads(config.to_json_best_effort())
  if path.exists():
    diffs = differences(json.loads(path.read_text()), new)
    if diffs and not allow_change:
      shown = "\n  ".join(diffs)
      raise ValueError(f"The workdir {workdir} was started with a different config:\n  {shown}\n"
                       "Use a new workdir, or pass --allow_config_change to continue it with "
                       "this config.")
    if diffs:
      logging.warning("Continuing %s with a changed config:\n  %s", workdir, "\n  ".join(diffs))
  if jax.process_index() == 0:
    path.write_text(json.dumps(new, indent=2, sort_keys=True))
