"""Fusion of pooled vectors: each modality becomes one vector (its own blocks, a final
LayerNorm, the masked mean), and the vectors are combined by a weighted sum, an MLP over their
concatenation, or per-example gates."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.features import Features, Fused
from multimodal.models.fusion.base import (FusionModule, masked_softmax, pooled_fused, presence,
                                           require, weighted_pool)
from multimodal.models.fusion.registry import FUSION
from multimodal.models.transformer import dense


class PooledFusion(FusionModule):
  """Shared first half: {m: Features} -> {m: Features with pooled float[B, width]}."""

  def pooled_streams(self, features: dict[str, Features], *, train: bool
                     ) -> dict[str, Features]:
    streams = self.streams(self.depth)(name="streams")(features, train=train)
    return self.final_norm()(name="ln_final")(streams)


@FUSION.register("weighted_sum")
class WeightedSum(PooledFusion):
  """pooled = sum_m w_m v_m with w = softmax of learned per-modality scores (param
  `modality_scores` [M]), renormalised over the modalities an example has."""

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[m]: [B, T_m, D_m] -> Fused(tokens [B, M, width], pooled [B, width])."""
    require(features, (), "weighted_sum")
    streams = self.pooled_streams(features, train=train)
    present = presence(streams)
    scores = self.param("modality_scores", p.init(nn.initializers.zeros, None),
                        (len(streams),))
    weights = masked_softmax(jnp.broadcast_to(scores, present.shape), present)
    return pooled_fused(streams, weighted_pool(streams, weights), weights)


@FUSION.register("concat_mlp")
class ConcatMlp(PooledFusion):
  """pooled = MLP(concat_m v_m): Dense(mlp_dim) -> GELU -> dropout -> Dense(width). A missing
  modality contributes a zero vector."""

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[m]: [B, T_m, D_m] -> Fused(tokens [B, M, width], pooled [B, width])."""
    require(features, (), "concat_mlp")
    streams = self.pooled_streams(features, train=train)
    x = jnp.concatenate([streams[m].pooled for m in sorted(streams)], axis=-1)
    h = nn.gelu(dense(self.mlp_dim, None, "mlp", "fc1", self.dtype)(x))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    return pooled_fused(streams, dense(self.width, "mlp", "embed", "fc2", self.dtype)(h))


@FUSION.register("gated")
class Gated(PooledFusion):
  """Per-example attention over the modalities: a gating network (Dense(mlp_dim) -> GELU ->
  Dense(M) over the concatenated pooled vectors) scores each modality; the softmax over the
  modalities an example has weighs their pooled vectors. The weights float[B, M] (sorted
  modality names) are returned in `Fused.modality_weights` and sown as
  `intermediates/.../modality_weights`."""

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[m]: [B, T_m, D_m] -> Fused(tokens [B, M, width], pooled [B, width])."""
    require(features, (), "gated")
    streams = self.pooled_streams(features, train=train)
    present = presence(streams)
    x = jnp.concatenate([streams[m].pooled for m in sorted(streams)], axis=-1)
    h = nn.gelu(dense(self.mlp_dim, None, "mlp", "gate_hidden", self.dtype)(x))
    scores = dense(len(streams), "mlp", None, "gate_scores", self.dtype)(h)
    weights = masked_softmax(scores, present)
    self.sow("intermediates", "modality_weights", weights)
    return pooled_fused(streams, weighted_pool(streams, weights), weights)
