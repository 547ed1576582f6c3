"""Multiway transformer layers (BEiT-3, VLMo): attention over the joint sequence of all
modalities, with modality-specific experts (feed-forward networks, layer norms and, as an
option, attention projections) routed by position.

The joint sequence is the modalities' tokens concatenated in a fixed order; `segments` names
each modality and its length, so the routing is static slicing (as torchscale's
MultiwayNetwork splits at a position), not a per-token gather.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.attention import attend, head_projection, output_projection
from multimodal.models.transformer import Mlp, layer_norm

Segments = tuple[tuple[str, int], ...]  # ((modality, tokens), ...) in sequence order


def per_segment(x: jax.Array, segments: Segments,
                fn: Callable[[str, jax.Array], jax.Array]) -> jax.Array:
  """Applies `fn(modality, its slice)` to each modality's slice of x float[B, T, ...] along
  axis 1 and concatenates the results in order."""
  total = sum(length for _, length in segments)
  if x.shape[1] != total:
    raise ValueError(f"A sequence of {x.shape[1]} tokens does not match the segments "
                     f"{segments} ({total} tokens).")
  outputs, start = [], 0
  for name, length in segments:
    outputs.append(fn(name, x[:, start:start + length]))
    start += length
  return jnp.concatenate(outputs, axis=1)


class MultiwayAttention(nn.Module):
  """Multi-head self-attention over the joint sequence; the query, key, value and output
  projections are per modality (params `query_{m}`, ...) or, with `shared`, one set for all
  (`query`, ...: the BEiT-3 paper's shared attention)."""
  segments: Segments
  num_heads: int
  shared: bool = False
  dtype: Any = jnp.float32
  key_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """x: float[B, T, D]; mask: bool[B, 1|T, T] -> float[B, T, D]."""
    width = x.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"Width {width} does not divide into {self.num_heads} heads.")
    head_dim = width // self.num_heads

    def project(kind: str, x: jax.Array, make: Callable[[str], nn.Module]) -> jax.Array:
      if self.shared:
        return make(kind)(x)
      return per_segment(x, self.segments, lambda m, xm: make(f"{kind}_{m}")(xm))

    heads = lambda bias=True: (lambda name: head_projection(self.num_heads, head_dim, name,
                                                            self.dtype, bias))
    q = project("query", x, heads())
    k = project("key", x, heads(self.key_bias))
    v = project("value", x, heads())
    out, weights = attend(q, k, v, mask, self.dtype)
    self.sow("intermediates", "attention_weights", weights)
    return project("out", out, lambda name: output_projection(width, name, self.dtype))


class MultiwayBlock(nn.Module):
  """x + Attention(LN_m(x)), then x + FFN_m(LN_m(x)), with LN_m and FFN_m the token's
  modality's expert (`ln_self_{m}`, `ln_mlp_{m}`, `mlp_{m}`). With `vl_expert`, one
  feed-forward network and its LayerNorm (`ln_mlp_vl`, `mlp_vl`) serve every token, as in
  VLMo's top layers.
  """
  segments: Segments
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  shared_attention: bool = False
  vl_expert: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
    """x: float[B, T, D] (the joint sequence); mask: bool[B, 1|T, T] -> float[B, T, D]."""
    drop = lambda h: nn.Dropout(self.dropout)(h, deterministic=not train)
    norm = lambda prefix: (lambda m, xm: layer_norm(f"{prefix}_{m}", self.dtype)(xm))
    h = per_segment(x, self.segments, norm("ln_self"))
    x = x + drop(MultiwayAttention(self.segments, self.num_heads, self.shared_attention,
                                   self.dtype, name="self_attention")(h, mask))
    mlp = lambda name: Mlp(self.mlp_dim, self.dropout, self.dtype, name=name)
    if self.vl_expert:
      h = layer_norm("ln_mlp_vl", self.dtype)(x)
      return x + drop(mlp("mlp_vl")(h, train=train))
    h = per_segment(x, self.segments, norm("ln_mlp"))
    return x + drop(per_segment(h, self.segments, lambda m, hm: mlp(f"mlp_{m}")(hm, train=train)))
