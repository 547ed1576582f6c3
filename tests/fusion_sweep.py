"""The tiny fusion benchmark that several tests read: two modules that train and one that fails.

Run once per test session (the `fusion_sweep` fixture in conftest.py):
tests/test_fusion_benchmark.py checks its tables, records and export, and the fusion colab's
test reads it as its results folder.
"""
import dataclasses
import os

from multimodal.benchmarks import fusion

MODULES = ["gated", "no_such_module", "cross_attention"]
CONFIG = "configs/shapes_vqa.py:tiny=true"
OVERRIDES = ["--config.total_steps=4", "--config.evals.validation.every_steps=2"]
XDIST_GROUP = "fusion_sweep"  # the tests that read the sweep share one xdist worker


@dataclasses.dataclass(frozen=True)
class Sweep:
  workdir: str   # the benchmark's workdir (runs with their checkpoints, the tables).
  export: str    # its --export copy (no checkpoints).
  rows: dict     # module name -> its row from run_benchmark.


def run(folder: str) -> Sweep:
  workdir, export = os.path.join(folder, "workdir"), os.path.join(folder, "export")
  rows = fusion.run_benchmark(workdir, MODULES, CONFIG, OVERRIDES, timed_steps=2, export=export)
  return Sweep(workdir, export, {row["module"]: row for row in rows})
