"""Reads a Shapes scene off an image: for each cell of the image encoder's token grid, whether
an object's center lies there, that object's attributes and where in the cell its center is.

A single-stage detector in the YOLO manner, on a grid that is the ViT's patch grid (one token
per cell), so the targets come from the `object_grid` preprocessing op with no matching step.
Two uses:
  - model `scene_parser`: the attribute classifier that judges generated images
    (text-to-image), trained with the `object_attributes` task;
  - encoder `object_tokens`: the same module as an image encoder whose tokens are the cells
    that hold an object (the others masked out, as padding): region features from a
    detector, as ViLBERT / LXMERT / UNITER take them, so that a reasoning model attends to a
    few objects instead of every patch. `config.init.load=("image_encoder",)` starts it from a
    scene-parser run (the paths are the same).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.data.shapes.scenes import COLORS, SHAPES, SIZES
from multimodal.models.features import Features, masked_mean
from multimodal.models.fusion_vqa import compute_dtype
from multimodal.models.registry import ENCODERS, MODELS
from multimodal.models.transformer import dense, layer_norm

Spec = dict[str, Any]
ATTRIBUTE_SIZES = {"shape": len(SHAPES), "color": len(COLORS), "size": len(SIZES)}


@ENCODERS.register("object_tokens")
class SceneReader(nn.Module):
  """Attributes:
    image: the ViT's `{'type': name, ...settings}` spec; it must give one token per grid cell
      in row-major order (pool_type="none").
    attributes: attribute name -> number of values (None: `ATTRIBUTE_SIZES`).
    hidden_dim: width of the MLP shared by the per-cell heads.
    threshold: object probability above which a cell's token is kept (as an encoder).
    tokens: what an object token holds (as an encoder): "features" (the ViT's token), or
      "reading" (what the parser read there: each attribute's probabilities and the center's
      position as sin-cos features, as OSCAR gives its model the detector's object tags).
    max_tokens: as an encoder, hand on only this many tokens: those of the cells most likely
      to hold an object, in row-major order (masked as padding where fewer pass the
      threshold), as detector-based models keep a fixed number of regions (36 in bottom-up
      attention); the model after it then reads a sequence that long instead of the grid's.
      None: every cell. Set it at or above the most objects a scene holds.
    min_separation: as an encoder, cells whose read centers lie closer than this (a fraction
      of the image side) read one object, and only the likeliest is kept (`distinct_objects`);
      None: every cell above the threshold.
    dtype: compute dtype.
  """
  image: Spec
  attributes: dict[str, int] | None = None  # None: the Shapes world's
  hidden_dim: int = 256
  threshold: float = 0.5
  tokens: str = "features"
  max_tokens: int | None = None
  min_separation: float | None = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def read(self, images: jax.Array, *, train: bool) -> tuple[Features, dict[str, jax.Array]]:
    """images float[B, H, W, 3] -> (the ViT's features [B, N, D], the reading: object
    float32[B, N] logits, offset float32[B, N, 2] in [0, 1], per attribute float32[B, N, V]
    logits); N: the grid's cells."""
    features = ENCODERS.build(self.image, dtype=self.dtype, name="vit")(images, train=train)
    x = layer_norm("ln", self.dtype)(features.tokens)
    x = nn.gelu(dense(self.hidden_dim, "embed", "mlp", "hidden", self.dtype)(x))
    out = lambda n, name: dense(n, "mlp", None, name, self.dtype)(x).astype(jnp.float32)
    reading = {"object": out(1, "object")[..., 0], "offset": jax.nn.sigmoid(out(2, "offset"))}
    reading.update({name: out(n, name)
                    for name, n in (self.attributes or ATTRIBUTE_SIZES).items()})
    return features, reading

  def __call__(self, images: jax.Array, *, train: bool) -> Features:
    """images float[B, H, W, 3] -> tokens [B, N, D] (`tokens`; N: the grid's cells, or
    max_tokens), masked to the cells read as holding an object; pooled: their mean."""
    features, reading = self.read(images, train=train)
    mask = features.mask & distinct_objects(reading["object"], cell_centers(reading["offset"]),
                                            self.threshold, self.min_separation)
    if self.tokens == "features":
      tokens = features.tokens
    elif self.tokens == "reading":
      tokens = reading_tokens(reading, list(self.attributes or ATTRIBUTE_SIZES))
      tokens = tokens.astype(features.tokens.dtype)
    else:
      raise ValueError(f"Unknown object token kind {self.tokens!r}; use 'features' or "
                       "'reading'.")
    if self.max_tokens is not None and self.max_tokens < mask.shape[1]:
      tokens, mask = likeliest_cells(tokens, mask, reading["object"], self.max_tokens)
    return Features(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))


def likeliest_cells(tokens: jax.Array, mask: jax.Array, object_logits: jax.Array, k: int
                    ) -> tuple[jax.Array, jax.Array]:
  """The k cells with the highest object logits among the kept ones, in their grid order:
  tokens float[B, N, D], mask bool[B, N], logits float[B, N] -> (float[B, k, D], bool[B, k])."""
  if k < 1:
    raise ValueError(f"max_tokens must be at least 1, got {k}.")
  score = jnp.where(mask, object_logits, -jnp.inf)
  _, cells = jax.lax.top_k(score, k)
  cells = jnp.sort(cells, axis=1)  # row-major order, as without the limit
  return (jnp.take_along_axis(tokens, cells[..., None], axis=1),
          jnp.take_along_axis(mask, cells, axis=1))


def cell_centers(offset: jax.Array) -> jax.Array:
  """offset float[B, N, 2] (where in each cell of a square grid, cells in row-major order, the
  center lies, in [0, 1]) -> the centers float[B, N, 2] as (x, y) in [0, 1] image coordinates."""
  cells = offset.shape[1]
  grid = int(round(cells ** 0.5))
  rows, cols = jnp.divmod(jnp.arange(cells), grid)
  return (jnp.stack([cols, rows], axis=-1) + offset) / grid


def distinct_objects(object_logits: jax.Array, centers: jax.Array, threshold: float,
                     min_separation: float | None) -> jax.Array:
  """The cells read as holding an object, one cell per object: logits float[B, N], centers
  float[B, N, 2] -> bool[B, N].

  A cell holds an object when its probability is above `threshold`. An object whose center
  lies near a cell border is often read from both cells, each with a middling probability;
  with `min_separation` (the least distance between two objects' centers that the scenes
  allow, or less; a fraction of the image side) cells are visited from the likeliest down
  and one is dropped when its center lies closer than that to a cell already kept (greedy
  non-maximum suppression on the centers). This lets the threshold sit low, so that objects
  read with little confidence are not missed, without counting anything twice."""
  candidate = jax.nn.sigmoid(object_logits) > threshold
  if min_separation is None:
    return candidate
  order = jnp.argsort(-object_logits, axis=1)  # likeliest first
  candidate = jnp.take_along_axis(candidate, order, axis=1)
  centers = jnp.take_along_axis(centers, order[..., None], axis=1)
  close = jnp.linalg.norm(centers[:, :, None] - centers[:, None, :], axis=-1) < min_separation

  def visit(i: jax.Array, keep: jax.Array) -> jax.Array:  # keep: only cells before i set
    return keep.at[:, i].set(candidate[:, i] & ~jnp.any(keep & close[:, i], axis=-1))

  keep = jax.lax.fori_loop(0, candidate.shape[1], visit, jnp.zeros_like(candidate))
  return jnp.take_along_axis(keep, jnp.argsort(order, axis=1), axis=1)


def reading_tokens(reading: dict[str, jax.Array], attributes: list[str],
                   frequencies: tuple[float, ...] = (1.0, 2.0, 4.0)) -> jax.Array:
  """A reading -> float32[B, N, sum(values) + 4 * len(frequencies)]: per cell, each
  attribute's probabilities, then sin and cos of pi * f * x and of pi * f * y for the center
  (x, y) in [0, 1] image coordinates (the cell's place plus the predicted offset)."""
  offset = reading["offset"]
  center = cell_centers(offset)  # [B, N, 2] as (x, y)
  angles = jnp.pi * center[..., None] * jnp.asarray(frequencies)  # [B, N, 2, F]
  position = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  probabilities = [jax.nn.softmax(reading[name], axis=-1) for name in attributes]
  return jnp.concatenate([*probabilities, position.reshape(*offset.shape[:2], -1)], axis=-1)


@MODELS.register("scene_parser")
class SceneParser(nn.Module):
  """Attributes:
    image, hidden_dim: as `SceneReader`'s.
    attributes: attribute name -> number of values (from the task).
    dtype: compute dtype name; parameters stay float32.
  Batch key: image float[B, H, W, 3].
  """
  image: Spec
  attributes: dict[str, int]
  hidden_dim: int = 256
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    """-> `SceneReader.read`'s reading (object, offset, one entry per attribute)."""
    reader = SceneReader(self.image, self.attributes, self.hidden_dim,
                         dtype=compute_dtype(self.dtype), name="image_encoder")
    return reader.read(batch["image"], train=train)[1]
