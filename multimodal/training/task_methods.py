"""Task methods beyond `predict`, compiled for evaluators: text-to-image's `generate_images`
and `conditioning_losses` take (model, params, batch, rng) and need more than one forward
pass; the trainer hands them to evaluators as `EvalContext.task_fn`."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

from multimodal.tasks import Task
from multimodal.training.train_state import ModelVariables

Batch = dict[str, jax.Array]


def make_task_fn(model: nn.Module, task: Task, variables_shardings: ModelVariables,
                 batch_sharding: jax.sharding.Sharding, out_sharding: jax.sharding.Sharding
                 ) -> Callable[[str], Callable[[ModelVariables, Batch, jax.Array], Any]]:
  """name -> compiled (variables, global batch, rng) -> `task.NAME(model, params, batch,
  rng)`, its outputs replicated on every host (compiled once per name).

  variables: a `ModelVariables` (`TrainState.eval_variables()`); a model with state also
  gets `model_state=` (its collections), as `make_predict` gives `task.generate`.
  """
  compiled: dict[str, Callable[..., Any]] = {}

  def task_fn(name: str) -> Callable[[ModelVariables, Batch, jax.Array], Any]:
    if name not in compiled:
      method = getattr(task, name)

      def call(variables: ModelVariables, batch: Batch, rng: jax.Array) -> Any:
        state = {"model_state": variables.model_state} if variables.model_state else {}
        return method(model, variables.params, batch, rng, **state)

      compiled[name] = jax.jit(call, in_shardings=(variables_shardings, batch_sharding,
                                                   out_sharding), out_shardings=out_sharding)
    return compiled[name]

  return task_fn
