"""The main job: `python -m multimodal.main --config=configs/NAME.py --workdir=DIR`.

Trains (resuming from the workdir's last checkpoint if there is one), evaluates, and writes
WORKDIR/results.json. `--eval_only` evaluates the workdir's latest (or `--step`) checkpoint.
Any config value can be overridden: `--config.total_steps=100 --config.model.fusion.depth=1`.

Multi-host: run the same command on every host with `--distributed` (Cloud TPU pods, SLURM,
Open MPI: JAX finds the coordinator) or with --coordinator_address, --num_processes and
--process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
On SIGTERM (a preemption notice) the run saves the current step and exits with status 143;
rerunning the command resumes from there.
"""
from __future__ import annotations

import logging as pylogging
import os

# tf.data and XLA share two cores on small machines; keep TF's C++ logs to warnings.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from multimodal.training import distributed, preemption, trainer  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go.")
_EVAL_ONLY = flags.DEFINE_bool("eval_only", False, "Evaluate a saved checkpoint only.")
_STEP = flags.DEFINE_integer("step", None, "With --eval_only: the checkpoint step (default: latest).")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Continue a workdir that was started with another config.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-host run, detecting the cluster (TPU pod, SLURM, MPI).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in the run (or JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (or JAX_PROCESS_ID).")


def quiet_library_logs() -> None:
  """Orbax logs every step of every save at INFO; keep its warnings, drop the rest."""
  def keep(record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname
  logging.get_absl_handler().addFilter(keep)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  distributed.initialize(distributed.DistributedSettings.from_env(
      auto_detect=_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value))
  logging.info("Config:\n%s", _CONFIG.value)
  if _EVAL_ONLY.value:
    trainer.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value,
                                _ALLOW_CONFIG_CHANGE.value)
    return
  try:
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value, _ALLOW_CONFIG_CHANGE.value)
  except preemption.Preempted as e:
    logging.warning("%s", e)
  else:
    return
  # Exits outside the `except` block, so the exit holds no traceback of the training frames
  # (and nothing they still reference) into interpreter shutdown.
  raise SystemExit(preemption.PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
