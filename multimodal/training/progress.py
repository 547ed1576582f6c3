"""Progress lines with step, loss, steps/s and ETA."""
from __future__ import annotations

import time

from absl import logging


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
  """Measures training speed between reports, leaving out time spent in evaluation."""

  def __init__(self, start_step: int, total_steps: int):
    self.total_steps = total_steps
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self._paused = 0.0

  def pause(self, seconds: float) -> None:
    """Excludes `seconds` (evaluation, checkpointing) from the next steps/s figure."""
    self._paused += seconds

  def report(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
    """Logs one progress line; returns {"steps_per_sec": ...} for the metric writer."""
    now = time.perf_counter()
    elapsed = max(now - self._last_time - self._paused, 1e-9)
    steps_per_sec = (step - self._last_step) / elapsed
    eta = (self.total_steps - step) / max(steps_per_sec, 1e-9)
    shown = " | ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
    logging.info("step %d/%d | %s | %.2f steps/s | ETA %s", step, self.total_steps, shown,
                 steps_per_sec, format_duration(eta))
    self._last_step, self._last_time, self._paused = step, now, 0.0
    return {"steps_per_sec": steps_per_sec}
