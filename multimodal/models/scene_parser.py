"""Reads a Shapes scene off an image: for each cell of the image encoder's token grid, whether
an object's center lies there, that object's attributes and where in the cell its center is.

A single-stage detector in the YOLO manner, on a grid that is the ViT's patch grid (one token
per cell), so the targets come from the `object_grid` preprocessing op with no matching step.
It serves as the attribute classifier that judges generated images (text-to-image), and as
dense, cheap supervision that pretrains an image encoder for the reasoning tasks (its
`image_encoder` params load into `fusion_vqa` / `fusion_nlvr` with `config.init.load`).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.fusion_vqa import compute_dtype
from multimodal.models.registry import ENCODERS, MODELS
from multimodal.models.transformer import dense, layer_norm

Spec = dict[str, Any]


@MODELS.register("scene_parser")
class SceneParser(nn.Module):
  """Attributes:
    image: the image encoder's `{'type': name, ...settings}` spec; it must return one token
      per grid cell in row-major order (a ViT with pool_type="none").
    attributes: attribute name -> number of values (from the task), e.g. {"shape": 3, ...}.
    hidden_dim: width of the MLP shared by the per-cell heads.
    dtype: compute dtype name; parameters stay float32.
  Batch key: image float[B, H, W, 3].
  """
  image: Spec
  attributes: dict[str, int]
  hidden_dim: int = 256
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    """-> object float32[B, N] (logit that a center lies in the cell), offset float32[B, N, 2]
    (the center within the cell, in [0, 1]), and for each attribute float32[B, N, values]
    logits; N = the encoder's token count."""
    dtype = compute_dtype(self.dtype)
    tokens = ENCODERS.build(self.image, dtype=dtype, name="image_encoder")(
        batch["image"], train=train).tokens
    x = layer_norm("ln", dtype)(tokens)
    x = nn.gelu(dense(self.hidden_dim, "embed", "mlp", "hidden", dtype)(x))
    out = lambda n, name: dense(n, "mlp", None, name, dtype)(x).astype(jnp.float32)
    outputs = {"object": out(1, "object")[..., 0],
               "offset": jax.nn.sigmoid(out(2, "offset"))}
    outputs.update({name: out(n, name) for name, n in self.attributes.items()})
    return outputs
