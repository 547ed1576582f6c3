"""`vqav2`: VQA v2 (visualqa.org) from the official files, downloaded into TFDS's manual_dir.

Build it with `tfds.builder("vqav2", data_dir=...).download_and_prepare(
download_config=tfds.download.DownloadConfig(manual_dir=DIR))`, or name it in a config's data
(`name="vqav2", manual_dir=DIR`); MANUAL_DOWNLOAD_INSTRUCTIONS says what DIR holds.

Splits: train (train2014: 443,757 questions on 82,783 images), validation (val2014: 214,354
questions on 40,504 images) and, when its files are there, test (test2015: 447,793 questions,
no answers; test-dev is a subset of it, in a file this builder does not read).

Features, those of `vqa_features()` and three more:
- answers: the ten annotators' answers, exactly as released (the VQA metric normalises them
  when it scores); [] in test.
- question_type: VQA's *answer* type, "yes/no", "number" or "other" ("" in test). Our VQA
  evaluators report accuracy per `question_type`, so they report the official per-answer-type
  breakdown, the one papers give. VQA's own `question_type` is kept as question_prefix.
- answer_type: the same answer type, under its VQA name.
- question_prefix: VQA's `question_type`, the question's first words as VQA classed them
  (65 kinds, e.g. "what color is the"); "" in test.
- image_id, question_id: COCO's image id and VQA's question id.
Images are stored as released: JPEGs of any size, some grayscale (the `decode` op makes them
RGB). A question whose image is missing, unreadable, empty or does not decode is skipped and
counted per reason, in the log and in `builder.info.metadata` as "skipped/SPLIT/REASON" (and
"skipped/SPLIT/total"). Config `vqav2/smoke`: the first 1,000 questions of each split in image
id order, so that only a few hundred images are read.

The answer vocabulary of a VQA classifier (3,129 answers, as the VQAv2 codebases use) comes from
the annotations: `python -m multimodal.data.answer_vocab --vqav2_annotations=...` (see
`multiple_choice_answers`).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from multimodal.data.builders import manual_data
from multimodal.data.builders.vqa_features import vqa_features

# Split -> the COCO subset its questions and images come from.
_SUBSETS = {"train": "train2014", "validation": "val2014", "test": "test2015"}
_UNANSWERED = frozenset({"test"})  # Splits released without annotations.

_INSTRUCTIONS = """\
Download VQA v2 ("Balanced Real Images", https://visualqa.org/download.html) and the COCO images
(https://cocodataset.org/#download), and unzip them into the manual_dir, which then holds:
  v2_OpenEnded_mscoco_train2014_questions.json  from v2_Questions_Train_mscoco.zip
  v2_OpenEnded_mscoco_val2014_questions.json    from v2_Questions_Val_mscoco.zip
  v2_mscoco_train2014_annotations.json          from v2_Annotations_Train_mscoco.zip
  v2_mscoco_val2014_annotations.json            from v2_Annotations_Val_mscoco.zip
  train2014/COCO_train2014_000000000009.jpg ... from train2014.zip (13 GB)
  val2014/COCO_val2014_000000000042.jpg ...     from val2014.zip (6 GB)
and, for the test split (optional):
  v2_OpenEnded_mscoco_test2015_questions.json   from v2_Questions_Test_mscoco.zip
  test2015/COCO_test2015_000000000001.jpg ...   from test2015.zip (12 GB)
The VQA zips are at https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/NAME.zip, the images at
http://images.cocodataset.org/zips/NAME.zip. A question whose image is missing or does not
decode is skipped and counted (in the log and in builder.info.metadata).
"""


def questions_file(subset: str) -> str:
  return f"v2_OpenEnded_mscoco_{subset}_questions.json"


def annotations_file(subset: str) -> str:
  return f"v2_mscoco_{subset}_annotations.json"


def image_file(subset: str, image_id: int) -> str:
  return f"{subset}/COCO_{subset}_{image_id:012d}.jpg"


def _needed_files(split: str) -> list[str]:
  """What the manual_dir must hold for `split`: its questions, annotations and images."""
  subset = _SUBSETS[split]
  annotations = [] if split in _UNANSWERED else [annotations_file(subset)]
  return [questions_file(subset), *annotations, f"{subset}/"]


def _annotations(path: epath.Path) -> dict[int, dict[str, Any]]:
  """question_id -> {answers, question_type (the answer type), answer_type, question_prefix}."""
  by_question = {}
  for i, annotation in enumerate(manual_data.load_json(path, ["annotations"])["annotations"]):
    where = f"{path}: annotations[{i}]"
    question_id, answers, answer_type, prefix = manual_data.fields(
        annotation, ["question_id", "answers", "answer_type", "question_type"], where)
    by_question[question_id] = {
        "answers": [manual_data.fields(a, ["answer"], f"{where}.answers")[0] for a in answers],
        "question_type": answer_type, "answer_type": answer_type, "question_prefix": prefix}
  return by_question


def read_questions(manual_dir: epath.Path, split: str) -> list[dict[str, Any]]:
  """The split's questions with their annotations: every feature but the image, sorted by
  (image_id, question_id) so that each image's questions come together."""
  subset = _SUBSETS[split]
  path = manual_dir / questions_file(subset)
  if split in _UNANSWERED:
    annotations = None
  else:
    annotations_path = manual_dir / annotations_file(subset)
    annotations = _annotations(annotations_path)
  examples = []
  for i, question in enumerate(manual_data.load_json(path, ["questions"])["questions"]):
    question_id, image_id, text = manual_data.fields(
        question, ["question_id", "image_id", "question"], f"{path}: questions[{i}]")
    if annotations is None:
      annotation = {"answers": [], "question_type": "", "answer_type": "", "question_prefix": ""}
    elif question_id in annotations:
      annotation = annotations[question_id]
    else:
      raise ValueError(f"{path}: question_id {question_id} has no annotation in "
                       f"{annotations_path}; are both files the VQA v2 release's, of {subset}?")
    examples.append({"question": text, "question_id": question_id, "image_id": image_id,
                     **annotation})
  return sorted(examples, key=lambda ex: (ex["image_id"], ex["question_id"]))


def multiple_choice_answers(paths: Iterable[epath.PathLike]) -> Iterator[str]:
  """Each question's `multiple_choice_answer` in these annotation files, as released.

  This is what the VQAv2 codebases count to choose a classifier's answers: BUTD (Anderson et
  al., hengyuan-hu/bottom-up-attention-vqa), Pythia/MMF, MCAN, ViLT and BEiT-3 keep the
  multiple-choice answers that occur at least 9 times in train + val, which gives their 3,129
  answers. The top 3,129 of train + val here (`answer_vocab.build_answer_vocab`) is that kind
  of vocabulary with one difference: they count after vqaEval's normalisation, as they also
  normalise the ten answers a target is made from, while here the `vqa_answers` op matches the
  stored answers exactly; so the answers are counted as released, since a normalised entry
  ("t shirt" for "t-shirt") could match no stored answer and never be a target.
  """
  for path in map(epath.Path, paths):
    for i, annotation in enumerate(manual_data.load_json(path, ["annotations"])["annotations"]):
      yield manual_data.fields(annotation, ["multiple_choice_answer"],
                               f"{path}: annotations[{i}]")[0]


class Vqav2(tfds.core.GeneratorBasedBuilder):
  """VQA v2 from the official files; see MANUAL_DOWNLOAD_INSTRUCTIONS and the module doc."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = manual_data.configs()

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            **vqa_features(), "answer_type": tfds.features.Text(),
            "question_prefix": tfds.features.Text(), "image_id": np.int64}),
        homepage="https://visualqa.org", metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = dl_manager.manual_dir
    test_questions = manual_dir / questions_file(_SUBSETS["test"])
    splits = [s for s in _SUBSETS if s not in _UNANSWERED or test_questions.exists()]
    missing = [name for split in splits for name in _needed_files(split)
               if not (manual_dir / name).exists()]
    if missing:
      raise FileNotFoundError(
          f"vqav2: {missing} not found in the manual_dir {manual_dir}.\n" + _INSTRUCTIONS)
    return {split: self._generate_examples(manual_dir, split) for split in splits}

  def _generate_examples(self, manual_dir: epath.Path, split: str):
    subset = _SUBSETS[split]
    records = ((f"question_id {ex['question_id']}",
                manual_dir / image_file(subset, ex["image_id"]), ex)
               for ex in read_questions(manual_dir, split))
    skipped = manual_data.SkippedRecords(f"vqav2: {split}", manual_data.IMAGE_REASONS)
    for example in manual_data.examples_with_images(
        records, skipped, max_examples=self.builder_config.max_examples):
      yield example["question_id"], example
    self.info.metadata.update(skipped.metadata(split))
