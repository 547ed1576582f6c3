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
  """step: int32[]; params and opt_state: pytrees of (sharded) arrays."""
  step: jax.Array
  params: Any
  opt_state: Any


def create_sharded_state(model: nn.Module, optimizer: optax.GradientTransformation,
                         example_batch: dict[str, Any], rng: jax.Array, mesh: Mesh,
                         rules: Any) -> tuple[TrainState, Any]:
  """Initialises params and optimizer state directly in their shardings.

  example_batch: arrays (or ShapeDtypeStructs) with the shapes of one global batch.
  Returns (state, state_shardings); the shardings come from the params' logical axis names,
  which optax's state inherits because it maps over the same boxed tree.
  """
  def init_boxed() -> TrainState:
    batch = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), example_batch)
    variables = model.init({"params": rng, "dropout": rng}, batch, train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params))

  abstract = jax.eval_shape(init_boxed)
  shardings = sharding.logical_shardings(abstract, mesh, rules)
  unboxed: Callable[[], TrainState] = lambda: nn.meta.unbox(init_boxed())
  state = jax.jit(unboxed, out_shardings=shardings)()
  return state, shardings
