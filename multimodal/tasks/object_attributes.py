"""Reading every object of a Shapes scene off its image (the `scene_parser` model): per grid
cell, is an object's center there, and if so its shape, color, size and exact position.

Targets come from the `object_grid` preprocessing op (batch keys `grid_object`, `grid_shape`,
`grid_color`, `grid_size`, `grid_offset`). Predictions count, per image, what a detection
evaluator needs (objects found, missed, invented; attributes right; position error), and
`decode_objects` turns them into object lists (what judges a generated image).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from multimodal.data.shapes.scenes import COLORS, SHAPES, SIZES
from multimodal.tasks.registry import TASKS, Batch

ATTRIBUTES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "color": COLORS, "size": SIZES}


@TASKS.register("object_attributes")
class ObjectAttributesTask:
  """Loss: sigmoid BCE of `object` over all cells + softmax CE of each attribute and squared
  error of the offset over the cells that hold an object (each averaged over the objects).

  Args:
    prefix: the batch keys' prefix (`object_grid`'s).
    threshold: object probability above which a cell counts as holding an object.
    offset_weight: weight of the offset loss (offsets are in cells, in [0, 1]).
  """

  def __init__(self, prefix: str = "grid_", threshold: float = 0.5, offset_weight: float = 1.0):
    if not 0.0 < threshold < 1.0:
      raise ValueError(f"threshold must lie in (0, 1); got {threshold}.")
    self.prefix = prefix
    self.threshold = threshold
    self.offset_weight = offset_weight

  def model_kwargs(self) -> dict[str, Any]:
    return dict(attributes={name: len(values) for name, values in ATTRIBUTES.items()})

  def _target(self, batch: Batch, name: str) -> jax.Array:
    key = self.prefix + name
    if key not in batch:
      raise KeyError(f"The object_attributes task reads batch[{key!r}] (from the object_grid "
                     f"op); the batch has {sorted(batch)}.")
    return batch[key]

  def loss(self, outputs: dict[str, jax.Array], batch: Batch
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """outputs: the scene parser's (object float[B, N], offset float[B, N, 2], logits per
    attribute float[B, N, V]) -> (loss, metrics of the training batch)."""
    is_object = self._target(batch, "object").astype(jnp.float32)  # [B, N]
    num_objects = jnp.maximum(jnp.sum(is_object), 1.0)
    per_object = lambda values: jnp.sum(values * is_object) / num_objects
    object_loss = jnp.mean(optax.sigmoid_binary_cross_entropy(outputs["object"], is_object))
    attribute_losses = {
        name: per_object(optax.softmax_cross_entropy_with_integer_labels(
            outputs[name], self._target(batch, name)))
        for name in ATTRIBUTES}
    offset_loss = per_object(jnp.sum(jnp.square(
        outputs["offset"] - self._target(batch, "offset")), axis=-1))
    loss = object_loss + sum(attribute_losses.values()) + self.offset_weight * offset_loss
    counts = self.predict(outputs, batch)
    metrics = {"object_loss": object_loss, "offset_loss": offset_loss,
               "recall": jnp.sum(counts["found"]) / jnp.maximum(jnp.sum(counts["objects"]), 1),
               "scene_accuracy": jnp.mean(counts["correct"])}
    return loss, {**metrics, **{f"{k}_loss": v for k, v in attribute_losses.items()}}

  def predict(self, outputs: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
    """Per image: the per-cell reading (`is_object` bool[B, N], each attribute int32[B, N],
    `offset` float32[B, N, 2]) and, against the targets, counts float32[B]: `objects` (true
    objects), `detected` (cells read as objects), `found` (true objects read as objects),
    `{attribute}_right` and `all_right` (found with that / every attribute right),
    `position_error` (summed over the found objects, in pixels), and `correct` (1 when every
    object is found with every attribute right and nothing else is read)."""
    is_object = jax.nn.sigmoid(outputs["object"]) > self.threshold
    reading = {"is_object": is_object, "offset": outputs["offset"],
               **{name: jnp.argmax(outputs[name], axis=-1).astype(jnp.int32)
                  for name in ATTRIBUTES}}
    if self.prefix + "object" not in batch:  # Generated images: no targets to count against.
      return reading
    truth = self._target(batch, "object") > 0
    found = truth & is_object
    count = lambda mask: jnp.sum(mask, axis=-1).astype(jnp.float32)
    right = {name: found & (reading[name] == self._target(batch, name)) for name in ATTRIBUTES}
    all_right = found
    for mask in right.values():
      all_right = all_right & mask
    grid = int(round(np.sqrt(is_object.shape[-1])))
    cell_px = batch["image"].shape[1] / grid if "image" in batch else 1.0
    error = jnp.linalg.norm(outputs["offset"] - self._target(batch, "offset"), axis=-1) * cell_px
    return {**reading, "objects": count(truth), "detected": count(is_object),
            "found": count(found), "all_right": count(all_right),
            **{f"{name}_right": count(mask) for name, mask in right.items()},
            "position_error": jnp.sum(error * found, axis=-1),
            "correct": ((count(all_right) == count(truth))
                        & (count(is_object) == count(truth))).astype(jnp.float32)}


def decode_objects(reading: dict[str, np.ndarray], image_size: int) -> list[list[dict[str, Any]]]:
  """A batch of `predict` readings (host arrays) -> per image, the objects read: dicts with
  shape, color, size (names) and the center x, y in pixels (y down), in row-major cell order."""
  is_object = np.asarray(reading["is_object"])
  grid = int(round(np.sqrt(is_object.shape[-1])))
  cell_px = image_size / grid
  scenes = []
  for b in range(is_object.shape[0]):
    objects = []
    for cell in np.flatnonzero(is_object[b]):
      row, col = divmod(int(cell), grid)
      dx, dy = np.asarray(reading["offset"][b, cell], np.float64)
      objects.append({**{name: ATTRIBUTES[name][int(reading[name][b, cell])]
                         for name in ATTRIBUTES},
                      "x": (col + dx) * cell_px, "y": (row + dy) * cell_px})
    scenes.append(objects)
  return scenes
