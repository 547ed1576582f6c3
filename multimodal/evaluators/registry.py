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

  predict: jitted (params, global batch) -> per-example predictions, replicated on every host.
  """
  builder: tfds.core.DatasetBuilder
  task: Task
  predict: Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]]
  batch_sharding: jax.sharding.Sharding
  workdir: str
