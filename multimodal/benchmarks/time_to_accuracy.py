"""Time to accuracy: validation accuracy (overall and per question type) against wall-clock
minutes, everything included (data generation, compilation, evaluation), for a config and a
text-only baseline trained the same way.

  python -m multimodal.benchmarks.time_to_accuracy --workdir=/tmp/tta

Each run is the real main job in a subprocess with a fresh TFDS data dir, so the clock starts
before the dataset is generated. Evaluation points come from the runs' TensorBoard events
(their wall times); pass --config.evals.validation.every_steps to get more of them.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import time

from absl import app, flags

from multimodal.training.progress import format_duration

_CONFIG = flags.DEFINE_string("config", "configs/shapes_vqa.py", "The config to measure.")
_BASELINE = flags.DEFINE_string("baseline", "configs/shapes_vqa.py:text_only=true",
                                "The blind baseline config ('' to skip it).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs and their data go.")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "--config.KEY=VALUE for both runs, "
                                       "e.g. --override=--config.total_steps=3000.")
_MINUTES = flags.DEFINE_float("target_minutes", 20.0, "The time budget to report against.")


def read_evals(workdir: str, prefix: str) -> list[tuple[float, int, dict[str, float]]]:
  """[(wall_time, step, {metric: value})] for every evaluation written under `prefix`."""
  import tensorflow as tf  # only needed once the runs are done
  points: dict[int, tuple[float, dict[str, float]]] = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith(prefix):
          wall, metrics = points.setdefault(event.step, (event.wall_time, {}))
          metrics[value.tag[len(prefix):]] = float(tf.make_ndarray(value.tensor))
  return [(wall, step, metrics) for step, (wall, metrics) in sorted(points.items())]


def run(name: str, config: str, workdir: str) -> tuple[float, float]:
  """Runs the main job; returns (start, end) wall times."""
  run_dir = os.path.join(workdir, name)
  cmd = [sys.executable, "-m", "multimodal.main", f"--config={config}",
         f"--workdir={run_dir}", f"--config.data.data_dir={os.path.join(run_dir, 'tfds')}",
         *_OVERRIDES.value]
  print(f"[{name}] {' '.join(cmd)}", flush=True)
  start = time.time()
  with open(os.path.join(workdir, f"{name}.log"), "w") as log:
    subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
  end = time.time()
  print(f"[{name}] finished in {format_duration(end - start)}", flush=True)
  return start, end


def table(name: str, start: float, evals: list[tuple[float, int, dict[str, float]]]) -> str:
  types = sorted(k.split("/", 1)[1] for k in evals[-1][2] if k.startswith("accuracy/"))
  lines = [f"\n{name}", "| minutes | step | overall | " + " | ".join(types) + " |",
           "|---:|---:|---:|" + "---:|" * len(types)]
  for wall, step, metrics in evals:
    cells = [f"{(wall - start) / 60:.1f}", str(step), f"{metrics['accuracy']:.3f}"]
    cells += [f"{metrics[f'accuracy/{t}']:.3f}" for t in types]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  os.makedirs(_WORKDIR.value, exist_ok=True)
  runs = {"model": _CONFIG.value}
  if _BASELINE.value:
    runs["text_only_baseline"] = _BASELINE.value
  report = []
  for name, config in runs.items():
    start, end = run(name, config, _WORKDIR.value)
    evals = read_evals(os.path.join(_WORKDIR.value, name), "validation/vqa/")
    report.append(table(f"{name}: {config} (total {format_duration(end - start)}, "
                        f"target {_MINUTES.value:g} min)", start, evals))
  print("\n".join(report))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
