"""Co-attention fusion (ViLBERT): one stream per modality, each attending to the others in
every layer."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.attention import padding_mask
from multimodal.models.features import Features, Fused
from multimodal.models.fusion.base import (FusionModule, concat_streams, mean_of_present,
                                           require)
from multimodal.models.fusion.registry import FUSION
from multimodal.models.transformer import EncoderBlock, Stacking, stack_layers


class CoAttentionLayer(nn.Module):
  """Every stream updated at once from the previous layer's streams: self-attention over its
  own tokens, cross-attention to the other streams' tokens (concatenated), MLP. Params: one
  `EncoderBlock` per modality, named by it."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: dict[str, jax.Array], masks: dict[str, jax.Array], *,
               train: bool) -> dict[str, jax.Array]:
    """tokens: {m: float[B, T_m, D]}; masks: {m: bool[B, T_m]} -> tokens of the same shapes."""
    out = {}
    for name in sorted(tokens):
      others = [n for n in sorted(tokens) if n != name]
      context = jnp.concatenate([tokens[n] for n in others], axis=1)
      context_mask = jnp.concatenate([masks[n] for n in others], axis=1)
      out[name] = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, cross_attention=True,
                               dtype=self.dtype, name=name)(
          tokens[name], padding_mask(None, masks[name]), context,
          padding_mask(None, context_mask), train=train)
    return out


@FUSION.register("co_attention")
class CoAttention(FusionModule):
  """Each modality projected to `width`, then `depth` co-attention layers (see
  `CoAttentionLayer`), a final LayerNorm per stream; pooled: the mean over the present
  modalities of each stream's masked mean. Needs two or more modalities."""

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[m]: [B, T_m, D_m] -> Fused over [B, sum T_m, width]."""
    require(features, (), "co_attention", at_least=2)
    streams = self.streams(0)(name="streams")(features, train=train)
    masks = {m: f.mask for m, f in streams.items()}
    make_layer = lambda name: CoAttentionLayer(self.num_heads, self.mlp_dim, self.dropout,
                                               self.dtype, name=name)
    tokens = stack_layers(make_layer, self.depth, {m: f.tokens for m, f in streams.items()},
                          masks, train=train, stacking=Stacking.of(self))
    streams = self.final_norm()(name="ln_final")(
        {m: Features(tokens=tokens[m], mask=masks[m]) for m in tokens})
    tokens, mask = concat_streams(streams)
    return Fused(tokens=tokens, mask=mask, pooled=mean_of_present(streams))
