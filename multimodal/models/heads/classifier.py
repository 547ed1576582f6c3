"""Classifier head over a fused vector: the VQA answer classifier and friends."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.features import Fused
from multimodal.models.heads.registry import HEADS
from multimodal.models.transformer import dense, layer_norm


@HEADS.register("classifier")
class Classifier(nn.Module):
  """LayerNorm -> Dense -> GELU -> dropout -> Dense to `num_classes` logits.

  As a VQA head the classes are the answer vocabulary: trained with softmax cross-entropy for
  single answers or sigmoid BCE over soft scores (the task's `loss` setting).
  """
  num_classes: int
  hidden_dim: int = 256
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, fused: Fused, *, train: bool) -> jax.Array:
    """fused.pooled: float[B, D] -> logits float32[B, num_classes]."""
    x = layer_norm("ln", self.dtype)(fused.pooled)
    x = nn.gelu(dense(self.hidden_dim, "embed", "mlp", "hidden", self.dtype)(x))
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    return dense(self.num_classes, "mlp", "classes", "logits", self.dtype)(x).astype(jnp.float32)
