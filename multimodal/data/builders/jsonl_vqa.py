"""`jsonl_vqa`: a user's own VQA data, from JSONL files and images in TFDS's manual_dir.

Build it with `tfds.builder("jsonl_vqa", data_dir=...).download_and_prepare(
download_config=tfds.download.DownloadConfig(manual_dir=DIR))` (config `jsonl_vqa/strict` to
fail on the first bad image instead of skipping it).
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable, Iterator

from absl import flags, logging
from etils import epath
import tensorflow as tf
import tensorflow_datasets as tfds

from multimodal.data.builders.vqa_features import vqa_features

_SPLITS = {"train": True, "validation": True, "test": False}  # split -> required
_REQUIRED = ("image", "question", "answers")
# Record key -> (check, what the value must be).
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "image": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "question": (lambda v: isinstance(v, str), "a string"),
    "answers": (lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
                "a list of strings"),
    "question_type": (lambda v: isinstance(v, str), "a string"),
    "question_id": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
}
_NUM_LISTED = 5  # Bad images named in the end-of-split log.

_INSTRUCTIONS = """\
Put your VQA data in the manual_dir:
  train.jsonl, validation.jsonl (and optionally test.jsonl), plus the images they name.
One JSON object per line:
  {"image": "images/0001.png", "question": "What color is the ball?",
   "answers": ["red", "red", "dark red"], "question_type": "what color", "question_id": 17}
- image: path relative to the JSONL file's folder; PNG or JPEG, any size (stored unchanged).
- question: a string; may be empty (the `tok` op then gives just the BOS token).
- answers: a list of strings, one per annotator (empty for an unlabeled test split).
- question_type: optional string, "" when absent.
- question_id: optional int, unique within a file; defaults to the line number (from 1).
Lines with bad JSON or missing/mistyped keys are errors naming the file and line. Images are
fully decoded while building: a missing or corrupt one is skipped and counted in the log
(config `jsonl_vqa/strict`: an error naming the file and line instead).
"""


def read_jsonl(path: epath.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yields (line number, record) with all five keys set, after checking each line."""
  path = epath.Path(path)
  first_line_of_id: dict[int, int] = {}
  with path.open(encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if line.strip():
        record = _parse_line(line, f"{path}:{line_no}", default_id=line_no)
        qid = record["question_id"]
        if qid in first_line_of_id:
          raise ValueError(f"{path}:{line_no}: question_id {qid} is already used on line"
                           f" {first_line_of_id[qid]}.")
        first_line_of_id[qid] = line_no
        yield line_no, record


def _parse_line(line: str, where: str, default_id: int) -> dict[str, Any]:
  """One JSONL line -> record; a ValueError naming `where` ("file:line") if malformed."""
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"{where}: invalid JSON ({e.msg}).") from None
  if not isinstance(obj, dict):
    raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
  missing = [k for k in _REQUIRED if k not in obj]
  if missing:
    raise ValueError(f"{where}: missing key(s) {missing}; each line needs {list(_REQUIRED)}.")
  record = {"question_type": "", "question_id": default_id, **obj}
  for key, (is_valid, expected) in _FIELDS.items():
    if not is_valid(record[key]):
      raise ValueError(f"{where}: {key!r} must be {expected}, got {record[key]!r}.")
  return {k: record[k] for k in _FIELDS}


def _read_checked_image(path: epath.Path) -> bytes:
  """The file's encoded bytes, once they fully decode; else a ValueError saying why."""
  try:
    data = path.read_bytes()
  except OSError as e:
    raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
  try:
    tf.io.decode_image(data, channels=3, expand_animations=False)  # As the `decode` op does.
  except tf.errors.OpError as e:
    reason = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", e.message)
    raise ValueError(f"cannot decode {path}: {reason}") from None
  return data


@dataclasses.dataclass(eq=False)
class JsonlVqaConfig(tfds.core.BuilderConfig):
  """strict: a missing or corrupt image is an error, instead of being skipped and counted."""
  strict: bool = False


class JsonlVqa(tfds.core.GeneratorBasedBuilder):
  """A user's VQA data in JSONL files; see MANUAL_DOWNLOAD_INSTRUCTIONS for the format."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
      JsonlVqaConfig(name="default", description="Skips (and counts) bad images."),
      JsonlVqaConfig(name="strict", strict=True, description="A bad image is an error."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=vqa_features())

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    files = {split: dl_manager.manual_dir / f"{split}.jsonl" for split in _SPLITS}
    missing = [f.name for split, f in files.items() if _SPLITS[split] and not f.exists()]
    if missing:
      raise FileNotFoundError(
          f"jsonl_vqa: {missing} not found in the manual_dir {dl_manager.manual_dir}.\n"
          + _INSTRUCTIONS)
    return {split: self._generate_examples(f) for split, f in files.items() if f.exists()}

  def _generate_examples(self, path: epath.Path):
    bad: list[str] = []
    num_lines = 0
    for line_no, record in read_jsonl(path):
      num_lines += 1
      try:
        image = _read_checked_image(path.parent / record["image"])
      except ValueError as e:
        if self.builder_config.strict:
          raise ValueError(f"{path}:{line_no}: {e}") from None
        bad.append(f"line {line_no}: {e}")
        continue
      yield line_no, {**record, "image": image}
    if bad:
      logging.warning(
          "jsonl_vqa: skipped %d of %d examples of %s for bad images (config jsonl_vqa/strict"
          " fails instead); the first ones: %s", len(bad), num_lines, path,
          "; ".join(bad[:_NUM_LISTED]))


def define_source_flags() -> None:
  """Defines --dataset, --split, --data_dir and --jsonl, as read by `iter_vqa_text`."""
  flags.DEFINE_string("dataset", None, "A VQA TFDS dataset (e.g. shapes_vqa), or use --jsonl.")
  flags.DEFINE_string("split", "train", "The TFDS split of --dataset.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir of --dataset.")
  flags.DEFINE_string("jsonl", None, "A JSONL file in jsonl_vqa's format, or use --dataset.")


def iter_vqa_text(*, dataset: str | None = None, split: str = "train",
                  data_dir: str | None = None,
                  jsonl: str | None = None) -> Iterator[tuple[str, list[str]]]:
  """Yields (question, answers) of a VQA TFDS split, or of a JSONL file in this format."""
  if (dataset is None) == (jsonl is None):
    raise ValueError(f"Give exactly one of dataset and jsonl, got {dataset=} and {jsonl=}.")
  if jsonl is not None:
    for _, record in read_jsonl(jsonl):
      yield record["question"], record["answers"]
    return
  ds = tfds.load(dataset, split=split, data_dir=data_dir,
                 decoders={"image": tfds.decode.SkipDecoding()})
  for ex in ds.map(lambda ex: (ex["question"], ex["answers"])).as_numpy_iterator():
    yield ex[0].decode(), [a.decode() for a in ex[1]]
