"""Pre-LayerNorm transformer pieces shared by every encoder and fusion module."""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.attention import MultiHeadAttention


def layer_norm(name: str | None = None, dtype: jnp.dtype = jnp.float32) -> nn.LayerNorm:
  return nn.LayerNorm(dtype=dtype, name=name,
                      scale_init=p.init(nn.initializers.ones, "embed"),
                      bias_init=p.init(nn.initializers.zeros, "embed"))


def dense(features: int, in_axis: str | None, out_axis: str | None, name: str | None = None,
          dtype: jnp.dtype = jnp.float32) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, name=name,
                  kernel_init=p.init(nn.initializers.xavier_uniform(), in_axis, out_axis),
                  bias_init=p.init(nn.initializers.zeros, out_axis))


class Mlp(nn.Module):
  """Dense -> GELU -> dropout -> Dense."""
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """float[..., D] -> float[..., D]."""
    h = nn.gelu(dense(self.mlp_dim, "embed", "mlp", "fc1", self.dtype)(x))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    return dense(x.shape[-1], "mlp", "embed", "fc2", self.dtype)(h)


class EncoderBlock(nn.Module):
  """x + SelfAttention(LN(x)), then x + Mlp(LN(x)); optionally cross-attention in between.

  With `cross_attention=True` the block is a decoder-style fusion layer: after attending to
  its own tokens, each token attends to a second sequence (`context`). `key_bias` gives the
  attentions' key projections a bias (see `MultiHeadAttention`).
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  cross_attention: bool = False
  dtype: jnp.dtype = jnp.float32
  key_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, context: jax.Array | None = None,
               context_mask: jax.Array | None = None, *, train: bool) -> jax.Array:
    """x: float[B, T, D]; mask: bool[B, 1|T, T]; context: float[B, S, D];
    context_mask: bool[B, 1|T, S] -> float[B, T, D]."""
    drop = lambda h: nn.Dropout(self.dropout)(h, deterministic=not train)
    h = layer_norm("ln_self", self.dtype)(x)
    attention = lambda name: MultiHeadAttention(self.num_heads, self.dtype, self.key_bias,
                                                name=name)
    x = x + drop(attention("self_attention")(h, mask=mask))
    if self.cross_attention:
      h = layer_norm("ln_cross", self.dtype)(x)
      x = x + drop(attention("cross_attention")(h, context, mask=context_mask))
    h = layer_norm("ln_mlp", self.dtype)(x)
    return x + drop(Mlp(self.mlp_dim, self.dropout, self.dtype, name="mlp")(h, train=train))


# Policies that decide which activations a rematerialised block keeps for the backward pass.
REMAT_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "everything_saveable")


def remat_policy(name: str) -> Callable[..., bool]:
  if name not in REMAT_POLICIES:
    raise ValueError(f"Unknown remat_policy {name!r}; use one of {REMAT_POLICIES}.")
  return getattr(jax.checkpoint_policies, name)


@dataclasses.dataclass(frozen=True)
class Stacking:
  """How a stack of layers runs (the `remat`, `remat_policy`, `scan_layers` settings).

  remat: recompute each layer's activations in the backward pass instead of keeping them.
  policy: which activations a rematerialised layer keeps, from `REMAT_POLICIES`.
  scan_layers: run the layers as one `nn.scan` over params stacked along `layers`.
  """
  remat: bool = False
  policy: str = "nothing_saveable"
  scan_layers: bool = False

  @classmethod
  def of(cls, module: Any) -> "Stacking":
    """The settings of a module with `remat`, `remat_policy` and `scan_layers` fields."""
    return cls(module.remat, module.remat_policy, module.scan_layers)


def stack_layers(make_layer: Callable[..., nn.Module], depth: int, carry: Any, *args: Any,
                 train: bool, stacking: Stacking = Stacking(), prefix: str = "") -> Any:
  """Runs `depth` layers `carry = make_layer(name=...)(carry, *args, train=train)` inside the
  caller's compact method.

  The layers' params live in the caller: `{prefix}block0` ... for a Python loop; with
  `scan_layers`, one `{prefix}blocks` entry whose params carry a leading `layers` axis of size
  `depth`, so the layer compiles once however deep the stack is. `carry` may be any pytree of
  arrays (e.g. one stream per modality); `args` are passed unchanged to every layer.
  """
  if depth == 0:
    return carry

  # Arrays go in as arguments (not closed over) so the lifted transforms see them.
  def apply(layer: nn.Module, carry: Any, *args: Any) -> Any:
    return layer(carry, *args, train=train)

  if stacking.remat:
    # A scan already keeps XLA from folding the recomputation into the forward pass.
    apply = nn.remat(apply, policy=remat_policy(stacking.policy),
                     prevent_cse=not stacking.scan_layers)
  if not stacking.scan_layers:
    for i in range(depth):
      carry = apply(make_layer(name=f"{prefix}block{i}"), carry, *args)
    return carry
  scan = nn.scan(lambda layer, carry, *args: (apply(layer, carry, *args), None),
                 variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                 in_axes=nn.broadcast, length=depth,
                 metadata_params={nn.PARTITION_NAME: p.LAYERS})
  carry, _ = scan(make_layer(name=prefix + p.STACKED_BLOCKS), carry, *args)
  return carry


def stack_blocks(make_block: Callable[..., EncoderBlock], depth: int, x: jax.Array,
                 mask: jax.Array, *, train: bool, context: jax.Array | None = None,
                 context_mask: jax.Array | None = None, stacking: Stacking = Stacking(),
                 prefix: str = "") -> jax.Array:
  """`stack_layers` of `EncoderBlock`s (`make_block(name=...)`).
  x: float[B, T, D]; mask, context, context_mask: as `EncoderBlock` -> float[B, T, D].
  """
  return stack_layers(make_block, depth, x, mask, context, context_mask, train=train,
                      stacking=stacking, prefix=prefix)


def scanned_layout(params: Any) -> Any:
  """Params of Python-loop stacks (`{prefix}block0` ... `{prefix}block{N-1}`) -> the
  `scan_layers` layout (`{prefix}blocks`, each leaf stacked along a leading `layers` axis),
  e.g. to load a checkpoint."""
  if not isinstance(params, dict):
    return params
  params = {name: scanned_layout(child) for name, child in params.items()}
  prefixes = {m.group(1) for m in map(_BLOCK_NAME.fullmatch, params) if m}
  for prefix in sorted(prefixes):
    depth = 0
    while f"{prefix}block{depth}" in params:
      depth += 1
    blocks = [params.pop(f"{prefix}block{i}") for i in range(depth)]
    params[prefix + p.STACKED_BLOCKS] = jax.tree.map(lambda *layers: jnp.stack(layers), *blocks)
  return params


_BLOCK_NAME = re.compile(r"(.*)block(\d+)")


class Encoder(nn.Module):
  """A stack of `EncoderBlock`s and a final LayerNorm.

  Attributes:
    remat: recompute each block's activations in the backward pass (saves memory).
    remat_policy: which activations a rematerialised block keeps, from `REMAT_POLICIES`.
    scan_layers: run the blocks as one `nn.scan` over params stacked along `layers`.
    key_bias: give the key projections a bias (see `MultiHeadAttention`).
  """
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  scan_layers: bool = False
  key_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
    """x: float[B, T, D]; mask: bool[B, T] padding mask, or bool[B, T, T] (query t may attend
    key s) -> float[B, T, D]."""
    make_block = functools.partial(EncoderBlock, self.num_heads, self.mlp_dim, self.dropout,
                                   dtype=self.dtype, key_bias=self.key_bias)
    x = stack_blocks(make_block, self.depth, x, mask[:, None, :] if mask.ndim == 2 else mask,
                     train=train,
                     stacking=Stacking.of(self))
    return layer_norm("ln_final", self.dtype)(x)
