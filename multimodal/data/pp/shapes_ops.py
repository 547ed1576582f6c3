"""Preprocessing ops that read the Shapes datasets' structured scene features."""
from __future__ import annotations

import tensorflow as tf

from multimodal.data.pp.registry import PP_OPS, Example, PpFn
from multimodal.data.shapes.scenes import COLORS, SHAPES


@PP_OPS.register("single_object_kind")
def single_object_kind(key: str = "objects", out_key: str = "label") -> PpFn:
  """A shapes_captions scene's `objects` -> `out_key` int32[]: the kind index of its object
  (`captions.kinds()` order) when the scene holds exactly one object, else -1."""

  def apply(example: Example) -> Example:
    objects = example[key]
    kind = (objects["size"] * len(COLORS) + objects["color"]) * len(SHAPES) + objects["shape"]
    first = tf.concat([tf.cast(kind, tf.int32), [-1]], axis=0)[0]  # -1 for no objects.
    label = tf.where(tf.size(kind) == 1, first, -1)
    return {**example, out_key: label}

  return apply


@PP_OPS.register("object_grid")
def object_grid(grid: int, key: str = "objects", prefix: str = "grid_") -> PpFn:
  """A scene's `objects` (each with shape, color, size and its center x, y in [0, 1], y
  down) -> per-cell targets on a `grid` x `grid` partition of the image, cells in row-major
  order (the order of a ViT's patch tokens):

    {prefix}object int32[grid²]: 1 in the cell that holds an object's center, else 0;
    {prefix}shape, {prefix}color, {prefix}size int32[grid²]: that object's attributes (0
      where no object);
    {prefix}offset float32[grid², 2]: the center's (x, y) within its cell, in [0, 1).

  Objects of the Shapes scenes lie at least 12 px apart at 64 px, so at cells of up to 12 px
  no two centers share a cell (the last object written would win).
  """
  if grid < 1:
    raise ValueError(f"object_grid: grid must be at least 1; got {grid}.")

  def apply(example: Example) -> Example:
    objects = example[key]
    xy = tf.stack([objects["x"], objects["y"]], axis=-1) * grid  # [K, 2] in cells
    cell = tf.clip_by_value(tf.cast(tf.floor(xy), tf.int32), 0, grid - 1)
    index = (cell[:, 1] * grid + cell[:, 0])[:, None]  # row-major: row = y
    num_cells = grid * grid

    def scatter(values: tf.Tensor, dtype: tf.DType, inner: tuple[int, ...] = ()) -> tf.Tensor:
      return tf.scatter_nd(index, tf.cast(values, dtype), (num_cells, *inner))

    return {**example,
            f"{prefix}object": scatter(tf.ones_like(objects["shape"]), tf.int32),
            f"{prefix}shape": scatter(objects["shape"], tf.int32),
            f"{prefix}color": scatter(objects["color"], tf.int32),
            f"{prefix}size": scatter(objects["size"], tf.int32),
            f"{prefix}offset": scatter(xy - tf.cast(cell, tf.float32), tf.float32, (2,))}

  return apply
