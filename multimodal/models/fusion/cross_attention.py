"""Cross-attention fusion: one modality's tokens attend to another's."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.attention import padding_mask
from multimodal.models.features import Features, Fused, masked_mean
from multimodal.models.fusion.base import FusionModule, require
from multimodal.models.fusion.registry import FUSION
from multimodal.models.transformer import Stacking, dense, layer_norm, stack_blocks


@FUSION.register("cross_attention")
class CrossAttention(FusionModule):
  """`depth` blocks of self-attention over the query tokens, cross-attention to the context
  tokens, and an MLP (text queries attending to image tokens, as in VQA models).

  Attributes:
    query: the modality whose tokens are updated and pooled (e.g. "text").
    context: the modality attended to (e.g. "image").
    null_context: put a learned token before the context tokens, always there: a query that
      matches nothing attends to it, and the share of attention it keeps falls as more
      tokens match (1 / (1 + n e^(m - s)) for n tokens of logit m against its s), so that
      the softmax's average also says how many matched: counting over a few object tokens.
  The attention weights over the context are sown as `intermediates` (see `attention.py`).
  """
  query: str = "text"
  context: str = "image"
  null_context: bool = False

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[query]: [B, Tq, Dq]; features[context]: [B, Tc, Dc] -> Fused over [B, Tq, width]."""
    require(features, (self.query, self.context), "cross_attention")
    q, c = features[self.query], features[self.context]
    x = dense(self.width, None, "embed", "query_proj", self.dtype)(q.tokens)
    context = dense(self.width, None, "embed", "context_proj", self.dtype)(c.tokens)
    context_mask = c.mask
    if self.null_context:
      null = self.param("null_context", p.init(nn.initializers.normal(0.02), None, None, "embed"),
                        (1, 1, self.width))
      context = jnp.concatenate(
          [jnp.broadcast_to(null, (context.shape[0], 1, self.width)).astype(context.dtype),
           context], axis=1)
      context_mask = jnp.concatenate([jnp.ones_like(c.mask[:, :1]), c.mask], axis=1)
    x = stack_blocks(self.block(cross_attention=True), self.depth, x, padding_mask(None, q.mask),
                     train=train, context=context, context_mask=padding_mask(None, context_mask),
                     stacking=Stacking.of(self))
    x = layer_norm("ln_final", self.dtype)(x)
    return Fused(tokens=x, mask=q.mask, pooled=masked_mean(x, q.mask))
