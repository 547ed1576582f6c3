"""Noticing a preemption (SIGTERM) so the trainer can checkpoint the current step and exit.

One process: a SIGTERM or SIGINT handler sets a flag that the loop reads after each step.
Several processes: the hosts must agree on the step to save at, or the collective checkpoint
would hang; JAX's preemption service (started by `jax.distributed.initialize`, listening for
SIGTERM) propagates the notice and names one step that every host stops after.
"""
from __future__ import annotations

import signal
import types

from absl import logging
from jax.experimental import multihost_utils

from multimodal.training import distributed

# The exit status of a run stopped by a preemption notice: 128 + SIGTERM, as a shell reports a
# process that SIGTERM ended, so that job scripts can tell "stopped, rerun me" from "done".
PREEMPTED_EXIT_CODE = 143


class Preempted(Exception):
  """Raised by the trainer after it saved the checkpoint of the step it stopped at."""

  def __init__(self, step: int, directory: str):
    super().__init__(f"Stopped by a preemption notice after step {step}; its checkpoint is in "
                     f"{directory}. Rerun the same command to resume from it.")
    self.step = step


class StopSignal:
  """`requested(step)` turns True after SIGTERM (or Ctrl-C), on every host at the same step."""

  def __init__(self):
    self._signal: int | None = None
    self._previous: dict[int, object] = {}
    self._multihost = distributed.is_initialized()

  def __enter__(self) -> StopSignal:
    if not self._multihost:  # JAX's preemption service owns SIGTERM in a multi-host run.
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    if self._signal is not None:  # A second Ctrl-C: the user really wants out now.
      raise KeyboardInterrupt
    self._signal = signum
    logging.warning("Received %s: stopping after the current step, with a checkpoint.",
                    signal.Signals(signum).name)

  def requested(self, step: int) -> bool:
    if self._multihost:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signal is not None
