"""The main job: `python -m multimodal.main --config=configs/NAME.py --workdir=DIR`.

Trains (resuming from the workdir's last checkpoint if there is one), evaluates, and writes
WORKDIR/results.json. `--eval_only` evaluates the workdir's latest (or `--step`) checkpoint.
Any config value can be overridden: `--config.total_steps=100 --config.model.fusion.depth=1`.
"""
from __future__ import annotations

import logging as pylogging
import os

# tf.data and XLA share two cores on small machines; keep TF's C++ logs to warnings.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from multimodal.training import trainer  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go.")
_EVAL_ONLY = flags.DEFINE_bool("eval_only", False, "Evaluate a saved checkpoint only.")
_STEP = flags.DEFINE_integer("step", None, "With --eval_only: the checkpoint step (default: latest).")


def quiet_library_logs() -> None:
  """Orbax logs every step of every save at INFO; keep its warnings, drop the rest."""
  def keep(record: pylogging.LogRecord) -> bool:
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname
  logging.get_absl_handler().addFilter(keep)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_library_logs()
  logging.info("Config:\n%s", _CONFIG.value)
  if _EVAL_ONLY.value:
    trainer.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _STEP.value)
  else:
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
