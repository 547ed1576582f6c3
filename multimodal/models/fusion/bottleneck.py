"""Bottleneck fusion (MBT, Nagrani et al. 2021): modalities exchange information only through
a few shared tokens."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.features import Features, Fused, is_present
from multimodal.models.fusion.base import (FusionModule, concat_streams, mean_of_present,
                                           require)
from multimodal.models.fusion.registry import FUSION
from multimodal.models.transformer import EncoderBlock, Stacking, stack_layers


class BottleneckLayer(nn.Module):
  """Each modality's block runs over [its tokens; the bottleneck tokens]; the bottleneck
  tokens' updates are averaged over the modalities an example has. Params: one
  `EncoderBlock` per modality, named by it."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry: tuple[dict[str, jax.Array], jax.Array],
               masks: dict[str, jax.Array], *, train: bool
               ) -> tuple[dict[str, jax.Array], jax.Array]:
    """carry: ({m: float[B, T_m, D]}, bottleneck float[B, N, D]); masks: {m: bool[B, T_m]}."""
    tokens, bottleneck = carry
    batch, n = bottleneck.shape[:2]
    out, updates, present = {}, [], []
    for name in sorted(tokens):
      t = tokens[name].shape[1]
      x = jnp.concatenate([tokens[name], bottleneck], axis=1)
      mask = jnp.concatenate([masks[name], jnp.ones((batch, n), bool)], axis=1)
      y = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, dtype=self.dtype,
                       name=name)(x, mask[:, None, :], train=train)
      out[name] = y[:, :t]
      updates.append(y[:, t:])
      present.append(is_present(masks[name]))
    weights = jnp.stack(present, axis=1).astype(bottleneck.dtype)  # [B, M]
    count = jnp.sum(weights, axis=1)[:, None, None]
    mean = jnp.einsum("bm,bmnd->bnd", weights, jnp.stack(updates, axis=1))
    # An example with no modality keeps its bottleneck tokens.
    return out, jnp.where(count > 0, mean / jnp.maximum(count, 1), bottleneck)


@FUSION.register("bottleneck")
class Bottleneck(FusionModule):
  """Each modality projected to `width` runs `fusion_layer` blocks of its own, then
  `depth - fusion_layer` bottleneck layers (see `BottleneckLayer`) sharing `n_bottlenecks`
  learned tokens, and a final LayerNorm per modality. Pooled: the mean over the present
  modalities of each stream's masked mean (MBT averages per-modality outputs too).
  With fusion_layer = depth there is no exchange: the streams are late fusion's.

  Attributes:
    fusion_layer: modality-specific blocks before the bottleneck layers (0 <= it <= depth).
    n_bottlenecks: the number of shared tokens.
  """
  fusion_layer: int = 1
  n_bottlenecks: int = 4

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[m]: [B, T_m, D_m] -> Fused over [B, sum T_m + n_bottlenecks, width]."""
    require(features, (), "bottleneck")
    if not 0 <= self.fusion_layer <= self.depth:
      raise ValueError(f"bottleneck fusion: fusion_layer={self.fusion_layer} must lie in "
                       f"[0, depth={self.depth}].")
    if self.n_bottlenecks < 1:
      raise ValueError(f"bottleneck fusion: n_bottlenecks={self.n_bottlenecks} must be >= 1.")
    streams = self.streams(self.fusion_layer)(name="streams")(features, train=train)
    batch = next(iter(streams.values())).tokens.shape[0]
    init = self.param("bottleneck_tokens",
                      p.init(nn.initializers.normal(0.02), None, None, "embed"),
                      (1, self.n_bottlenecks, self.width))
    bottleneck = jnp.broadcast_to(init.astype(self.dtype), (batch,) + init.shape[1:])
    masks = {m: f.mask for m, f in streams.items()}
    make_layer = lambda name: BottleneckLayer(self.num_heads, self.mlp_dim, self.dropout,
                                              self.dtype, name=name)
    tokens, bottleneck = stack_layers(
        make_layer, self.depth - self.fusion_layer,
        ({m: f.tokens for m, f in streams.items()}, bottleneck), masks, train=train,
        stacking=Stacking.of(self), prefix="fusion_")
    streams = self.final_norm()(name="ln_final")(
        {m: Features(tokens=tokens[m], mask=masks[m]) for m in tokens})
    tokens, mask = concat_streams(streams)
    return Fused(tokens=jnp.concatenate([tokens, bottleneck], axis=1),
                 mask=jnp.concatenate([mask, jnp.ones((batch, self.n_bottlenecks), bool)], 1),
                 pooled=mean_of_present(streams))
