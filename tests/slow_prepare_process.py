"""One process of a two-process run whose process 0 takes DELAY_S to prepare its dataset.

  python -m tests.slow_prepare_process COORDINATOR_ADDRESS PROCESS_ID DELAY_S DATA_DIR

Run by tests/test_multihost.py. Prints when each process got past `get_builder`, then a
gloo all-gather, which shows the processes can still talk after the long wait.
"""
import sys
import time

import jax
import numpy as np
import ml_collections
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from multimodal.data import pipeline
from multimodal.training import distributed


def main(address: str, process_id: int, delay_s: float, data_dir: str) -> None:
  distributed.initialize(distributed.DistributedSettings(
      coordinator_address=address, num_processes=2, process_id=process_id))

  def slow_prepare(self, **kwargs):  # process 0 "builds" a dataset for delay_s
    if jax.process_index() == 0:
      time.sleep(delay_s)
  tfds.core.DatasetBuilder.download_and_prepare = slow_prepare

  start = time.monotonic()
  pipeline.get_builder(ml_collections.ConfigDict(dict(name="shapes_vqa", data_dir=data_dir)))
  print(f"waited {time.monotonic() - start:.1f} s", flush=True)
  gathered = multihost_utils.process_allgather(np.int32(jax.process_index()))
  print(f"gathered {gathered.tolist()}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
