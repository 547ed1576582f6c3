"""Pre-LayerNorm transformer pieces shared by every encoder and fusion module."""
from __future__ import annotations

import functools
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
  its own tokens, each token attends to a second sequence (`context`).
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  cross_attention: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool,
               context: jax.Array | None = None,
               context_mask: jax.Array | None = None) -> jax.Array:
    """x: float[B, T, D]; mask: bool[B, 1|T, T]; context: float[B, S, D];
    context_mask: bool[B, 1|T, S] -> float[B, T, D]."""
    drop = lambda h: nn.Dropout(self.dropout)(h, deterministic=not train)
    h = layer_norm("ln_self", self.dtype)(x)
    x = x + drop(MultiHeadAttention(self.num_heads, self.dtype, name="self_attention")(
        h, mask=mask))
    if self.cross_attention:
      h = layer_norm("ln_cross", self.dtype)(x)
      x = x + drop(MultiHeadAttention(self.num_heads, self.dtype, name="cross_attention")(
          h, context, mask=context_mask))
    h = layer_norm("ln_mlp", self.dtype)(x)
    return x + drop(Mlp(self.mlp_dim, self.dropout, self.dtype, name="mlp")(h, train=train))


# Policies that decide which activations a rematerialised block keeps for the backward pass.
REMAT_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable",
                  "everything_saveable")


def remat_policy(name: str) -> Callable[..., bool]:
  if name not in REMAT_POLICIES:
    raise ValueError(f"Unknown remat_policy {name!r}; use one of {REMAT_POLICIES}.")
  return getattr(jax.checkpoint_policies, name)


def stack_blocks(make_block: Callable[..., EncoderBlock], depth: int, x: jax.Array,
                 mask: jax.Array, *, train: bool, context: jax.Array | None = None,
                 context_mask: jax.Array | None = None, remat: bool = False,
                 policy: str = "nothing_saveable", scan_layers: bool = False) -> jax.Array:
  """Runs `depth` blocks, each `make_block(name=...)`, inside the caller's compact method.

  The blocks' params live in the caller: `block0` ... `block{depth-1}` for a Python loop;
  with `scan_layers`, one `blocks` entry (`p.STACKED_BLOCKS`) whose params carry a leading
  `layers` axis of size `depth`, so the block compiles once however deep the stack is. With
  `remat`, a block's activations (except what `policy` saves) are recomputed in the backward
  pass instead of kept in memory.
  x: float[B, T, D]; mask, context, context_mask: as `EncoderBlock` -> float[B, T, D].
  """
  # Arrays go in as arguments (not closed over) so the lifted transforms see them.
  def apply(block: EncoderBlock, x: jax.Array, mask: jax.Array, context: jax.Array | None,
            context_mask: jax.Array | None) -> jax.Array:
    return block(x, mask, train=train, context=context, context_mask=context_mask)

  if remat:
    # A scan already keeps XLA from folding the recomputation into the forward pass.
    apply = nn.remat(apply, policy=remat_policy(policy), prevent_cse=not scan_layers)
  if not scan_layers:
    for i in range(depth):
      x = apply(make_block(name=f"block{i}"), x, mask, context, context_mask)
    return x
  scan = nn.scan(lambda block, x, *args: (apply(block, x, *args), None),
                 variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                 in_axes=nn.broadcast, length=depth,
                 metadata_params={nn.PARTITION_NAME: p.LAYERS})
  x, _ = scan(make_block(name=p.STACKED_BLOCKS), x, mask, context, context_mask)
  return x


def scanned_layout(params: Any) -> Any:
  """Params of Python-loop stacks (`block0` ... `block{N-1}`) -> the `scan_layers` layout
  (`blocks`, each leaf stacked along a leading `layers` axis), e.g. to load a checkpoint."""
  if not isinstance(params, dict):
    return params
  params = {name: scanned_layout(child) for name, child in params.items()}
  depth = 0
  while f"block{depth}" in params:
    depth += 1
  if depth:
    blocks = [params.pop(f"block{i}") for i in range(depth)]
    params[p.STACKED_BLOCKS] = jax.tree.map(lambda *layers: jnp.stack(layers), *blocks)
  return params


class Encoder(nn.Module):
  """A stack of `EncoderBlock`s and a final LayerNorm.

  Attributes:
    remat: recompute each block's activations in the backward pass (saves memory).
    remat_policy: which activations a rematerialised block keeps, from `REMAT_POLICIES`.
    scan_layers: run the blocks as one `nn.scan` over params stacked along `layers`.
  """
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  scan_layers: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
    """x: float[B, T, D]; mask: bool[B, T] padding mask -> float[B, T, D]."""
    make_block = functools.partial(EncoderBlock, self.num_heads, self.mlp_dim, self.dropout,
                                   dtype=self.dtype)
    x = stack_blocks(make_block, self.depth, x, mask[:, None, :], train=train,
                     remat=self.remat, policy=self.remat_policy,
                     scan_layers=self.scan_layers)
    return layer_norm("ln_final", self.dtype)(x)
