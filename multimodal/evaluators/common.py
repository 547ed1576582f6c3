"""Pieces every evaluator needs: padded eval batches and gathering results across hosts."""
from __future__ import annotations

import json
from typing import Any, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils


def padded_batches(batches: Iterator[dict[str, np.ndarray]], batch_size: int
                   ) -> Iterator[dict[str, np.ndarray]]:
  """Pads each host batch to `batch_size` rows; `_valid` bool[batch_size] marks the real ones.

  Every host must run the same number of steps in a collective computation, so hosts with
  fewer batches keep contributing all-padding batches until every host is done.
  """
  iterator = iter(batches)
  template = None
  while True:
    batch = next(iterator, None)
    if batch is not None:
      template = batch
    if not multihost_utils.process_allgather(np.int32(batch is not None)).any():
      return
    if batch is None:
      if template is None:
        raise ValueError("An evaluation split is empty on this host.")
      batch = {k: v[:0] for k, v in template.items()}
    n = len(next(iter(batch.values())))
    pad = batch_size - n
    padded = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) if pad else v
              for k, v in batch.items()}
    padded["_valid"] = np.arange(batch_size) < n
    yield padded


def local_rows(global_array: jax.Array, local_batch_size: int) -> np.ndarray:
  """This host's rows of a replicated global batch output (hosts own consecutive slices)."""
  start = jax.process_index() * local_batch_size
  return np.asarray(global_array)[start:start + local_batch_size]


def allgather_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Every host's JSON-serialisable records, concatenated in process order, on every host."""
  if jax.process_count() == 1:
    return records
  data = np.frombuffer(json.dumps(records).encode(), np.uint8)
  length = int(multihost_utils.process_allgather(np.int64(len(data))).max())
  padded = np.zeros(length, np.uint8)
  padded[:len(data)] = data
  gathered = multihost_utils.process_allgather(padded)
  out = []
  for row in gathered:
    out.extend(json.loads(bytes(row).rstrip(b"\0").decode()))
  return out
