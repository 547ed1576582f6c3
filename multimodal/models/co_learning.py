"""Co-learning between two modalities' embeddings: the projections that DCCA and the
contrastive losses compare, used as a model's whole objective (`paired_embeddings`) or as an
auxiliary loss beside any task (`CoLearningLoss`, e.g. `fusion_classifier(co_learning=...)`).

Each modality's pooled encoder vector (the encoder's own pooling, or the mean of its real
tokens) is projected to `embed_dim`; for a contrastive loss the embeddings are L2-normalised
and scored with a learned temperature and bias (as `two_towers`), the two modalities of one
example a positive pair and every other pairing in the batch a negative.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.losses import contrastive, dcca
from multimodal.models import aux_losses
from multimodal.models import partitioning as p
from multimodal.models.features import Features, pooled_vector
from multimodal.models.two_towers import l2_normalize, temperature_and_bias

LOSSES = ("dcca", "sigmoid", "softmax")  # softmax: CLIP's; sigmoid: SigLIP's


def project(module: nn.Module, features: dict[str, Features], embed_dim: int, dtype: Any,
            contrastive_scores: bool, temperature_init: float = 2.302585,
            bias_init: float = -10.0) -> dict[str, jax.Array]:
  """{modality: float32[B, embed_dim]} (params `{modality}_projection` of `module`; call in its
  compact method): L2-normalised, and with "temperature" and "bias" float32[] added, when
  `contrastive_scores` (CCA is invariant to each view's scale, so DCCA keeps them as
  projected)."""
  out = {name: nn.Dense(embed_dim, dtype=dtype, name=f"{name}_projection",
                        kernel_init=p.init(nn.initializers.lecun_normal(), "embed", None),
                        bias_init=p.init(nn.initializers.zeros, None))(pooled_vector(f))
         .astype(jnp.float32)
         for name, f in features.items()}
  if not contrastive_scores:
    return out
  out = {name: l2_normalize(x) for name, x in out.items()}
  out["temperature"], out["bias"] = temperature_and_bias(module, temperature_init, bias_init)
  return out


def pair_loss(loss: str, x: jax.Array, y: jax.Array, temperature: jax.Array | None = None,
              bias: jax.Array | None = None, ridge: float = 1e-3) -> jax.Array:
  """float32[]: `loss` between embeddings float[B, D] x and y (row i of each: one example)."""
  if loss == "dcca":
    return dcca.dcca_loss(x, y, ridge=ridge)
  if loss == "sigmoid":
    return contrastive.sigmoid_loss(x, y, temperature, bias)
  if loss == "softmax":
    return contrastive.softmax_loss(x, y, temperature)
  raise ValueError(f"Unknown co-learning loss {loss!r}; choose one of {LOSSES}.")


class CoLearningLoss(nn.Module):
  """Adds weight * `loss` between two modalities' projected embeddings to the training loss
  (auxiliary loss "co_learning_{loss}"); evaluation computes nothing.

  Attributes:
    modalities: the two modalities compared (in this order).
    loss: "dcca", "sigmoid" (SigLIP) or "softmax" (CLIP).
    weight: the term's weight beside the task's loss.
    embed_dim: the projections' width (for dcca keep it well below the batch size).
    ridge: dcca's covariance ridge.
  """
  modalities: tuple[str, str]
  loss: str = "sigmoid"
  weight: float = 0.1
  embed_dim: int = 16
  ridge: float = 1e-3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: dict[str, Features]) -> None:
    """features: {modality: Features} with both `modalities` (others are ignored)."""
    if len(self.modalities) != 2 or len(set(self.modalities)) != 2:
      raise ValueError(f"co_learning compares two different modalities; got "
                       f"{tuple(self.modalities)}.")
    missing = [m for m in self.modalities if m not in features]
    if missing:
      raise ValueError(f"co_learning modalities {missing} are not among the model's "
                       f"{sorted(features)}.")
    if self.loss not in LOSSES:
      raise ValueError(f"Unknown co-learning loss {self.loss!r}; choose one of {LOSSES}.")
    if not self.is_mutable_collection(aux_losses.COLLECTION):
      return  # Evaluation: the projections and the loss are not needed.
    first, second = self.modalities
    out = project(self, {m: features[m] for m in self.modalities}, self.embed_dim,
                  self.dtype, contrastive_scores=self.loss != "dcca")
    value = pair_loss(self.loss, out[first], out[second], out.get("temperature"),
                      out.get("bias"), ridge=self.ridge)
    aux_losses.add_aux_loss(self, f"co_learning_{self.loss}", self.weight * value)
