"""Does the input pipeline keep up? Its examples/s alone next to what the train step consumes.

  python -m multimodal.benchmarks.input_pipeline --config=configs/shapes_vqa.py

Prints a table: pipeline examples/s (tf.data alone, batches pulled to numpy), train step
examples/s (the compiled step on batches already in memory), and their ratio.
"""
from __future__ import annotations

import itertools
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from multimodal.data import pipeline  # noqa: E402
from multimodal.training import trainer as trainer_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_BATCHES = flags.DEFINE_integer("batches", 60, "Batches to time (after warm-up).")


def time_pipeline(trainer: trainer_lib.Trainer, num_batches: int) -> float:
  """Examples/s of the training input pipeline alone."""
  batches = trainer._dataset().as_numpy_iterator()
  for batch in itertools.islice(batches, 5):  # fill the prefetch and autotune buffers
    pass
  start = time.perf_counter()
  for batch in itertools.islice(batches, num_batches):
    pass
  del batch
  return num_batches * trainer.local_batch_size / (time.perf_counter() - start)


def time_train_step(trainer: trainer_lib.Trainer, num_batches: int) -> float:
  """Examples/s of the compiled train step on one batch already in memory."""
  batch = pipeline.to_global(next(trainer._dataset().as_numpy_iterator()),
                             trainer.batch_sharding)
  state = trainer.state
  for _ in range(3):  # compile and warm up
    state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(num_batches):
    state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  return num_batches * trainer.config.batch_size / (time.perf_counter() - start)


def main(argv: list[str]) -> None:
  del argv
  with tempfile.TemporaryDirectory() as workdir:
    trainer = trainer_lib.Trainer(_CONFIG.value, workdir)
    step_rate = time_train_step(trainer, max(_BATCHES.value // 4, 5))
    pipeline_rate = time_pipeline(trainer, _BATCHES.value)
    trainer.close()
  print(f"\n| measured ({jax.device_count()} {jax.devices()[0].platform} devices, "
        f"batch {_CONFIG.value.batch_size}) | examples/s |")
  print("|---|---:|")
  print(f"| input pipeline alone | {pipeline_rate:,.0f} |")
  print(f"| train step alone | {step_rate:,.0f} |")
  print(f"| ratio (pipeline / step) | {pipeline_rate / step_rate:.1f}x |")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
