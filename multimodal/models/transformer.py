"""Pre-LayerNorm transformer pieces shared by every encoder and fusion module."""
from __future__ import annotations

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


class Encoder(nn.Module):
  """A stack of `EncoderBlock`s and a final LayerNorm."""
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
    """x: float[B, T, D]; mask: bool[B, T] padding mask -> float[B, T, D]."""
    attention_mask = mask[:, None, :]
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, dtype=self.dtype,
                       name=f"block{i}")(x, attention_mask, train=train)
    return layer_norm("ln_final", self.dtype)(x)
