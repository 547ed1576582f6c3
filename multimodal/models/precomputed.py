"""An image encoder whose work was done before training: the batch already holds its tokens.

A frozen detector's reading of every image, computed once (`data/object_features.py`), as
LXMERT, UNITER and OSCAR read bottom-up-attention region features extracted offline, so that
a training step runs the reasoning model alone instead of the same frozen encoder on the same
images epoch after epoch.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.features import Features, masked_mean
from multimodal.models.registry import ENCODERS


@ENCODERS.register("precomputed")
class Precomputed(nn.Module):
  """Attributes:
    dtype: compute dtype of the tokens handed on.
  No params: the features come with the batch.
  """
  dtype: jnp.dtype = jnp.float32

  def __call__(self, tokens: jax.Array, *, train: bool) -> Features:
    """tokens float[B, N, D], a padding token all zeros -> Features (mask: the tokens with a
    non-zero entry; pooled: their mean)."""
    del train
    if tokens.ndim != 3:
      raise ValueError(f"Precomputed features must be float[B, N, D]; got shape "
                       f"{tokens.shape} (is the pipeline still decoding images?).")
    mask = jnp.any(tokens != 0, axis=-1)
    tokens = tokens.astype(self.dtype)
    return Features(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))
