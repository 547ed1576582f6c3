"""`nlvr2`: NLVR2 (Suhr et al., 2019): is a statement true of a pair of photographs? From the
official files, downloaded into TFDS's manual_dir.

Build it with `tfds.builder("nlvr2", data_dir=...).download_and_prepare(
download_config=tfds.download.DownloadConfig(manual_dir=DIR))`, or name it in a config's data
(`name="nlvr2", manual_dir=DIR`); MANUAL_DOWNLOAD_INSTRUCTIONS says what DIR holds: the JSON
files of https://github.com/lil-lab/nlvr (nlvr2/data) and the images, which the NLVR2 authors
share on request (the Google Form linked from nlvr2/README.md there).

Splits: train (train.json: 86,373 examples), validation (dev.json: 6,982) and test
(test1.json: 6,967, the public test set "Test-P"). The other test files (test2.json, "Test-U")
are not read.

Features: those of `shapes_nlvr` where the two overlap, so that the same pp ops and models
serve both:
- left_image, right_image: the pair's images ("...-img0.png" is the left, "...-img1.png" the
  right) as released: any size, stored unchanged. Not all of them are PNGs despite the name
  (NLVR2's README says so; read_checked_image accepts any format TF decodes). The input
  pipeline (`skip_image_decoding`, then the `decode` op: `tf.io.decode_image` with
  expand_animations=False) decodes each to uint8[H, W, 3]; TFDS's own decoding does too, but
  fails on a GIF (it keeps the animation axis).
- statement: the record's `sentence`, exactly as released.
- label: bool, whether the statement is true of the pair (the release's "True" / "False").
and NLVR2's own:
- identifier: e.g. "dev-850-0-0" (split-set_id-pair_id-sentence_id; the example's key).
- synset, query: the synset and the image-search query the image set came from ("" when a
  record has none), as released (the query's numeric suffix included).
A record that lacks a field, has one of the wrong type or an identifier not of that form,
repeats an identifier, has a label other than "True" / "False", or whose left or right image
is missing, unreadable, empty or does not decode, is skipped and counted per reason (`REASONS`),
in the log and in `builder.info.metadata` as "skipped/SPLIT/REASON" (and "skipped/SPLIT/total").
A line that is not a JSON object is an error naming the file and line. Config `nlvr2/smoke`:
the first 1,000 examples of each split.
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from multimodal.data.builders import manual_data
from multimodal.data.builders.nlvr_features import nlvr_features

DATA_DIR = "nlvr/nlvr2/data"  # Where the lil-lab/nlvr repository keeps the JSON files.
# Our split -> (its JSON file in DATA_DIR, the folder of its images in the manual_dir).
SPLITS = {"train": ("train.json", "images/train"), "validation": ("dev.json", "dev"),
          "test": ("test1.json", "test1")}
_DIRECTORY_SPLITS = frozenset({"train"})  # Splits whose images are in numbered subfolders.
_LABELS = {"True": True, "False": False}
# Why a record is skipped, in the order the checks run.
REASONS = ("missing_field", "wrong_type", "bad_identifier", "bad_label", "duplicate_identifier",
           *manual_data.IMAGE_REASONS)
# "split-set_id-pair_id-sentence_id": the pair's images are named by all but the last part.
_IDENTIFIER = re.compile(r"([^/\\]+)-\d+")

_INSTRUCTIONS = f"""\
Clone https://github.com/lil-lab/nlvr (for the JSON files in nlvr2/data) and get the images:
the NLVR2 authors share them for research on request, through the Google Form linked from
nlvr2/README.md there (its section "Direct image download"), as train_img.zip, dev_img.zip and
test1_img.zip. Put the clone and the unzipped images in the manual_dir, which then holds:
  {DATA_DIR}/train.json, {DATA_DIR}/dev.json, {DATA_DIR}/test1.json
  images/train/0/train-10171-0-img0.png ...  from train_img.zip (subfolders 0 to 99)
  dev/dev-850-0-img0.png ...                 from dev_img.zip
  test1/test1-261-0-img0.png ...             from test1_img.zip
(the layout of microsoft/unilm's BEiT-3 NLVR2 instructions). A record whose image is missing
or does not decode, or that is otherwise bad, is skipped and counted (in the log and in
builder.info.metadata).
"""


def _needed_files(split: str) -> list[str]:
  """What the manual_dir must hold for `split`: its JSON file and its images' folder."""
  json_file, image_folder = SPLITS[split]
  return [f"{DATA_DIR}/{json_file}", f"{image_folder}/"]


def image_files(record: dict[str, Any],
                image_folder: epath.Path) -> tuple[epath.Path, epath.Path]:
  """(left, right) image files of a record checked by `_check_record`: the identifier without
  its last "-N", plus "-img0.png" / "-img1.png", in the record's `directory` if it has one."""
  folder = image_folder / str(record["directory"]) if "directory" in record else image_folder
  stem = _IDENTIFIER.fullmatch(record["identifier"]).group(1)
  return folder / f"{stem}-img0.png", folder / f"{stem}-img1.png"


def _check_record(record: dict[str, Any], split: str) -> dict[str, Any]:
  """The example's features but the images; a BadRecord saying what is wrong."""
  required = ["identifier", "sentence", "label"]
  required += ["directory"] if split in _DIRECTORY_SPLITS else []
  missing = [k for k in required if k not in record]
  if missing:
    raise manual_data.BadRecord("missing_field",
                                f"missing key(s) {missing}; each {split} record needs {required}")
  for key in ("identifier", "sentence", "synset", "query"):
    if key in record and not isinstance(record[key], str):
      raise manual_data.BadRecord("wrong_type",
                                  f"{key!r} must be a string, got {record[key]!r:.100}")
  if "directory" in record:
    directory = record["directory"]
    if not (isinstance(directory, int) and not isinstance(directory, bool) and directory >= 0
            or isinstance(directory, str) and directory.isascii() and directory.isdigit()):
      raise manual_data.BadRecord(
          "wrong_type", f"'directory' must be a folder number, got {directory!r:.100}")
  if not _IDENTIFIER.fullmatch(record["identifier"]):
    raise manual_data.BadRecord(
        "bad_identifier", f"identifier {record['identifier']!r:.100} is not of the form "
        "split-set_id-pair_id-sentence_id (e.g. 'dev-850-0-0')")
  if not (isinstance(record["label"], str) and record["label"] in _LABELS):
    raise manual_data.BadRecord("bad_label",
                                f"label must be 'True' or 'False', got {record['label']!r:.100}")
  return {"statement": record["sentence"], "label": _LABELS[record["label"]],
          "identifier": record["identifier"], "synset": record.get("synset", ""),
          "query": record.get("query", "")}


def read_examples(manual_dir: epath.Path, split: str, skipped: manual_data.SkippedRecords,
                  max_examples: int | None = None) -> Iterator[dict[str, Any]]:
  """The split's examples in the JSON file's order: every feature, the images as their encoded
  bytes (checked to decode). Bad records are counted in `skipped` and logged at the end.

  Args:
    manual_dir: holds the files MANUAL_DOWNLOAD_INSTRUCTIONS names.
    split: one of SPLITS.
    max_examples: stop after this many examples (None: read every record).

  Raises:
    ValueError: a line is not a JSON object (naming the file and the line).
  """
  json_file, image_folder = SPLITS[split]
  path = manual_dir / DATA_DIR / json_file
  # A pair has up to two statements; the records of one image set (four pairs, eight images)
  # are on consecutive lines in the release's files (test2.json's, at least), so keeping eight
  # images reads and decodes each once.
  read_image = functools.lru_cache(maxsize=8)(manual_data.read_checked_image)
  line_of_id: dict[str, int] = {}
  num_read = num_examples = 0
  with path.open("rb") as f:
    for line_no, line in enumerate(f, start=1):
      if num_examples == max_examples:
        break
      if not line.strip():
        continue
      num_read += 1
      try:
        record = json.loads(line.decode("utf-8-sig"))  # -sig: a BOM an editor put.
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}:{line_no} is not valid JSON ({e}); is the download "
                         "complete?") from None
      if not isinstance(record, dict):
        raise ValueError(f"{path}:{line_no}: expected a JSON object, got "
                         f"{type(record).__name__} ({record!r:.100}).")
      try:
        example = _check_record(record, split)
        identifier = example["identifier"]
        if identifier in line_of_id:
          raise manual_data.BadRecord(
              "duplicate_identifier",
              f"identifier {identifier!r} is already used on line {line_of_id[identifier]}")
        left, right = image_files(record, manual_dir / image_folder)
        example["left_image"] = read_image(left)
        example["right_image"] = read_image(right)
      except manual_data.BadRecord as e:
        name = record.get("identifier")
        skipped.add(f"line {line_no}" + (f" ({name})" if isinstance(name, str) else ""), e)
        continue
      line_of_id[identifier] = line_no
      num_examples += 1
      yield example
  skipped.log(num_read)


def skipped_records(split: str) -> manual_data.SkippedRecords:
  return manual_data.SkippedRecords(f"nlvr2: {split}", REASONS)


class Nlvr2(tfds.core.GeneratorBasedBuilder):
  """NLVR2 from the official files; see MANUAL_DOWNLOAD_INSTRUCTIONS and the module doc."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = manual_data.configs()

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            **nlvr_features(),
            "identifier": tfds.features.Text(),
            "synset": tfds.features.Text(),
            "query": tfds.features.Text(),
        }),
        homepage="https://lil.nlp.cornell.edu/nlvr/", metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = dl_manager.manual_dir
    missing = [name for split in SPLITS for name in _needed_files(split)
               if not (manual_dir / name).exists()]
    if missing:
      raise FileNotFoundError(
          f"nlvr2: {missing} not found in the manual_dir {manual_dir}.\n" + _INSTRUCTIONS)
    return {split: self._generate_examples(manual_dir, split) for split in SPLITS}

  def _generate_examples(self, manual_dir: epath.Path, split: str
                         ) -> Iterator[tuple[str, dict[str, Any]]]:
    skipped = skipped_records(split)
    for example in read_examples(manual_dir, split, skipped,
                                 max_examples=self.builder_config.max_examples):
      yield example["identifier"], example
    self.info.metadata.update(skipped.metadata(split))
