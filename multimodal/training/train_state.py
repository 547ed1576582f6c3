"""The training state and its sharded creation."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from multimodal.models import aux_losses
from multimodal.training import sharding

# Collections of `model.init` that are not model state: the params, the auxiliary losses a
# train step collects, and sown intermediates (values a caller asks for, recomputed each call).
NOT_STATE = ("params", aux_losses.COLLECTION, "intermediates")


@flax.struct.dataclass
class ModelVariables:
  """What a forward pass needs: params and the model's other variable collections.

  model_state: {collection: tree}, e.g. {"codebook": ...} from `self.variable("codebook", ...)`;
    {} for a model without state. `as_dict()` is what `model.apply` takes.
  """
  params: Any
  model_state: Any = dataclasses.field(default_factory=dict)

  def as_dict(self) -> dict[str, Any]:
    return {"params": self.params, **self.model_state}


@flax.struct.dataclass
class TrainState:
  """step: int32[]; params and opt_state: pytrees of (sharded) arrays;
  skipped_steps: int32[], steps whose loss or gradients were not finite (left unapplied);
  model_state: the model's variable collections other than params (`NOT_STATE`), which the
    train step updates (the modules update them when applied with train=True); {} for a model
    without any, so it adds nothing to the checkpoint;
  ema_params: the exponential moving average of params (`config.ema_decay`), or None when
    not kept.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  skipped_steps: jax.Array
  model_state: Any = dataclasses.field(default_factory=dict)
  ema_params: Any = None

  def eval_variables(self) -> ModelVariables:
    """What evaluation predicts with: the EMA params when kept (else the params) and the
    model state. (On a tree of shardings, the matching shardings.)"""
    return ModelVariables(self.params if self.ema_params is None else self.ema_params,
                          self.model_state)


def model_state_of(variables: dict[str, Any]) -> dict[str, Any]:
  """The state collections among `model.init`'s variables ({} when there are none)."""
  return {k: v for k, v in variables.items() if k not in NOT_STATE}


def _init_fn(model: nn.Module, optimizer: optax.GradientTransformation,
             example_batch: dict[str, Any], ema: bool = False
             ) -> Callable[[jax.Array], TrainState]:
  """rng -> the initial state, params (and state) boxed with their logical axis names; with
  `ema`, ema_params start equal to params."""
  def init(rng: jax.Array) -> TrainState:
    batch = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), example_batch)
    variables = model.init({"params": rng, "dropout": rng}, batch, train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), skipped_steps=jnp.zeros((), jnp.int32),
                      model_state=model_state_of(variables),
                      ema_params=params if ema else None)
  return init


def abstract_sharded_state(model: nn.Module, optimizer: optax.GradientTransformation,
                           example_batch: dict[str, Any], mesh: Mesh, rules: Any,
                           ema: bool = False) -> tuple[TrainState, Any]:
  """The state's shapes and shardings, without allocating or computing anything.

  Returns (state of jax.ShapeDtypeStructs carrying their shardings, state_shardings); the
  shardings come from the params' logical axis names, which optax's state and the EMA inherit
  because they map over the same boxed tree. Model state is sharded by its own annotations
  (`nn.with_logical_partitioning`), replicated where it has none. The abstract state can be
  passed to `.lower()`. ema: keep `ema_params`.
  """
  boxed = jax.eval_shape(_init_fn(model, optimizer, example_batch, ema), jax.random.key(0))
  shardings = sharding.logical_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.meta.unbox(boxed), shardings)
  return abstract, shardings


def create_sharded_state(model: nn.Module, optimizer: optax.GradientTransformation,
                         example_batch: dict[str, Any], rng: jax.Array, mesh: Mesh,
                         rules: Any, ema: bool = False) -> tuple[TrainState, Any]:
  """Initialises params, model state and optimizer state directly in their shardings.

  example_batch: arrays (or ShapeDtypeStructs) with the shapes of one global batch.
  ema: keep `ema_params` (starting equal to params).
  Returns (state, state_shardings) as in `abstract_sharded_state`.
  """
  init = _init_fn(model, optimizer, example_batch, ema)
  _, shardings = abstract_sharded_state(model, optimizer, example_batch, mesh, rules, ema)
  state = jax.jit(lambda: nn.meta.unbox(init(rng)), out_shardings=shardings)()
  return state, shardings
