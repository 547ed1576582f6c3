"""The training state and its sharded creation."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from multimodal.training import sharding


@flax.struct.dataclass
class TrainState:
  """step: int32[]; params and opt_state: pytrees of (sharded) arrays;
  skipped_steps: int32[], steps whose loss or gradients were not finite (left unapplied)."""
  step: jax.Array
  params: Any
  opt_state: Any
  skipped_steps: jax.Array


def _init_fn(model: nn.Module, optimizer: optax.GradientTransformation,
             example_batch: dict[str, Any]) -> Callable[[jax.Array], TrainState]:
  """rng -> the initial state, params boxed with their logical axis names."""
  def init(rng: jax.Array) -> TrainState:
    batch = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), example_batch)
    variables = model.init({"params": rng, "dropout": rng}, batch, train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), skipped_steps=jnp.zeros((), jnp.int32))
  return init


def abstract_sharded_state(model: nn.Module, optimizer: optax.GradientTransformation,
                           example_batch: dict[str, Any], mesh: Mesh, rules: Any
                           ) -> tuple[TrainState, Any]:
  """The state's shapes and shardings, without allocating or computing anything.

  Returns (state of jax.ShapeDtypeStructs carrying their shardings, state_shardings); the
  shardings come from the params' logical axis names, which optax's state inherits because
  it maps over the same boxed tree. The abstract state can be passed to `.lower()`.
  """
  boxed = jax.eval_shape(_init_fn(model, optimizer, example_batch), jax.random.key(0))
  shardings = sharding.logical_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.meta.unbox(boxed), shardings)
  return abstract, shardings


def create_sharded_state(model: nn.Module, optimizer: optax.GradientTransformation,
                         example_batch: dict[str, Any], rng: jax.Array, mesh: Mesh,
                         rules: Any) -> tuple[TrainState, Any]:
  """Initialises params and optimizer state directly in their shardings.

  example_batch: arrays (or ShapeDtypeStructs) with the shapes of one global batch.
  Returns (state, state_shardings) as in `abstract_sharded_state`.
  """
  init = _init_fn(model, optimizer, example_batch)
  _, shardings = abstract_sharded_state(model, optimizer, example_batch, mesh, rules)
  state = jax.jit(lambda: nn.meta.unbox(init(rng)), out_shardings=shardings)()
  return state, shardings
