"""What the builders of data downloaded into TFDS's manual_dir share: images read and checked
to decode, JSON files read with errors that name them, bad records skipped and counted (one log
line, and builder metadata "skipped/SPLIT/REASON"), and a config that caps the split sizes.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

# Why an image makes its record bad, in the order `read_checked_image` checks.
IMAGE_REASONS = ("missing_image", "unreadable_image", "empty_image_file", "corrupt_image")
_NUM_LISTED = 5  # Bad records named in the log line.


class BadRecord(ValueError):
  """Why one record cannot be an example: `reason` (a short snake_case name) and the details."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason = reason


def read_checked_image(path: epath.Path) -> bytes:
  """The file's encoded bytes, once they fully decode; else a BadRecord saying why."""
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    raise BadRecord("missing_image", f"no image file {path}") from None
  except (OSError, ValueError) as e:  # ValueError: a NUL in the path.
    raise BadRecord("unreadable_image", f"cannot read {path}: {e}") from None
  if not data:
    raise BadRecord("empty_image_file", f"{path} is empty (0 bytes)")
  try:
    # As the `decode` op does; TF rejects images with zero width or height too.
    tf.io.decode_image(data, channels=3, expand_animations=False)
  except tf.errors.OpError as e:
    reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", e.message)
    raise BadRecord("corrupt_image", f"cannot decode {path}: {reason}") from None
  return data


class SkippedRecords:
  """The bad records of one file or split: counts per reason, and the first few by name.

  Args:
    source: what the log line starts with, e.g. "vqav2: train".
    reasons: every reason a record can be skipped for, in the order the log lists them.
  """

  def __init__(self, source: str, reasons: Sequence[str]):
    self.source = source
    self.reasons = tuple(reasons)
    self.counts: collections.Counter[str] = collections.Counter()
    self._listed: list[str] = []

  def add(self, record: str, error: BadRecord) -> None:
    """Counts `record` (e.g. "line 7", "question_id 42") as skipped for `error`."""
    self.counts[error.reason] += 1
    if len(self._listed) < _NUM_LISTED:
      self._listed.append(f"{record}: {error}")

  def log(self, num_records: int) -> None:
    """One line: how many of the `num_records` read were skipped, per reason, and which."""
    total = self.counts.total()
    counts = ", ".join(f"{r}={self.counts[r]}" for r in self.reasons if self.counts[r])
    log = logging.warning if total else logging.info
    log("%s: skipped %d of %d records%s", self.source, total, num_records,
        f" ({counts}); the first ones: {'; '.join(self._listed)}" if total else ".")

  def metadata(self, split: str) -> dict[str, int]:
    """{"skipped/SPLIT/REASON": count} for each reason that occurred, and ".../total"."""
    counts = {**self.counts, "total": self.counts.total()}
    return {f"skipped/{split}/{reason}": n for reason, n in counts.items()}


def examples_with_images(records: Iterable[tuple[str, epath.Path, dict[str, Any]]],
                         skipped: SkippedRecords, max_examples: int | None = None
                         ) -> Iterator[dict[str, Any]]:
  """Each record's example with "image" set to its image's encoded bytes, for the records
  whose image reads and decodes; the others are counted in `skipped`, logged at the end.

  Args:
    records: (the record's name in the log, e.g. "question_id 7"; its image file; its other
      features). Consecutive records of one image read and decode it once.
    max_examples: stop after this many examples (None: read every record).
  """
  read_image = functools.lru_cache(maxsize=1)(read_checked_image)
  num_read = num_examples = 0
  for name, image_path, example in records:
    if num_examples == max_examples:
      break
    num_read += 1
    try:
      image = read_image(image_path)
    except BadRecord as e:
      skipped.add(name, e)
      continue
    num_examples += 1
    yield {**example, "image": image}
  skipped.log(num_read)


def load_json(path: epath.Path, keys: Sequence[str]) -> dict[str, Any]:
  """The JSON object in `path`, which must have `keys`; else a ValueError naming the file."""
  try:
    with path.open("rb") as f:
      obj = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} is not valid JSON ({e}); is the download complete?") from None
  missing = [k for k in keys if k not in obj] if isinstance(obj, dict) else list(keys)
  if missing:
    raise ValueError(f"{path}: expected a JSON object with keys {list(keys)}; it lacks "
                     f"{missing}.")
  return obj


def fields(record: Any, keys: Sequence[str], where: str) -> list[Any]:
  """record[key] for each key; a ValueError naming `where` (file and index) if one lacks."""
  missing = [k for k in keys if k not in record] if isinstance(record, dict) else list(keys)
  if missing:
    raise ValueError(f"{where}: expected an object with keys {list(keys)}; it lacks {missing}"
                     f" ({record!r:.200}).")
  return [record[k] for k in keys]


@dataclasses.dataclass(eq=False)
class ManualDataConfig(tfds.core.BuilderConfig):
  """max_examples: at most this many examples per split, the first in the files' order
  (None: all); for smoke tests that need only a few of the images."""
  max_examples: int | None = None


SMOKE_EXAMPLES = 1000


def configs() -> list[ManualDataConfig]:
  """`default`: every example; `smoke`: the first SMOKE_EXAMPLES of each split."""
  return [ManualDataConfig(name="default", description="Every example."),
          ManualDataConfig(name="smoke", max_examples=SMOKE_EXAMPLES,
                           description=f"The first {SMOKE_EXAMPLES} examples of each split.")]
