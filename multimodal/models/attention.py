"""Multi-head dot-product attention with padding masks and logical axis names."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p


class MultiHeadAttention(nn.Module):
  """Queries from `x` attend to keys/values from `context` (self-attention when it is None).

  Attributes:
    num_heads: number of heads; the width must divide by it.
    dtype: compute dtype (params stay float32).
    key_bias: give the key projection a bias. It cannot change the output (it adds the same
      q.b to every logit of a query, which the softmax cancels), so its gradient is exactly
      zero and an adaptive optimizer only moves it by round-off noise; off by default, on
      for converted weights of releases that have one (SigLIP, BEiT-3).
  """
  num_heads: int
  dtype: jnp.dtype = jnp.float32
  key_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None = None,
               mask: jax.Array | None = None) -> jax.Array:
    """x: float[B, Tq, D]; context: float[B, Tk, D]; mask: bool[B, Tq|1, Tk] -> float[B, Tq, D]."""
    context = x if context is None else context
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"Width {width} does not divide into {self.num_heads} heads.")
    head_dim = width // self.num_heads

    q = head_projection(self.num_heads, head_dim, "query", self.dtype)(x)
    k = head_projection(self.num_heads, head_dim, "key", self.dtype, self.key_bias)(context)
    v = head_projection(self.num_heads, head_dim, "value", self.dtype)(context)
    out, weights = attend(q, k, v, mask, self.dtype)
    # Kept only when the caller asks: apply(..., mutable=["intermediates"]).
    self.sow("intermediates", "attention_weights", weights)
    return output_projection(width, "out", self.dtype)(out)


def head_projection(num_heads: int, head_dim: int, name: str, dtype: jnp.dtype = jnp.float32,
                    use_bias: bool = True) -> nn.DenseGeneral:
  """float[..., D] -> float[..., H, Dh]: queries, keys or values."""
  return nn.DenseGeneral(
      (num_heads, head_dim), dtype=dtype, name=name, use_bias=use_bias,
      kernel_init=p.init(nn.initializers.xavier_uniform(), "embed", "heads", "kv"),
      bias_init=p.init(nn.initializers.zeros, "heads", "kv"))


def output_projection(width: int, name: str, dtype: jnp.dtype = jnp.float32) -> nn.DenseGeneral:
  """float[..., H, Dh] -> float[..., width]: the heads merged back."""
  return nn.DenseGeneral(
      width, axis=(-2, -1), dtype=dtype, name=name,
      kernel_init=p.init(nn.initializers.xavier_uniform(), "heads", "kv", "embed"),
      bias_init=p.init(nn.initializers.zeros, "embed"))


def padding_mask(query_mask: jax.Array | None, key_mask: jax.Array) -> jax.Array:
  """bool[B, Tq] (or None), bool[B, Tk] -> bool[B, Tq|1, Tk]: which keys each query may see."""
  if query_mask is None:
    return key_mask[:, None, :]
  return jnp.logical_and(query_mask[:, :, None], key_mask[:, None, :])


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
           dtype: jnp.dtype = jnp.float32) -> tuple[jax.Array, jax.Array]:
  """Scaled dot-product attention over projected heads.

  q: float[B, Tq, H, Dh]; k, v: float[B, Tk, H, Dh]; mask: bool[B, Tq|1, Tk] or None
  -> (float[B, Tq, H, Dh], attention weights float32[B, H, Tq, Tk]).
  A query with no valid key (e.g. a missing modality) attends to nothing, not uniformly.
  """
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(q.shape[-1])
  if mask is not None:
    logits = jnp.where(mask[:, None], logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1)
  if mask is not None:
    weights = jnp.where(jnp.any(mask, axis=-1, keepdims=True)[:, None], weights, 0.0)
  return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(dtype), v), weights
