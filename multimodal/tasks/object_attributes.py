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
from multimodal.models.scene_parser import cell_centers, distinct_objects
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
    min_separation: None: a cell read as holding an object reads the object whose center
      lies in it (and no other). A distance (a fraction of the image side, at most the least
      distance between two objects' centers): of cells whose read centers lie closer than
      that, only the likeliest is kept (`scene_parser.distinct_objects`), and a true object
      is found by the kept cell whose center lies nearest to its own, if closer than that
      (an object on a cell border may be read from the cell beside its center's).
  """

  def __init__(self, prefix: str = "grid_", threshold: float = 0.5, offset_weight: float = 1.0,
               min_separation: float | None = None):
    if not 0.0 < threshold < 1.0:
      raise ValueError(f"threshold must lie in (0, 1); got {threshold}.")
    if min_separation is not None and not 0.0 < min_separation < 1.0:
      raise ValueError(f"min_separation is a fraction of the image side in (0, 1), or None; "
                       f"got {min_separation}.")
    self.prefix = prefix
    self.threshold = threshold
    self.offset_weight = offset_weight
    self.min_separation = min_separation

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
    is_object = distinct_objects(outputs["object"], cell_centers(outputs["offset"]),
                                 self.threshold, self.min_separation)
    reading = {"is_object": is_object, "offset": outputs["offset"],
               **{name: jnp.argmax(outputs[name], axis=-1).astype(jnp.int32)
                  for name in ATTRIBUTES}}
    if self.prefix + "object" not in batch:  # Generated images: no targets to count against.
      return reading
    truth = self._target(batch, "object") > 0
    # distance[b, i, j]: from true object i's center to the center read in cell j.
    distance = jnp.linalg.norm(cell_centers(self._target(batch, "offset"))[:, :, None]
                               - cell_centers(outputs["offset"])[:, None, :], axis=-1)
    cells = is_object.shape[-1]
    reads_it = (jnp.eye(cells, dtype=bool)[None] if self.min_separation is None
                else distance < self.min_separation)
    reads_it = reads_it & truth[:, :, None] & is_object[:, None, :]
    found = jnp.any(reads_it, axis=-1)  # [B, N] per true object's cell
    nearest = jnp.argmin(jnp.where(reads_it, distance, jnp.inf), axis=-1)  # its reading's cell
    read_at = lambda values: jnp.take_along_axis(values, nearest, axis=1)
    count = lambda mask: jnp.sum(mask, axis=-1).astype(jnp.float32)
    right = {name: found & (read_at(reading[name]) == self._target(batch, name))
             for name in ATTRIBUTES}
    all_right = found
    for mask in right.values():
      all_right = all_right & mask
    image_px = batch["image"].shape[1] if "image" in batch else 1.0
    error = jnp.take_along_axis(distance, nearest[..., None], axis=-1)[..., 0] * image_px
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
