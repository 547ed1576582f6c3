"""What the benchmarks that train share: the main job run in a subprocess, and the
evaluations read back from its TensorBoard events.
"""
from __future__ import annotations

import dataclasses
import glob
import math
import os
import subprocess
import sys
import time
from typing import Sequence

from multimodal.benchmarks.compiled_step import REPO
from multimodal.training.progress import format_duration


@dataclasses.dataclass
class Run:
  """One finished main job: its command, wall-clock start and end, exit status and log."""
  name: str
  cmd: list[str]
  start: float
  end: float
  returncode: int
  log: str

  @property
  def ok(self) -> bool:
    return self.returncode == 0

  def check(self) -> None:
    """Raises subprocess.CalledProcessError if the run failed."""
    if not self.ok:
      raise subprocess.CalledProcessError(self.returncode, self.cmd)


def run_main_job(name: str, config: str, workdir: str, log: str,
                 overrides: Sequence[str] = (), append_log: bool = False) -> Run:
  """Runs `python -m multimodal.main --config=CONFIG --workdir=WORKDIR OVERRIDES...`, its
  output to `log` (after what it holds if `append_log`: a resumed run), and prints a line when
  it starts and when it ends. A failed run is returned (`.ok` is False), not raised.

  It runs in the repository root, so that the package is found without installing it;
  the config file and workdir are taken relative to this process's working directory, or
  else (a config) to the repository. Paths in `overrides` must be absolute.
  """
  path, colon, args = config.partition(":")
  if os.path.exists(path):
    config = os.path.abspath(path) + colon + args
  cmd = [sys.executable, "-m", "multimodal.main", f"--config={config}",
         f"--workdir={os.path.abspath(workdir)}", *overrides]
  print(f"[{name}] {' '.join(cmd)}", flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
  start = time.time()
  with open(log, "a" if append_log else "w") as f:
    returncode = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                                check=False).returncode
  run = Run(name, cmd, start, time.time(), returncode, log)
  took = format_duration(run.end - run.start)
  print(f"[{name}] finished in {took}" if run.ok else
        f"[{name}] FAILED (exit status {returncode}) after {took}; log: {log}", flush=True)
  return run


Segments = list[list[float]]  # [[start, end], ...]: the wall-clock spans a run trained in.


def training_seconds(segments: Segments, until: float = math.inf) -> float:
  """Seconds spent training in `segments` up to the wall-clock time `until` (all of them by
  default): the time of a run that was stopped and resumed, without the gaps between."""
  return sum(max(0.0, min(end, until) - start) for start, end in segments)


def read_evals(workdir: str, prefix: str) -> list[tuple[float, int, dict[str, float]]]:
  """[(wall_time, step, {metric: value})] for every evaluation written under `prefix`
  (e.g. "validation/vqa/") in the run's TensorBoard events, by step."""
  import tensorflow as tf  # only needed once the runs are done
  points: dict[int, tuple[float, dict[str, float]]] = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith(prefix):
          wall, metrics = points.setdefault(event.step, (event.wall_time, {}))
          metrics[value.tag[len(prefix):]] = float(tf.make_ndarray(value.tensor))
  return [(wall, step, metrics) for step, (wall, metrics) in sorted(points.items())]
