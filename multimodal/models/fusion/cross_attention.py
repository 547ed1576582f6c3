"""Cross-attention fusion: one modality's tokens attend to another's."""
from __future__ import annotations

import flax.linen as nn

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
  The attention weights over the context are sown as `intermediates` (see `attention.py`).
  """
  query: str = "text"
  context: str = "image"

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[query]: [B, Tq, Dq]; features[context]: [B, Tc, Dc] -> Fused over [B, Tq, width]."""
    require(features, (self.query, self.context), "cross_attention")
    q, c = features[self.query], features[self.context]
    x = dense(self.width, None, "embed", "query_proj", self.dtype)(q.tokens)
    context = dense(self.width, None, "embed", "context_proj", self.dtype)(c.tokens)
    x = stack_blocks(self.block(cross_attention=True), self.depth, x, padding_mask(None, q.mask),
                     train=train, context=context, context_mask=padding_mask(None, c.mask),
                     stacking=Stacking.of(self))
    x = layer_norm("ln_final", self.dtype)(x)
    return Fused(tokens=x, mask=q.mask, pooled=masked_mean(x, q.mask))
