"""The vqav2 and coco_karpathy builders on tiny files in the official formats, the VQAv2
answer vocabulary, and a VQA batch from vqav2 through the input pipeline."""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from multimodal.data import answer_vocab, pipeline
from multimodal.data.builders import coco_karpathy, manual_data, vqav2
from tests.test_jsonl_vqa import _encoded

_REPO = pathlib.Path(__file__).resolve().parents[1]


def _answers(*counts: tuple[str, int]) -> list[str]:
  return [answer for answer, n in counts for _ in range(n)]


# (subset, image_id, question_id, question, ten answers, answer_type, question_type, the
# multiple-choice answer); the test2015 questions have no annotation.
_VQA = [
    ("train2014", 25, 25000, "What color is the bus?",
     _answers(("red", 4), ("dark red", 3), ("Red", 2), ("maroon", 1)), "other",
     "what color is the", "red"),
    ("train2014", 9, 9000, "Is the cat asleep?", _answers(("yes", 8), ("no", 2)), "yes/no",
     "is the", "yes"),
    ("train2014", 9, 9001, "How many cats?", _answers(("2", 5), ("two", 3), ("2 ", 2)),
     "number", "how many", "2"),
    ("train2014", 77, 77000, "Is it day?", _answers(("yes", 10)), "yes/no", "is it", "yes"),
    ("train2014", 77, 77001, "What is blue?", _answers(("sky", 10)), "other", "what is",
     "blue"),
    ("val2014", 42, 42000, "Is it raining?", _answers(("no", 10)), "yes/no", "is it", "no"),
    ("test2015", 1, 1000, "What is this?", None, None, None, None),
]
_MISSING_IMAGE = 77  # Of train2014: both its questions are skipped.
_NUM_EXAMPLES = {"train": 3, "validation": 1, "test": 1}


def _write_json(path: pathlib.Path, obj: dict) -> None:
  path.write_text(json.dumps(obj), encoding="utf-8")


def _write_vqa(root: pathlib.Path) -> None:
  """The official files' layout; images of different sizes, one grayscale, one missing."""
  for subset, split in [("train2014", "train"), ("val2014", "val"), ("test2015", "test")]:
    rows = [row for row in _VQA if row[0] == subset]
    (root / subset).mkdir(parents=True)
    _write_json(root / vqav2.questions_file(subset), {
        "info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
        "data_subtype": subset,
        "questions": [{"image_id": r[1], "question": r[3], "question_id": r[2]} for r in rows]})
    if split != "test":
      _write_json(root / vqav2.annotations_file(subset), {
          "info": {}, "license": {}, "data_type": "mscoco", "data_subtype": subset,
          "annotations": [{
              "question_type": r[6], "multiple_choice_answer": r[7],
              "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i}
                          for i, a in enumerate(r[4], start=1)],
              "image_id": r[1], "answer_type": r[5], "question_id": r[2]} for r in rows]})
  for subset, image_id, shape in [("train2014", 25, (17, 9)), ("train2014", 9, (20, 30, 3)),
                                  ("val2014", 42, (12, 12, 3)), ("test2015", 1, (8, 40, 3))]:
    (root / vqav2.image_file(subset, image_id)).write_bytes(_encoded(shape, "JPEG"))


def _build(name: str, manual_dir: pathlib.Path, **kwargs) -> tfds.core.DatasetBuilder:
  builder = tfds.builder(name, data_dir=manual_dir.parent / "tfds", **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  return builder


def _examples(builder: tfds.core.DatasetBuilder, split: str, key: str) -> dict[int, dict]:
  ds = builder.as_dataset(split, decoders={"image": tfds.decode.SkipDecoding()})
  return {int(ex[key]): ex for ex in tfds.as_numpy(ds)}


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("vqav2") / "manual"
  _write_vqa(root)
  return root


@pytest.fixture(scope="module")
def vqa_builder(vqa_dir) -> tfds.core.DatasetBuilder:
  return _build("vqav2", vqa_dir)


def test_vqav2_splits_features_and_skipped_questions(vqa_builder, vqa_dir):
  splits = vqa_builder.info.splits
  assert {s: splits[s].num_examples for s in splits} == _NUM_EXAMPLES
  assert set(vqa_builder.info.features) == {
      "image", "question", "answers", "question_type", "question_id", "answer_type",
      "question_prefix", "image_id"}
  assert dict(vqa_builder.info.metadata) == {
      "skipped/train/missing_image": 2, "skipped/train/total": 2,
      "skipped/validation/total": 0, "skipped/test/total": 0}

  for split, subset in [("train", "train2014"), ("validation", "val2014")]:
    examples = _examples(vqa_builder, split, "question_id")
    rows = [r for r in _VQA if r[0] == subset and r[1] != _MISSING_IMAGE]
    assert sorted(examples) == sorted(r[2] for r in rows)
    for _, image_id, qid, question, answers, answer_type, prefix, _ in rows:
      ex = examples[qid]
      assert ex["question"].decode() == question
      assert [a.decode() for a in ex["answers"]] == answers  # Exactly, "2 " and "Red" too.
      assert ex["question_type"].decode() == ex["answer_type"].decode() == answer_type
      assert ex["question_prefix"].decode() == prefix and ex["image_id"] == image_id
      assert ex["image"] == (vqa_dir / vqav2.image_file(subset, image_id)).read_bytes()

  test = _examples(vqa_builder, "test", "question_id")[1000]
  assert test["question"] == b"What is this?" and test["image_id"] == 1
  assert len(test["answers"]) == 0
  assert test["question_type"] == test["answer_type"] == test["question_prefix"] == b""


def test_vqav2_grayscale_jpeg_decodes_to_rgb(vqa_builder):
  images = {int(ex["question_id"]): ex["image"].shape
            for ex in tfds.as_numpy(vqa_builder.as_dataset("train"))}
  assert images == {25000: (17, 9, 3), 9000: (20, 30, 3), 9001: (20, 30, 3)}


def test_vqav2_max_examples_keeps_the_first_by_image_id(vqa_dir):
  config = manual_data.ManualDataConfig(name="first2", max_examples=2)
  builder = _build("vqav2", vqa_dir, config=config)
  assert sorted(_examples(builder, "train", "question_id")) == [9000, 9001]  # Image 9 first.
  assert builder.info.splits["validation"].num_examples == 1


def test_vqav2_missing_files_are_named(tmp_path):
  _write_vqa(tmp_path / "manual")
  (tmp_path / "manual" / vqav2.annotations_file("val2014")).unlink()
  shutil.rmtree(tmp_path / "manual/train2014")
  with pytest.raises(FileNotFoundError,
                     match=r"\['train2014/', 'v2_mscoco_val2014_annotations.json'\]"):
    _build("vqav2", tmp_path / "manual")


def test_vqav2_question_without_annotation_names_both_files(tmp_path):
  _write_vqa(tmp_path)
  path = tmp_path / vqav2.annotations_file("train2014")
  annotations = json.loads(path.read_text())
  annotations["annotations"].pop()
  _write_json(path, annotations)
  with pytest.raises(ValueError, match=r"question_id 77001 has no annotation in .*"
                     r"v2_mscoco_train2014_annotations\.json"):
    vqav2.read_questions(tmp_path, "train")


def test_vqav2_answer_vocab_counts_multiple_choice_answers(vqa_dir):
  files = [vqa_dir / vqav2.annotations_file(s) for s in ("train2014", "val2014")]
  # "yes" twice; then "2", "blue", "no", "red" once each: ties in alphabetical order.
  answers = list(vqav2.multiple_choice_answers(files))
  assert answer_vocab.build_answer_vocab(answers, top_k=3) == ("yes", "2", "blue")
  assert answer_vocab.build_answer_vocab(answers, top_k=9) == ("yes", "2", "blue", "no", "red")


def test_vqav2_batches_through_the_pipeline_with_the_vocab_command(vqa_builder, vqa_dir,
                                                                   tmp_path):
  vocab = tmp_path / "answers.txt"
  subprocess.run(
      [sys.executable, "-m", "multimodal.data.answer_vocab", "--top_k=4", f"--output={vocab}",
       "--vqav2_annotations=" + ",".join(
           str(vqa_dir / vqav2.annotations_file(s)) for s in ("train2014", "val2014"))],
      cwd=_REPO, check=True, capture_output=True, text=True, timeout=120)
  assert vocab.read_text() == "yes\n2\nblue\nno\n"

  pp = ("decode|resize(32)|value_range(-1,1)|tok(max_len=16, model='shapes')|"
        f"vqa_answers(vocab='{vocab}')|keep('image','question_tokens','answer_scores')")
  batches = list(pipeline.make_dataset(vqa_builder, split="train", pp=pp, batch_size=2,
                                       train=False).as_numpy_iterator())
  assert [b["image"].shape for b in batches] == [(2, 32, 32, 3), (1, 32, 32, 3)]
  batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert set(batch) == {"image", "question_tokens", "answer_scores"}
  assert batch["question_tokens"].shape == (3, 16)
  assert -1 <= batch["image"].min() and batch["image"].max() <= 1
  # Soft scores min(1, count / 3) over yes, 2, blue, no; "red" is out of the vocab.
  assert sorted(map(tuple, batch["answer_scores"].round(4))) == sorted(
      [(1, 0, 0, 0.6667), (0, 1, 0, 0), (0, 0, 0, 0)])


_KARPATHY = [  # (Karpathy split, folder, cocoid, raw sentences, image shape; None: missing)
    ("train", "train2014", 9, ["A cat sleeps on a bed. ", "  Two cats.\n"], (6, 9, 3)),
    ("restval", "val2014", 42, ["A rainy street", "Umbrellas, people and a bus."], (10, 5)),
    ("val", "val2014", 73, ["A red bus"], (7, 7, 3)),
    ("test", "val2014", 74, ["A dog runs .", "Ein Hund läuft.", "犬"], (5, 12, 3)),
    ("test", "val2014", 75, ["Its image is missing."], None),
]


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("coco") / "manual"
  _write_karpathy(root)
  return root


def _write_karpathy(root: pathlib.Path) -> None:
  """Karpathy's dataset_coco.json and the COCO images it names (one missing)."""
  images = []
  for split, folder, cocoid, raws, shape in _KARPATHY:
    filename = f"COCO_{folder}_{cocoid:012d}.jpg"
    images.append({
        "filepath": folder, "filename": filename, "imgid": len(images), "split": split,
        "sentences": [{"raw": raw, "tokens": raw.split(), "imgid": len(images), "sentid": i}
                      for i, raw in enumerate(raws)],
        "sentids": list(range(len(raws))), "cocoid": cocoid})
    (root / folder).mkdir(parents=True, exist_ok=True)
    if shape:
      (root / folder / filename).write_bytes(_encoded(shape, "JPEG"))
  _write_json(root / coco_karpathy.KARPATHY_FILE, {"images": images, "dataset": "coco"})


def test_coco_karpathy_splits_captions_and_skipped_images(coco_dir):
  builder = _build("coco_karpathy", coco_dir)
  splits = builder.info.splits
  assert {s: splits[s].num_examples for s in splits} == {"train": 2, "validation": 1, "test": 1}
  assert set(builder.info.features) == {"image", "captions", "image_id"}
  assert dict(builder.info.metadata) == {
      "skipped/train/total": 0, "skipped/validation/total": 0,
      "skipped/test/missing_image": 1, "skipped/test/total": 1}
  for split, ids in [("train", [9, 42]), ("validation", [73]), ("test", [74])]:
    examples = _examples(builder, split, "image_id")
    assert sorted(examples) == ids
    for _, folder, cocoid, raws, _ in (k for k in _KARPATHY if k[2] in ids):
      assert [c.decode() for c in examples[cocoid]["captions"]] == [r.strip() for r in raws]
      assert examples[cocoid]["image"] == (
          coco_dir / folder / f"COCO_{folder}_{cocoid:012d}.jpg").read_bytes()
  shapes = {int(ex["image_id"]): ex["image"].shape
            for ex in tfds.as_numpy(builder.as_dataset("train"))}
  assert shapes == {9: (6, 9, 3), 42: (10, 5, 3)}  # Grayscale decodes to RGB.
