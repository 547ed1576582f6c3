"""Multiway fusion (BEiT-3, VLMo): one attention over all modalities' tokens,
modality-specific feed-forward experts and layer norms."""
from __future__ import annotations

import flax.linen as nn

from multimodal.models.attention import padding_mask
from multimodal.models.features import Features, Fused
from multimodal.models.fusion.base import (FusionModule, concat_streams, mean_of_present,
                                           require)
from multimodal.models.fusion.registry import FUSION
from multimodal.models.multiway import MultiwayBlock
from multimodal.models.transformer import Stacking, stack_layers


@FUSION.register("multiway")
class Multiway(FusionModule):
  """Each modality projected to `width`; the joint sequence (sorted modality order) runs
  `depth` Multiway blocks (see `MultiwayBlock`), of which the top `vl_layers` use one shared
  vision-language feed-forward expert (VLMo); a final LayerNorm per modality. Pooled: the
  mean over the present modalities of each one's masked mean.

  Attributes:
    shared_attention: one set of attention projections for all modalities (the BEiT-3
      paper) instead of one per modality (the BEiT-3 release).
    vl_layers: top layers whose feed-forward expert is shared by all modalities.
  """
  shared_attention: bool = False
  vl_layers: int = 0

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[m]: [B, T_m, D_m] -> Fused over [B, sum T_m, width]."""
    require(features, (), "multiway")
    if not 0 <= self.vl_layers <= self.depth:
      raise ValueError(f"multiway fusion: vl_layers={self.vl_layers} must lie in "
                       f"[0, depth={self.depth}].")
    streams = self.streams(0)(name="streams")(features, train=train)
    names = sorted(streams)
    segments = tuple((m, streams[m].tokens.shape[1]) for m in names)
    x, mask = concat_streams(streams)
    make = lambda vl: (lambda name: MultiwayBlock(
        segments, self.num_heads, self.mlp_dim, self.dropout, self.shared_attention,
        vl_expert=vl, dtype=self.dtype, name=name))
    attention_mask = padding_mask(None, mask)
    x = stack_layers(make(False), self.depth - self.vl_layers, x, attention_mask, train=train,
                     stacking=Stacking.of(self))
    x = stack_layers(make(True), self.vl_layers, x, attention_mask, train=train,
                     stacking=Stacking.of(self), prefix="vl_")
    split, start = {}, 0
    for m, length in segments:
      split[m] = Features(tokens=x[:, start:start + length], mask=streams[m].mask)
      start += length
    streams = self.final_norm()(name="ln_final")(split)
    tokens, mask = concat_streams(streams)
    return Fused(tokens=tokens, mask=mask, pooled=mean_of_present(streams))
