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
