"""How well the scene parser reads Shapes scenes: detection precision and recall, attribute
accuracy, position error, counts and whole scenes read right, over one split."""
from __future__ import annotations

from typing import Any

import numpy as np

from multimodal.evaluators import common
from multimodal.evaluators.registry import EVALUATORS
from multimodal.tasks.object_attributes import ATTRIBUTES

# The per-image counts `ObjectAttributesTask.predict` returns against the targets.
COUNTS = ("objects", "detected", "found", "all_right", "position_error", "correct",
          *(f"{name}_right" for name in ATTRIBUTES))


def summarize(totals: dict[str, float], count_exact: float, num_images: int
              ) -> dict[str, float]:
  """Split-level metrics from the counts summed over the images."""
  ratio = lambda a, b: a / b if b else 0.0
  metrics = {
      "precision": ratio(totals["found"], totals["detected"]),
      "recall": ratio(totals["found"], totals["objects"]),
      # Objects found with every attribute right, of all true objects: the headline number.
      "object_accuracy": ratio(totals["all_right"], totals["objects"]),
      "position_error_px": ratio(totals["position_error"], totals["found"]),
      "count_accuracy": ratio(count_exact, num_images),
      "scene_accuracy": ratio(totals["correct"], num_images),
      "num_images": float(num_images)}
  metrics.update({f"{name}_accuracy": ratio(totals[f"{name}_right"], totals["found"])
                  for name in ATTRIBUTES})  # among the objects found
  return metrics


def summarize_rows(rows: np.ndarray) -> dict[str, float]:
  """Split-level metrics from per-image counts: rows float[images, len(COUNTS)]."""
  column = dict(zip(COUNTS, rows.astype(np.float64).T))
  totals = {k: float(v.sum()) for k, v in column.items()}
  count_exact = float(np.sum(column["detected"] == column["objects"]))
  return summarize(totals, count_exact, len(rows))


@EVALUATORS.register("object_attributes")
class ObjectAttributesEvaluator(common.SplitEvaluator):
  """Reports precision and recall of object centers (a cell read as holding an object),
  `object_accuracy` (true objects found with shape, color and size right), the accuracy of
  each attribute among the objects found, `position_error_px` (center error of the objects
  found), `count_accuracy` (images whose object count is read exactly) and `scene_accuracy`
  (images read entirely right, nothing invented)."""

  def run(self, variables: Any, step: int) -> dict[str, float]:
    del step
    rows = []
    for batch, predictions in common.predicted_batches(
        self.context, variables, split=self.split, pp=self.pp, batch_size=self.batch_size):
      valid = batch["_valid"]
      rows.append(np.stack([predictions[k][valid] for k in COUNTS], axis=-1))
    rows = common.allgather_rows(np.concatenate(rows).astype(np.float64))
    if not len(rows):
      raise ValueError(f"{self.name}: no images were evaluated.")
    return summarize_rows(rows)
