"""The evaluator registry: each entry of `config.evals` names one of these by `type`."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import tensorflow_datasets as tfds

from multimodal.registry import Registry
from multimodal.tasks import Task

EVALUATORS = Registry("evaluator")


@dataclasses.dataclass(frozen=True)
class EvalContext:
  """What every evaluator gets from the trainer.

  predict: jitted (variables, global batch) -> per-example predictions, replicated on every
    host. variables: what the trainer hands each evaluator's `run(variables, step)`, a
    `training.train_state.ModelVariables` (the EMA params when the run keeps them, and the
    model state); bare params also do for a model without state.
  task_fn: method name -> the task's `NAME(model, params, batch, rng)` compiled as
    (variables, global batch, rng) -> its outputs, replicated on every host (text-to-image's
    `generate_images` and `conditioning_losses`; `training/task_methods.py`); None when no
    trainer compiled them.
  """
  builder: tfds.core.DatasetBuilder
  task: Task
  predict: Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]
  batch_sharding: jax.sharding.Sharding
  workdir: str
  task_fn: Callable[[str], Callable[[Any, dict[str, jax.Array], jax.Array], Any]] | None = None
