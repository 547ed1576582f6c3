"""Cross-attention fusion: one modality's tokens attend to another's."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from multimodal.models.attention import padding_mask
from multimodal.models.features import Features, Fused, masked_mean
from multimodal.models.fusion.registry import FUSION
from multimodal.models.transformer import EncoderBlock, dense, layer_norm, stack_blocks


@FUSION.register("cross_attention")
class CrossAttention(nn.Module):
  """`depth` blocks of self-attention over the query tokens, cross-attention to the context
  tokens, and an MLP (text queries attending to image tokens, as in VQA models).

  Attributes:
    query: the modality whose tokens are updated and pooled (e.g. "text").
    context: the modality attended to (e.g. "image").
    width, depth, num_heads, mlp_dim: sizes of the fusion stack; inputs are projected to width.
    remat, remat_policy, scan_layers: how the transformer blocks run (see `Encoder`).
  """
  query: str = "text"
  context: str = "image"
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  scan_layers: bool = False

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[query]: [B, Tq, Dq]; features[context]: [B, Tc, Dc] -> Fused over [B, Tq, width]."""
    for name in (self.query, self.context):
      if name not in features:
        raise KeyError(f"cross_attention fusion needs modality {name!r}; got {sorted(features)}.")
    q, c = features[self.query], features[self.context]
    x = dense(self.width, None, "embed", "query_proj", self.dtype)(q.tokens)
    context = dense(self.width, None, "embed", "context_proj", self.dtype)(c.tokens)
    self_mask = padding_mask(None, q.mask)
    cross_mask = padding_mask(None, c.mask)
    make_block = functools.partial(EncoderBlock, self.num_heads, self.mlp_dim, self.dropout,
                                   cross_attention=True, dtype=self.dtype)
    x = stack_blocks(make_block, self.depth, x, self_mask, train=train, context=context,
                     context_mask=cross_mask, remat=self.remat, policy=self.remat_policy,
                     scan_layers=self.scan_layers)
    x = layer_norm("ln_final", self.dtype)(x)
    return Fused(tokens=x, mask=q.mask, pooled=masked_mean(x, q.mask))
