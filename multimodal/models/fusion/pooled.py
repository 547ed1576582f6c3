"""Fusion of pooled vectors: each modality becomes one vector (its own blocks, a final
LayerNorm, the masked mean), and the vectors are combined by a weighted sum, an MLP over their
concatenation, or per-example gates."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.aux_losses import add_aux_loss
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
  Dense over the concatenated pooled vectors) scores each modality, and a softmax over the
  modalities an example has weighs their pooled vectors.

  `granularity="feature"` (the gated multimodal unit of Arevalo et al. 2017, for any number
  of modalities): one softmax per feature, weights float[B, M, width], so each feature of the
  fused vector takes its own mix. `granularity="modality"`: one weight per modality, float[B,
  M], shared by all features. Either way `Fused.modality_weights` and the sown
  `intermediates/.../modality_weights` are float[B, M] (sorted modality names; for features,
  the mean over them), summing to 1 over the modalities present.

  The score layer starts at zero, so every gate starts uniform. On Shapes VQA (2 layers of
  width 128, 1200 steps) modality gates chose one modality per example: the image weight fell
  to 4e-4 with no auxiliary loss, and with the balance loss the gates sent colour, shape and
  size questions to the text alone and the rest to the image alone; both stayed at the
  text-only prior, since a question needs the image and the text at once.

  Attributes:
    granularity: "feature" or "modality" (see above).
    balance_loss_weight: weight of an auxiliary loss (`gate_balance`, see `balance_loss`)
      that keeps the batch-average modality weights near uniform, leaving each example free
      to differ (the load-balancing loss of mixture-of-experts routers); 0: none.
  """
  granularity: str = "feature"
  balance_loss_weight: float = 0.0

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[m]: [B, T_m, D_m] -> Fused(tokens [B, M, width], pooled [B, width])."""
    require(features, (), "gated")
    if self.granularity not in ("feature", "modality"):
      raise ValueError(f"gated: granularity must be 'feature' or 'modality', got "
                       f"{self.granularity!r}.")
    streams = self.pooled_streams(features, train=train)
    names = sorted(streams)
    present = presence(streams)                                    # [B, M]
    pooled = jnp.stack([streams[m].pooled for m in names], axis=1)  # [B, M, width]
    h = nn.gelu(dense(self.mlp_dim, None, "mlp", "gate_hidden", self.dtype)(
        pooled.reshape(pooled.shape[0], -1)))
    per_modality = self.granularity == "modality"
    gates = len(names) if per_modality else len(names) * self.width
    scores = nn.Dense(gates, dtype=self.dtype, name="gate_scores",
                      kernel_init=p.init(nn.initializers.zeros, "mlp", None),
                      bias_init=p.init(nn.initializers.zeros, None))(h)
    scores = scores.reshape(pooled.shape[0], len(names), 1 if per_modality else self.width)
    weights = masked_softmax(scores, present[..., None], axis=1)   # [B, M, 1 or width]
    fused = jnp.sum(weights.astype(pooled.dtype) * pooled, axis=1)
    modality_weights = jnp.mean(weights, axis=-1)                  # [B, M]
    self.sow("intermediates", "modality_weights", modality_weights)
    if self.balance_loss_weight:
      add_aux_loss(self, "gate_balance",
                   self.balance_loss_weight * balance_loss(modality_weights, present))
    return pooled_fused(streams, fused, modality_weights)

def balance_loss(weights: jax.Array, present: jax.Array) -> jax.Array:
  """M * sum_m (mean_b weights[b, m] - mean_b uniform[b, m])^2, where uniform spreads each
  example's weight evenly over the modalities it has: 0 when the batch uses every modality
  as much as a uniform gate would, up to about 1 when one modality takes every weight.

  weights: float[B, M]; present: bool[B, M] -> float32 scalar.
  """
  present = present.astype(jnp.float32)
  uniform = present / jnp.maximum(jnp.sum(present, axis=1, keepdims=True), 1.0)
  gap = jnp.mean(weights.astype(jnp.float32), axis=0) - jnp.mean(uniform, axis=0)
  return weights.shape[1] * jnp.sum(gap ** 2)
