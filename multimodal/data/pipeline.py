"""The input pipeline: TFDS -> per-host shard -> preprocessing -> shuffle/batch -> prefetch.

Training streams are infinite and deterministic given the seed, so that a resumed run sees
exactly the examples an uninterrupted run would: `skip_batches` drops the examples already
consumed before any decoding happens.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from multimodal.data import builders  # noqa: F401  (registers the TFDS builders)
from multimodal.data import pp as pp_lib
from multimodal.training import distributed

# tf.data runs on the host CPU only; the accelerators belong to JAX.
tf.config.set_visible_devices([], "GPU")


# How long the other processes wait for process 0 to prepare a dataset: building a real one
# from its manual_dir can take hours.
PREPARE_TIMEOUT_S = 24 * 3600.0


def get_builder(data: Any, prepare_timeout_s: float = PREPARE_TIMEOUT_S
                ) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `data` (name, config, data_dir, manual_dir), prepared on first use;
  with `data.objects`, that of a frozen scene parser's readings of its images
  (`object_features`), extracted on first use."""
  if data.get("objects"):
    from multimodal.data import object_features  # it imports this module
    return object_features.get_builder(data, prepare_timeout_s)
  return prepared_builder(data, prepare_timeout_s)


def prepared_builder(data: Any, prepare_timeout_s: float = PREPARE_TIMEOUT_S
                     ) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `data` (name, config, data_dir, manual_dir), prepared on first use.

  Process 0 generates (built-in data) or builds from the manual_dir (a user's data); the
  other processes wait for it, up to `prepare_timeout_s`, and then read the cached files.
  """
  name = data.name if not data.get("config") else f"{data.name}/{data.config}"
  builder = tfds.builder(name, data_dir=data.get("data_dir"))
  download_config = tfds.download.DownloadConfig(manual_dir=data.get("manual_dir"))
  if jax.process_index() == 0:
    builder.download_and_prepare(download_config=download_config)
  distributed.wait_for_all_processes(f"prepared {name}", prepare_timeout_s)
  if jax.process_index() != 0:
    builder.download_and_prepare(download_config=download_config)
  return builder


def host_shards(num_shards: int | None = None) -> list[int]:
  """The data shards this process reads: a contiguous block of `num_shards // process_count`.

  A training stream is defined by its number of shards, not by the number of hosts: shard i
  is the i-th even part of the split, shuffled with seed + i, and a global batch is the
  shards' batches side by side. So a run with `data.num_shards=2` sees the same global
  batches on one host as on two, and can resume on a different number of hosts.
  """
  num_shards = num_shards or jax.process_count()
  if num_shards % jax.process_count():
    raise ValueError(f"data.num_shards={num_shards} does not split over "
                     f"{jax.process_count()} processes.")
  per_host = num_shards // jax.process_count()
  return list(range(jax.process_index() * per_host, (jax.process_index() + 1) * per_host))


def skip_image_decoding(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
  """TFDS decoders that leave every top-level image feature (`image`; NLVR's `left_image` and
  `right_image`) as its encoded bytes: the pp ops decode them, after `skip_batches` has
  dropped what a resumed run already consumed."""
  return {name: tfds.decode.SkipDecoding() for name, feature in builder.info.features.items()
          if isinstance(feature, tfds.features.Image)}


def _where_predicate(where: Mapping[str, Sequence[str]] | None,
                     features: Mapping[str, Any] | None = None
                     ) -> Callable[[dict[str, tf.Tensor]], tf.Tensor] | None:
  """{feature: allowed values} -> a tf.data filter predicate (None: keep everything).
  Values of a ClassLabel feature (in `features`, the builder's) are given by name. A string
  feature may instead take {"matching": regex} or {"not_matching": regex} (RE2, the whole
  string): keep the examples whose value matches it, or those whose value does not."""
  if not where:
    return None
  allowed, patterns = {}, {}
  for key, values in where.items():
    if hasattr(values, "items"):  # a dict or a ConfigDict
      condition = dict(values.items())
      if len(condition) != 1 or next(iter(condition)) not in ("matching", "not_matching"):
        raise ValueError(f"data.where[{key!r}] = {condition}: give a list of values, or "
                         "one of {'matching': regex} and {'not_matching': regex}.")
      patterns[key] = next(iter(condition.items()))
      continue
    values = [values] if isinstance(values, str) else list(values)
    if not values:
      raise ValueError(f"data.where[{key!r}] lists no values: it would drop every example.")
    feature = features[key] if features is not None and key in features else None
    if isinstance(feature, tfds.features.ClassLabel):
      unknown = [v for v in values if v not in feature.names]
      if unknown:
        raise ValueError(f"data.where[{key!r}]: {unknown} are not among its labels "
                         f"{feature.names}.")
      values = [feature.str2int(v) for v in values]
    allowed[key] = tf.constant(values, tf.int64 if isinstance(feature, tfds.features.ClassLabel)
                               else None)

  def predicate(example: dict[str, tf.Tensor]) -> tf.Tensor:
    missing = sorted((set(allowed) | set(patterns)) - set(example))
    if missing:
      raise KeyError(f"data.where names features {missing} that the examples lack; they "
                     f"have {sorted(example)}.")
    keep = [tf.reduce_any(tf.equal(example[k], v)) for k, v in allowed.items()]
    for key, (kind, pattern) in patterns.items():
      matches = tf.strings.regex_full_match(example[key], pattern)
      keep.append(matches if kind == "matching" else tf.logical_not(matches))
    return tf.reduce_all(keep)

  return predicate


def make_dataset(builder: tfds.core.DatasetBuilder, *, split: str, pp: str, batch_size: int,
                 train: bool, seed: int = 0, shuffle_buffer: int = 10_000,
                 skip_batches: int = 0, num_shards: int | None = None,
                 extras: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]] | None = None,
                 where: Mapping[str, Sequence[str]] | None = None) -> tf.data.Dataset:
  """This host's batches of preprocessed examples.

  Args:
    split: a TFDS split name; each host reads its own disjoint part of it.
    pp: preprocessing spec, e.g. "decode|resize(64)|value_range(-1, 1)|...".
    batch_size: examples per batch on this host (global batch / process count).
    train: infinite, shuffled stream with full batches, each example with its own seed for
      random pp ops (`pp.RNG_KEY`); otherwise one pass, last batch possibly smaller, and no
      seed (random ops then take their deterministic choice).
    skip_batches: (train) batches already consumed by the run being resumed.
    num_shards: (train) shards of the stream (see `host_shards`); default: one per process.
    extras: computes further features from the raw example, kept beside pp's output
      (evaluators use it to keep the question and answer strings for reporting).
    where: keep only the raw examples whose scalar string feature is one of the values given
      for it, e.g. {"question_type": ["relation"]} (an ablation or a curriculum), or matches
      (or not) a regex, e.g. {"question": {"not_matching": ".* below .*"}}; applied before
      shuffling and skipping, so resuming stays exact.
  """
  pp_fn = pp_lib.parse(pp)
  keep = _where_predicate(where, builder.info.features)

  def preprocess(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    processed = {**pp_fn(example), **(extras(example) if extras else {})}
    processed.pop(pp_lib.RNG_KEY, None)  # Random ops' seed stays on the host.
    return processed

  def read(shard: int, count: int) -> tf.data.Dataset:
    ds = builder.as_dataset(split=tfds.even_splits(split, count, drop_remainder=False)[shard],
                            shuffle_files=False,
                            decoders=skip_image_decoding(builder),
                            read_config=tfds.ReadConfig(skip_prefetch=True))
    return ds.filter(keep) if keep else ds

  if not train:
    ds = read(jax.process_index(), jax.process_count())
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

  shards = host_shards(num_shards)
  if batch_size % len(shards):
    raise ValueError(f"A host batch of {batch_size} does not split over this host's "
                     f"{len(shards)} data shards.")
  shard_batch = batch_size // len(shards)

  def stream(shard: int) -> tf.data.Dataset:
    # Shuffle with a fixed seed after repeat: one deterministic infinite stream per shard.
    ds = read(shard, num_shards or jax.process_count()).repeat()
    # Each example's place in its shard's stream seeds its random pp ops (`pp.RNG_KEY`):
    # counted before skipping, so a resumed run draws what the uninterrupted one would.
    ds = ds.shuffle(shuffle_buffer, seed=seed + shard).enumerate()
    ds = ds.skip(skip_batches * shard_batch).map(
        lambda index, example: {**example, pp_lib.RNG_KEY: tf.stack(
            [tf.constant(seed * 1_000_003 + shard, tf.int64), index])})
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(shard_batch, drop_remainder=True)

  if len(shards) == 1:
    ds = stream(shards[0])
  else:
    ds = tf.data.Dataset.zip(tuple(stream(i) for i in shards)).map(
        lambda *parts: jax.tree.map(lambda *x: tf.concat(x, axis=0), *parts))
  return ds.prefetch(tf.data.AUTOTUNE)


def host_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise ValueError(f"Global batch {global_batch_size} does not split over "
                     f"{jax.process_count()} hosts.")
  return global_batch_size // jax.process_count()


def to_global(batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding
              ) -> dict[str, jax.Array]:
  """This host's numeric arrays -> global jax.Arrays split over the batch axis of the mesh.

  String features (questions, answers kept for evaluation) stay on the host.
  """
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items() if v.dtype.kind not in "SUO"}


def log_dataset(builder: tfds.core.DatasetBuilder) -> None:
  """Logs the split sizes, and the bad records skipped while building (a user's data).

  Builders record those in their info's metadata as "skipped/SPLIT/REASON": count.
  """
  sizes = {s: i.num_examples for s, i in builder.info.splits.items()}
  logging.info("Dataset %s at %s: %s", builder.info.full_name, builder.data_dir, sizes)
  skipped = {k.removeprefix("skipped/"): n for k, n in (builder.info.metadata or {}).items()
             if k.startswith("skipped/")}
  if skipped:
    log = logging.warning if any(skipped.values()) else logging.info
    log("Dataset %s: bad records skipped while building: %s", builder.info.full_name, skipped)
