"""The jit-compiled train step: a pure function (state, batch) -> (state, metrics)."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import optax

from multimodal.tasks import Task
from multimodal.training.train_state import TrainState

Batch = dict[str, jax.Array]


def make_train_step(model: nn.Module, task: Task, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, rng: jax.Array, state_shardings: Any,
                    batch_sharding: jax.sharding.Sharding,
                    metrics_sharding: jax.sharding.Sharding
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """Returns the compiled step; the state is donated, so its buffers are reused in place.

  Dropout keys derive from `rng` and the step, so a resumed run draws the same masks.
  """

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    dropout_rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
      outputs = model.apply({"params": params}, batch, train=True,
                            rngs={"dropout": dropout_rng})
      return task.loss(outputs, batch)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state.step)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return jax.jit(step, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, metrics_sharding), donate_argnums=0)


def make_predict(model: nn.Module, task: Task, params_shardings: Any,
                 batch_sharding: jax.sharding.Sharding, out_sharding: jax.sharding.Sharding
                 ) -> Callable[[Any, Batch], dict[str, jax.Array]]:
  """Compiled (params, batch) -> the task's per-example predictions."""

  def predict(params: Any, batch: Batch) -> dict[str, jax.Array]:
    return task.predict(model.apply({"params": params}, batch, train=False), batch)

  return jax.jit(predict, in_shardings=(params_shardings, batch_sharding),
                 out_shardings=out_sharding)
