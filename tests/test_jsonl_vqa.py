"""The jsonl_vqa builder on a tiny dataset in the real format, and the answer-vocab command."""
from __future__ import annotations

import io
import json
import logging
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from multimodal.data import answer_vocab
from multimodal.data.builders import jsonl_vqa

_REPO = pathlib.Path(__file__).resolve().parents[1]

_TRAIN = [
    {"image": "images/a.png", "question": "what color is it?", "answers": ["red"] * 3,
     "question_type": "color", "question_id": 10},
    {"image": "images/b.jpg", "question": "", "answers": ["no", "yes", "no"]},
    {"image": "images/corrupt.png", "question": "how many?", "answers": ["2"]},
    {"image": "images/missing.png", "question": "is it?", "answers": ["yes"]},
    {"image": "images/a.png", "question": "is it red?", "answers": ["yes"]},
]


def _write_jsonl(path: pathlib.Path, records: list[dict]) -> None:
  path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _encoded(shape: tuple[int, int, int], fmt: str) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, np.uint8)).save(buf, fmt)
  return buf.getvalue()


@pytest.fixture
def manual_dir(tmp_path) -> pathlib.Path:
  root = tmp_path / "manual"
  (root / "images").mkdir(parents=True)
  (root / "images/a.png").write_bytes(_encoded((30, 40, 3), "PNG"))
  (root / "images/b.jpg").write_bytes(_encoded((17, 9, 3), "JPEG"))
  (root / "images/corrupt.png").write_bytes(_encoded((30, 40, 3), "PNG")[:100])
  _write_jsonl(root / "train.jsonl", _TRAIN)
  _write_jsonl(root / "validation.jsonl", _TRAIN[:2])
  return root


def _build(name: str, manual_dir: pathlib.Path) -> tfds.core.DatasetBuilder:
  builder = tfds.builder(name, data_dir=manual_dir.parent / "tfds")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  return builder


def test_builds_keeping_bytes_and_skipping_bad_images(manual_dir, caplog):
  with caplog.at_level(logging.WARNING):
    builder = _build("jsonl_vqa", manual_dir)
  assert builder.info.splits["train"].num_examples == 3
  assert builder.info.splits["validation"].num_examples == 2
  assert "test" not in builder.info.splits
  assert "skipped 2 of 5" in caplog.text
  assert "corrupt.png" in caplog.text and "missing.png" in caplog.text

  ds = builder.as_dataset("train", decoders={"image": tfds.decode.SkipDecoding()})
  examples = {int(ex["question_id"]): ex for ex in tfds.as_numpy(ds)}
  assert sorted(examples) == [2, 5, 10]  # Explicit id, else the line number.
  assert examples[10]["image"] == (manual_dir / "images/a.png").read_bytes()
  assert examples[2]["image"] == (manual_dir / "images/b.jpg").read_bytes()
  assert examples[2]["question"] == b"" and examples[2]["question_type"] == b""
  assert list(examples[2]["answers"]) == [b"no", b"yes", b"no"]
  image = next(iter(builder.as_dataset("validation").filter(
      lambda ex: ex["question_id"] == 2)))["image"]
  assert image.shape == (17, 9, 3)


def test_strict_config_raises_naming_the_image_and_line(manual_dir):
  with pytest.raises(ValueError, match=r"train\.jsonl:3: cannot decode .*corrupt\.png"):
    _build("jsonl_vqa/strict", manual_dir)


@pytest.mark.parametrize("line, message", [
    ("{not json", "invalid JSON"),
    ('{"image": "a.png", "question": "q?"}', r"missing key\(s\) \['answers'\]"),
    ('{"image": "a.png", "question": "q?", "answers": "yes"}', "'answers' must be a list"),
    ('{"image": "a.png", "question": "q?", "answers": [], "question_id": 1}',
     "question_id 1 is already used on line 1"),
])
def test_malformed_line_raises_naming_the_line(tmp_path, line, message):
  path = tmp_path / "train.jsonl"
  path.write_text(json.dumps(_TRAIN[0] | {"question_id": 1}) + "\n" + line + "\n")
  with pytest.raises(ValueError, match=rf"train\.jsonl:2: {message}"):
    list(jsonl_vqa.read_jsonl(path))


def test_malformed_line_fails_the_build(manual_dir):
  with (manual_dir / "validation.jsonl").open("a") as f:
    f.write("[1, 2]\n")
  with pytest.raises(ValueError, match=r"validation\.jsonl:3: expected a JSON object"):
    _build("jsonl_vqa", manual_dir)


def test_missing_validation_file_is_named(manual_dir):
  (manual_dir / "validation.jsonl").unlink()
  with pytest.raises(FileNotFoundError, match="validation.jsonl"):
    _build("jsonl_vqa", manual_dir)


def test_answer_vocab_command_on_a_jsonl_file(manual_dir, tmp_path):
  output = tmp_path / "answers.txt"
  subprocess.run(
      [sys.executable, "-m", "multimodal.data.answer_vocab",
       f"--jsonl={manual_dir / 'train.jsonl'}", "--top_k=3", f"--output={output}"],
      cwd=_REPO, check=True, capture_output=True, timeout=120)
  assert answer_vocab.load_answer_vocab(str(output)) == ("red", "yes", "no")
