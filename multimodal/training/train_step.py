"""The jit-compiled train step: a pure function (state, batch) -> (state, metrics)."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from multimodal.models import aux_losses
from multimodal.tasks import GenerativeTask, Task
from multimodal.training.optimizer import frozen_labels
from multimodal.training.train_state import ModelVariables, TrainState

Batch = dict[str, jax.Array]


def split_micro_batches(batch: Batch, num: int) -> Batch:
  """[B, ...] -> [num, B / num, ...], micro-batch j holding rows j, j + num, j + 2 num, ...

  Interleaved rather than contiguous so that every device keeps an equal share of each
  micro-batch (a device holds consecutive rows of the batch).
  """
  def split(x: jax.Array) -> jax.Array:
    if x.shape[0] % num:
      raise ValueError(f"A batch of {x.shape[0]} does not split into {num} micro-batches.")
    return jnp.swapaxes(x.reshape((x.shape[0] // num, num) + x.shape[1:]), 0, 1)
  return jax.tree.map(split, batch)


def make_train_step(model: nn.Module, task: Task, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, rng: jax.Array, state_shardings: Any,
                    batch_sharding: jax.sharding.Sharding,
                    metrics_sharding: jax.sharding.Sharding, grad_accum_steps: int = 1,
                    frozen: tuple[str, ...] = (), ema_decay: float = 0.0
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """Returns the compiled step; the state is donated, so its buffers are reused in place.

  grad_accum_steps: the batch is processed as that many micro-batches in a loop (`lax.scan`)
    whose gradients and metrics are averaged: the same update as the whole batch at once
    when the task's loss is a mean over examples, with activations of one micro-batch only.
    The model state passes through the micro-batches in order (each sees the previous one's).
  The loss is the task's plus any auxiliary losses the model adds (`models.aux_losses`);
  then `task_loss` and `aux_loss` are reported beside `loss`.
  The model is applied with train=True and its state collections (`state.model_state`)
  mutable; the updated collections are the new state's.
  A step whose loss or gradients are not finite leaves params, model state, EMA and
  optimizer state unchanged and counts itself in `state.skipped_steps` (the trainer decides
  whether to stop).
  Dropout keys derive from `rng` and the step, so a resumed run draws the same masks.
  frozen: path prefixes of params that are constants of the loss (`lax.stop_gradient`), so
    no backward pass runs through them (e.g. a frozen pretrained encoder); pair it with
    optimizer.frozen, which leaves them unchanged.
  ema_decay: when the state keeps `ema_params`, each step sets
    ema = ema_decay * ema + (1 - ema_decay) * (the updated params).
  """

  def grads_and_metrics(params: Any, model_state: Any, batch: Batch, dropout_rng: jax.Array
                        ) -> tuple[Any, dict[str, jax.Array], Any]:
    """-> (grads, metrics, the model state after this batch)."""
    def loss_fn(params: Any) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
      if frozen:
        params = jax.tree.map(
            lambda x, label: jax.lax.stop_gradient(x) if label == "frozen" else x,
            params, frozen_labels(params, frozen))
      outputs, collections = model.apply({"params": params, **model_state}, batch, train=True,
                                         rngs={"dropout": dropout_rng},
                                         mutable=[aux_losses.COLLECTION, *model_state])
      new_model_state = {k: collections[k] for k in model_state}
      loss, metrics = task.loss(outputs, batch)
      aux = aux_losses.total(collections)
      if aux is None:
        return loss, (metrics, new_model_state)
      return loss + aux, ({**metrics, "task_loss": loss, "aux_loss": aux}, new_model_state)
    (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, {**metrics, "loss": loss}, model_state

  def accumulated(params: Any, model_state: Any, batch: Batch, dropout_rng: jax.Array
                  ) -> tuple[Any, dict[str, jax.Array], Any]:
    if grad_accum_steps == 1:
      return grads_and_metrics(params, model_state, batch, dropout_rng)
    micro = split_micro_batches(batch, grad_accum_steps)
    keys = jax.random.split(dropout_rng, grad_accum_steps)
    shapes = jax.eval_shape(grads_and_metrics, params, model_state,
                            jax.tree.map(lambda x: x[0], micro), keys[0])[:2]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)

    def add(carry: tuple[Any, Any], inputs: tuple[Batch, jax.Array]
            ) -> tuple[tuple[Any, Any], None]:
      total, model_state = carry
      *out, model_state = grads_and_metrics(params, model_state, *inputs)
      total = jax.tree.map(lambda t, o: t + o.astype(jnp.float32), total, tuple(out))
      return (total, model_state), None

    (total, model_state), _ = jax.lax.scan(add, (zeros, model_state), (micro, keys))
    grads, metrics = jax.tree.map(lambda t: t / grad_accum_steps, total)
    return grads, metrics, model_state

  def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    grads, metrics, model_state = accumulated(state.params, state.model_state, batch,
                                              jax.random.fold_in(rng, state.step))
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = None if state.ema_params is None else jax.tree.map(
        lambda e, p: ema_decay * e + (1 - ema_decay) * p, state.ema_params, params)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
    # lax.select, not jnp.where: jnp.where is a jitted function of its own, and its nested
    # call per leaf made a tiny UNet's train step compile in 12.0 s instead of 10.1 s (-O0).
    keep_if_finite = lambda new, old: jax.tree.map(
        lambda n, o: jax.lax.select(jnp.broadcast_to(finite, jnp.shape(n)), n, o), new, old)
    new_state = TrainState(step=state.step + 1,
                           params=keep_if_finite(params, state.params),
                           opt_state=keep_if_finite(opt_state, state.opt_state),
                           skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32),
                           model_state=keep_if_finite(model_state, state.model_state),
                           ema_params=keep_if_finite(ema_params, state.ema_params))
    metrics = {**metrics, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
               "nonfinite": (~finite).astype(jnp.float32),
               "skipped_steps": new_state.skipped_steps.astype(jnp.float32)}
    return new_state, metrics

  return jax.jit(step, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, metrics_sharding), donate_argnums=0)


def make_predict(model: nn.Module, task: Task, variables_shardings: ModelVariables,
                 batch_sharding: jax.sharding.Sharding, out_sharding: jax.sharding.Sharding
                 ) -> Callable[[Any, Batch], dict[str, jax.Array]]:
  """Compiled (variables, batch) -> the task's per-example predictions.

  variables: a `ModelVariables` (e.g. `TrainState.eval_variables()`), or bare params for a
    model without state. variables_shardings: the matching `ModelVariables` of shardings
    (`state_shardings.eval_variables()`).
  A generative task gets `task.generate(model, params, batch)`, plus `model_state=` (its
  collections) when the model has state.
  """

  def predict(variables: ModelVariables, batch: Batch) -> dict[str, jax.Array]:
    if isinstance(task, GenerativeTask):  # Predictions need more than one forward pass.
      state = {"model_state": variables.model_state} if variables.model_state else {}
      return task.generate(model, variables.params, batch, **state)
    return task.predict(model.apply(variables.as_dict(), batch, train=False), batch)

  compiled = jax.jit(predict, in_shardings=(variables_shardings, batch_sharding),
                     out_shardings=out_sharding)

  def predict_variables(variables: Any, batch: Batch) -> dict[str, jax.Array]:
    if not isinstance(variables, ModelVariables):
      if variables_shardings.model_state:
        raise ValueError(
            f"The model keeps state ({sorted(variables_shardings.model_state)}): predict "
            "takes ModelVariables(params, model_state), e.g. state.eval_variables(), not "
            "bare params.")
      variables = ModelVariables(variables)
    return compiled(variables, batch)

  return predict_variables
