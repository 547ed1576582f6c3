"""Time to accuracy: validation accuracy (overall and per question type) against wall-clock
minutes, everything included (data generation, compilation, evaluation), for a config and a
text-only baseline trained the same way.

  python -m multimodal.benchmarks.time_to_accuracy --workdir=/tmp/tta

Each run is the real main job in a subprocess with a fresh TFDS data dir, so the clock starts
before the dataset is generated. Evaluation points come from the runs' TensorBoard events
(their wall times); pass --config.evals.validation.every_steps to get more of them.
"""
from __future__ import annotations

import os

from absl import app, flags

from multimodal.benchmarks import main_job
from multimodal.training.progress import format_duration

_CONFIG = flags.DEFINE_string("config", "configs/shapes_vqa.py", "The config to measure.")
_BASELINE = flags.DEFINE_string("baseline", "configs/shapes_vqa.py:text_only=true",
                                "The blind baseline config ('' to skip it).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs and their data go.")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "--config.KEY=VALUE for both runs, "
                                       "e.g. --override=--config.total_steps=3000.")
_MINUTES = flags.DEFINE_float("target_minutes", 20.0, "The time budget to report against.")


def run(name: str, config: str, workdir: str) -> main_job.Run:
  """Runs the main job with its own fresh TFDS data dir; raises if it fails."""
  run_dir = os.path.abspath(os.path.join(workdir, name))
  result = main_job.run_main_job(
      name, config, run_dir, os.path.join(workdir, f"{name}.log"),
      [f"--config.data.data_dir={os.path.join(run_dir, 'tfds')}", *_OVERRIDES.value])
  result.check()
  return result


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
    result = run(name, config, _WORKDIR.value)
    evals = main_job.read_evals(os.path.join(_WORKDIR.value, name), "validation/vqa/")
    report.append(table(f"{name}: {config} (total {format_duration(result.end - result.start)}"
                        f", target {_MINUTES.value:g} min)", result.start, evals))
  print("\n".join(report))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
