"""Orbax checkpoints of the train state: save every N steps, keep K, resume from the workdir.

Orbax writes each checkpoint to a temporary folder and renames it when complete, so a run
killed mid-save keeps its previous checkpoint intact.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
  """Saves and restores the sharded train state under `WORKDIR/checkpoints/STEP`."""

  def __init__(self, directory: str, every_steps: int, keep: int):
    # Local paths made absolute (orbax needs that); gs:// and other remote paths kept as given.
    self.directory = str(epath.Path(directory).resolve() if "://" not in directory
                         else epath.Path(directory))
    self.manager = ocp.CheckpointManager(
        self.directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self.every_steps = every_steps

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def due(self, step: int) -> bool:
    """Whether `step` is one of the every-`every_steps` saves."""
    return bool(self.every_steps) and step % self.every_steps == 0

  def save(self, step: int, state: Any) -> None:
    """Starts writing `state` as checkpoint `step` and returns (the write is asynchronous)."""
    self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, state_template: Any, step: int | None = None) -> Any:
    """Restores `step` (default: latest) into the shardings and dtypes of `state_template`."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    metadata = self.manager.item_metadata(step)
    check_matches(metadata, state_template, self.directory, step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
    if not dataclasses.is_dataclass(abstract):
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
    # Fields added to the state later (TrainState.model_state, ema_params) are missing from
    # older checkpoints; check_matches allowed that only where they hold no arrays ({}, None),
    # and they keep the template's value.
    fields = {f.name: getattr(abstract, f.name) for f in dataclasses.fields(abstract)
              if f.name in metadata.tree}
    restored = self.manager.restore(step, args=ocp.args.StandardRestore(fields))
    return dataclasses.replace(state_template, **restored)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def check_matches(metadata: Any, template: Any, directory: str, step: int) -> None:
  """Raises a ValueError naming every array whose presence or shape differs."""
  saved = {leaf.name: tuple(leaf.shape) for leaf in jax.tree.leaves(metadata.tree)}
  wanted = {dotted_name(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]}
  problems = [f"missing from the checkpoint: {k}" for k in sorted(wanted.keys() - saved.keys())]
  problems += [f"not in the model: {k}" for k in sorted(saved.keys() - wanted.keys())]
  problems += [f"shape of {k}: checkpoint {saved[k]}, model {wanted[k]}"
               for k in sorted(wanted.keys() & saved.keys()) if saved[k] != wanted[k]]
  if problems:
    shown = "\n  ".join(problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    raise ValueError(f"The checkpoint {directory}/{step} does not match the model "
                     f"(was the config changed?):\n  {shown}{more}")


def dotted_name(path: tuple[Any, ...]) -> str:
  """A pytree path as orbax names its arrays: "params.head.logits.kernel", "opt_state.1.0.mu..."."""
  parts = []
  for key in path:
    for attr in ("key", "idx", "name"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return ".".join(parts)
