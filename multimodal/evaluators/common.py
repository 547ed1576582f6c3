"""Pieces every evaluator needs: predictions over a split in padded batches, gathering
results across hosts, and the predictions file."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np
import tensorflow as tf
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from multimodal.data import pipeline
from multimodal.evaluators.registry import EvalContext

HostBatch = dict[str, np.ndarray]


class SplitEvaluator:
  """The settings every evaluator over one split has.

  Args:
    split: the TFDS split to evaluate on.
    pp: preprocessing spec producing the model inputs (and what the evaluator reads).
    batch_size: global evaluation batch size.
    every_steps: how often the trainer runs it (0: only at the end).
    max_examples: evaluate on the first N examples only (None: all).
  """

  def __init__(self, context: EvalContext, name: str, split: str, pp: str, batch_size: int,
               every_steps: int = 0, max_examples: int | None = None):
    self.context = context
    self.name = name
    self.split = split if max_examples is None else f"{split}[:{max_examples}]"
    self.pp = pp
    self.batch_size = batch_size
    self.every_steps = every_steps


def predicted_batches(context: EvalContext, variables: Any, *, split: str, pp: str,
                      batch_size: int,
                      extras: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]] | None = None,
                      where: Mapping[str, Sequence[str]] | None = None,
                      edit: Callable[[HostBatch], None] | None = None
                      ) -> Iterator[tuple[HostBatch, dict[str, np.ndarray]]]:
  """(this host's batch, this host's rows of the predictions) over one pass of `split`.

  Batches are padded to the host's share of `batch_size`; `batch["_valid"]` marks the real
  rows. `extras` keeps strings beside the model inputs (see `pipeline.make_dataset`); `edit`
  changes a host batch in place before it goes to the model (e.g. removes a modality).
  `variables` go to `context.predict` (see `EvalContext`).
  """
  local_batch = pipeline.host_batch_size(batch_size)
  ds = pipeline.make_dataset(context.builder, split=split, pp=pp, batch_size=local_batch,
                             train=False, extras=extras, where=where)
  for batch in padded_batches(ds.as_numpy_iterator(), local_batch):
    if edit is not None:
      edit(batch)
    yield batch, predict_host_rows(context, variables, batch)


def predict_host_rows(context: EvalContext, variables: Any, inputs: HostBatch
                      ) -> dict[str, np.ndarray]:
  """The predictions for this host's rows of a global batch (every host gives as many rows;
  string features stay on the host)."""
  rows = len(next(iter(inputs.values())))
  predictions = context.predict(variables, pipeline.to_global(inputs, context.batch_sharding))
  return {k: local_rows(v, rows) for k, v in predictions.items()}


def write_predictions(workdir: str, name: str, step: int, records: list[dict[str, Any]]
                      ) -> None:
  """Writes `WORKDIR/predictions/NAME_stepSTEP.jsonl` (process 0 only), one record a line."""
  if jax.process_index() != 0:
    return
  folder = epath.Path(workdir) / "predictions"
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / f"{name}_step{step}.jsonl"
  path.write_text("".join(json.dumps(record) + "\n" for record in records))
  logging.info("Wrote %d predictions to %s", len(records), path)


def _padding(rows: np.ndarray, n: int) -> np.ndarray:
  """n rows of padding for `rows`: zeros, or empty strings for text (an object array of
  zeros would hold the int 0 where evaluators read bytes)."""
  fill = b"" if rows.dtype == object else 0
  return np.full((n,) + rows.shape[1:], fill, rows.dtype)


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
    padded = {k: np.concatenate([v, _padding(v, pad)]) if pad else v for k, v in batch.items()}
    padded["_valid"] = np.arange(batch_size) < n
    yield padded


def local_rows(global_array: jax.Array, local_batch_size: int) -> np.ndarray:
  """This host's rows of a replicated global batch output (hosts own consecutive slices)."""
  start = jax.process_index() * local_batch_size
  return np.asarray(global_array)[start:start + local_batch_size]


def allgather_rows(rows: np.ndarray) -> np.ndarray:
  """Every host's float[N_host, ...] rows (N_host may differ), concatenated in process order."""
  if jax.process_count() == 1:
    return rows
  counts = multihost_utils.process_allgather(np.int64(len(rows)))
  padded = np.zeros((int(counts.max()),) + rows.shape[1:], rows.dtype)
  padded[:len(rows)] = rows
  gathered = multihost_utils.process_allgather(padded)
  return np.concatenate([g[:n] for g, n in zip(gathered, counts)])


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
