"""`jsonl_vqa`: a user's own VQA data, from JSONL files and images in TFDS's manual_dir.

Build it with `tfds.builder("jsonl_vqa", data_dir=...).download_and_prepare(
download_config=tfds.download.DownloadConfig(manual_dir=DIR))`. Bad records are skipped and
counted per reason (`REASONS`), in the log and in `builder.info.metadata` as
"skipped/SPLIT/REASON" (and "skipped/SPLIT/total"); config `jsonl_vqa/strict` fails on the
first one instead, naming the file, the line and the reason.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow_datasets as tfds
from absl import flags
from etils import epath

from multimodal.data.builders.manual_data import (IMAGE_REASONS, BadRecord,
                                                  SkippedRecords, read_checked_image)
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
# Why a record is skipped (or, strict, an error), in the order the checks run.
REASONS = ("invalid_json", "invalid_unicode", "missing_field", "wrong_type", "text_too_long",
           "duplicate_question_id", *IMAGE_REASONS)
# Longer texts are junk rather than questions; the `tok` op truncates anything shorter.
MAX_TEXT_CHARS = 10_000

_INSTRUCTIONS = """\
Put your VQA data in the manual_dir:
  train.jsonl, validation.jsonl (and optionally test.jsonl), plus the images they name.
One JSON object per line, UTF-8:
  {"image": "images/0001.png", "question": "What color is the ball?",
   "answers": ["red", "red", "dark red"], "question_type": "what color", "question_id": 17}
- image: path relative to the JSONL file's folder; PNG or JPEG, any size (stored unchanged).
- question: a string in any language or script, kept as is; may be empty (the `tok` op then
  gives just the BOS token).
- answers: a list of strings, one per annotator (empty for an unlabeled test split).
- question_type: optional string, "" when absent.
- question_id: optional int, unique within a file; defaults to the line number (from 1).
Bad records are skipped and counted per reason in the log: invalid JSON or UTF-8, a missing or
mistyped key, a text over max_text_chars (10,000) characters, a repeated question_id, an image
that is missing, unreadable, empty (0 bytes) or does not decode (images are fully decoded
while building). Config `jsonl_vqa/strict`: the first one is an error naming the file and line.
"""


def read_jsonl(path: epath.PathLike, *, read_images: bool = False, strict: bool = False,
               max_text_chars: int = MAX_TEXT_CHARS,
               skipped: SkippedRecords | None = None
               ) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yields (line number, record) of each good line, with all five keys set.

  With read_images, the record's "image" is the image file's encoded bytes (checked to decode)
  instead of its path. A bad line is skipped and counted per reason in `skipped`, and the
  counts are logged in one line at the end; strict: it is a ValueError naming the file, the
  line and the reason instead.
  """
  path = epath.Path(path)
  skipped = _skipped_records(path) if skipped is None else skipped
  line_of_id: dict[int, int] = {}
  num_records = 0
  with path.open("rb") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      num_records += 1
      try:
        record = _parse_line(line, default_id=line_no, max_text_chars=max_text_chars)
        qid = record["question_id"]
        if qid in line_of_id:
          raise BadRecord("duplicate_question_id",
                          f"question_id {qid} is already used on line {line_of_id[qid]}")
        if read_images:
          record["image"] = read_checked_image(path.parent / record["image"])
      except BadRecord as e:
        if strict:
          raise ValueError(f"{path}:{line_no}: {e}") from None
        skipped.add(f"line {line_no}", e)
        continue
      line_of_id[qid] = line_no
      yield line_no, record
  skipped.log(num_records)


def _skipped_records(path: epath.Path) -> SkippedRecords:
  return SkippedRecords(f"jsonl_vqa: {path}", REASONS)


def _parse_line(line: bytes, default_id: int, max_text_chars: int) -> dict[str, Any]:
  """One JSONL line -> record with all five keys; a BadRecord saying what is wrong."""
  try:
    obj = json.loads(line.decode("utf-8-sig"))  # -sig: a BOM that an editor put first.
  except UnicodeDecodeError as e:
    raise BadRecord("invalid_unicode", f"not UTF-8 ({e.reason} at byte {e.start})") from None
  except json.JSONDecodeError as e:
    raise BadRecord("invalid_json", f"{e.msg} at column {e.colno}") from None
  except RecursionError:
    raise BadRecord("invalid_json", "nested too deeply") from None
  if not isinstance(obj, dict):
    raise BadRecord("invalid_json", f"expected a JSON object, got {type(obj).__name__}")
  missing = [k for k in _REQUIRED if k not in obj]
  if missing:
    raise BadRecord("missing_field",
                    f"missing key(s) {missing}; each line needs {list(_REQUIRED)}")
  record = {"question_type": "", "question_id": default_id, **obj}
  for key, (is_valid, expected) in _FIELDS.items():
    if not is_valid(record[key]):
      raise BadRecord("wrong_type", f"{key!r} must be {expected}, got {record[key]!r:.100}")
  texts = [(k, record[k]) for k in ("image", "question", "question_type")]
  for key, text in texts + [("answers", a) for a in record["answers"]]:
    if len(text) > max_text_chars:
      raise BadRecord("text_too_long", f"{key!r} has {len(text):,} characters, over"
                      f" max_text_chars={max_text_chars:,}")
    try:
      text.encode("utf-8")
    except UnicodeEncodeError as e:  # JSON escapes of lone surrogates, e.g. "\\ud800".
      raise BadRecord("invalid_unicode", f"{key!r} is not valid Unicode ({e.reason})") from None
  return {k: record[k] for k in _FIELDS}


@dataclasses.dataclass(eq=False)
class JsonlVqaConfig(tfds.core.BuilderConfig):
  """strict: a bad record is an error instead of being skipped and counted.

  max_text_chars: a record with a longer text (question, answer, ...) is bad.
  """
  strict: bool = False
  max_text_chars: int = MAX_TEXT_CHARS


class JsonlVqa(tfds.core.GeneratorBasedBuilder):
  """A user's VQA data in JSONL files; see MANUAL_DOWNLOAD_INSTRUCTIONS for the format."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "Every kind of bad record is skipped and counted per reason (info.metadata).",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = [
      JsonlVqaConfig(name="default", description="Skips (and counts) bad records."),
      JsonlVqaConfig(name="strict", strict=True, description="A bad record is an error."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=vqa_features(),
                                          metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    files = {split: dl_manager.manual_dir / f"{split}.jsonl" for split in _SPLITS}
    missing = [f.name for split, f in files.items() if _SPLITS[split] and not f.exists()]
    if missing:
      raise FileNotFoundError(
          f"jsonl_vqa: {missing} not found in the manual_dir {dl_manager.manual_dir}.\n"
          + _INSTRUCTIONS)
    return {split: self._generate_examples(f, split) for split, f in files.items()
            if f.exists()}

  def _generate_examples(self, path: epath.Path, split: str):
    config = self.builder_config
    skipped = _skipped_records(path)
    yield from read_jsonl(path, read_images=True, strict=config.strict,
                          max_text_chars=config.max_text_chars, skipped=skipped)
    self.info.metadata.update(skipped.metadata(split))


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
