"""How a trained scene parser's readings are decoded into objects: the object threshold, with
and without dropping duplicate readings of one object (`min_separation`).

  python -m multimodal.benchmarks.scene_parser_decoding --workdir=/tmp/scene_parser \
      [--split=validation] [--thresholds=0.5,0.4,0.3,0.2,0.1] [--min_separation=0.09375]

Runs the parser of a configs/shapes_scene_parser.py workdir (latest checkpoint) once over the
split and scores the same outputs with `ObjectAttributesTask.predict` under each setting,
with the evaluator's metrics (`evaluators/object_attributes.summarize_rows`). Prints a table and
writes WORKDIR/decoding.md and decoding.json. Nothing is trained: a setting that reads more
scenes right is free to use (config_utils.SHAPES_OBJECT_THRESHOLD, SHAPES_MIN_SEPARATION).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from absl import app, flags  # noqa: E402
from etils import epath  # noqa: E402

from multimodal import config_utils  # noqa: E402
from multimodal.data import pipeline  # noqa: E402
from multimodal.data.object_features import load_parser  # noqa: E402
from multimodal.evaluators.object_attributes import COUNTS, summarize_rows  # noqa: E402
from multimodal.models.scene_parser import SceneReader  # noqa: E402
from multimodal.tasks.object_attributes import ObjectAttributesTask  # noqa: E402
from multimodal.training import workdir_config  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A configs/shapes_scene_parser.py workdir.")
_SPLIT = flags.DEFINE_string("split", "validation", "The split to read.")
_THRESHOLDS = flags.DEFINE_list("thresholds", ["0.5", "0.4", "0.3", "0.2", "0.1"],
                                "Object probability thresholds to score.")
_MIN_SEPARATION = flags.DEFINE_float("min_separation", config_utils.SHAPES_MIN_SEPARATION,
                                     "The duplicate-dropping distance (image fraction).")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 0, "Read only this many images (0: all).")
METRICS = ("scene_accuracy", "count_accuracy", "object_accuracy", "precision", "recall",
           "position_error_px")


def parser_outputs(workdir: str, split: str, max_images: int
                   ) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
  """The parser's outputs (`SceneReader.read`'s reading) and the batches' targets, per batch."""
  config = workdir_config.read(workdir)
  reader, params, _ = load_parser(workdir, max_tokens=1, threshold=0.5)
  read = jax.jit(lambda images: reader.apply({"params": params}, images, train=False,
                                             method=SceneReader.read)[1])
  builder = tfds.builder(config["data"]["name"], config=config["data"].get("config"))
  ds = pipeline.make_dataset(builder, split=split, pp=config["pp_train"], batch_size=250,
                             train=False)
  if max_images:
    ds = ds.unbatch().take(max_images).batch(250)
  outputs, batches = [], []
  for batch in tfds.as_numpy(ds):
    outputs.append(jax.device_get(read(batch["image"])))
    batches.append(batch)
  return outputs, batches


def score(task: ObjectAttributesTask, outputs: list[dict[str, np.ndarray]],
          batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
  """The evaluator's metrics of the task's predictions over all batches."""
  rows = np.concatenate([
      np.stack([np.asarray(predictions[k]) for k in COUNTS], axis=-1)
      for predictions in (jax.device_get(task.predict(o, b)) for o, b in zip(outputs, batches))])
  return summarize_rows(rows)


def table(results: list[dict[str, Any]]) -> str:
  lines = ["| threshold | min_separation | " + " | ".join(METRICS) + " |",
           "|---:|---:|" + "---:|" * len(METRICS)]
  for r in results:
    separation = "-" if r["min_separation"] is None else f"{r['min_separation']:.4f}"
    lines.append(f"| {r['threshold']} | {separation} | "
                 + " | ".join(f"{r[m]:.3f}" for m in METRICS) + " |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  start = time.time()
  outputs, batches = parser_outputs(_WORKDIR.value, _SPLIT.value, _MAX_IMAGES.value)
  results = []
  for threshold in map(float, _THRESHOLDS.value):
    for separation in (None, _MIN_SEPARATION.value):
      task = ObjectAttributesTask(threshold=threshold, min_separation=separation)
      results.append({"threshold": threshold, "min_separation": separation,
                      **score(task, outputs, batches)})
  text = (f"Scene parser {_WORKDIR.value}, split {_SPLIT.value}, "
          f"{int(results[0]['num_images'])} images ({time.time() - start:.0f} s)\n\n"
          + table(results))
  print(text)
  out = epath.Path(_WORKDIR.value)
  (out / "decoding.md").write_text(text + "\n")
  (out / "decoding.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
