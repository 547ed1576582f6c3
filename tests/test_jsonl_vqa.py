"""The jsonl_vqa builder on a tiny dataset in the real format, and the answer-vocab command."""
from __future__ import annotations

import collections
import io
import json
import logging
import pathlib
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from multimodal.data import answer_vocab, tokenizer
from multimodal.data.builders import jsonl_vqa
from multimodal.data.pp import text_ops

_REPO = pathlib.Path(__file__).resolve().parents[1]

_TRAIN = [
    {"image": "images/a.png", "question": "what color is it?", "answers": ["red"] * 3,
     "question_type": "color"},
    {"image": "images/b.jpg", "question": "", "answers": ["no", "yes", "no"],
     "question_id": 1000},
    {"image": "images/a.png", "question": "is it red?", "answers": ["yes"]},
]
# Good records however odd their text: any script, emoji sequences, combining marks, NUL and
# invisible characters, a BOM inside, and a question far over `tok`'s max_len.
_HARD_QUESTIONS = [
    "这是什么颜色？", "ما لون الكرة؟ שלום", "🟥🏳️‍🌈👩🏽‍🔬 e\u0301 n\u0303 Z\u0335\u0321a",
    "nul\u0000 tab\t zwsp\u200b bom\ufeff rtl\u202e end", "why " * 2_000]
_LONG_QUESTION = "why " * 25_000  # 100k characters: over the builder's max_text_chars.
_BASE = {"image": "images/a.png", "question": "is it?", "answers": []}


def _json(record: dict) -> bytes:
  return json.dumps(record).encode()


# (reason, line) of each kind of bad record; the duplicate id is that of the file's line 1.
_BAD_LINES: list[tuple[str, bytes]] = [
    ("invalid_json", b"{not json"),
    ("invalid_json", b"[1, 2]"),
    ("invalid_unicode", b'{"image": "images/a.png", "question": "caf\xe9?", "answers": []}'),
    ("invalid_unicode", _json(_BASE | {"question": "\ud800?"})),  # A lone surrogate.
    ("missing_field", _json({"image": "images/a.png", "answers": ["yes"]})),
    ("missing_field", _json({"image": "images/a.png", "question": "q?", "answer": "yes"})),
    ("wrong_type", _json(_BASE | {"answers": "yes"})),
    ("wrong_type", _json(_BASE | {"answers": [1, 2]})),
    ("wrong_type", _json(_BASE | {"question": None})),
    ("text_too_long", _json(_BASE | {"question": _LONG_QUESTION})),
    ("duplicate_question_id", _json(_BASE | {"question_id": 1})),
    ("missing_image", _json(_BASE | {"image": "images/missing.png"})),
    ("unreadable_image", _json(_BASE | {"image": "images"})),  # A folder.
    ("empty_image_file", _json(_BASE | {"image": "images/empty.png"})),
    ("corrupt_image", _json(_BASE | {"image": "images/corrupt.png"})),
    ("corrupt_image", _json(_BASE | {"image": "images/zero_width.png"})),
]


def _encoded(shape: tuple[int, int, int], fmt: str) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, np.uint8)).save(buf, fmt)
  return buf.getvalue()


def _zero_width_png() -> bytes:
  """A well-formed PNG whose header says 0 x 5 pixels (PIL refuses to write one)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _write_images(root: pathlib.Path) -> None:
  (root / "images").mkdir(parents=True, exist_ok=True)
  (root / "images/a.png").write_bytes(_encoded((30, 40, 3), "PNG"))
  (root / "images/empty.png").write_bytes(b"")
  (root / "images/corrupt.png").write_bytes(_encoded((30, 40, 3), "PNG")[:100])
  (root / "images/zero_width.png").write_bytes(_zero_width_png())


def write_hard_records(root: pathlib.Path, split: str = "train") -> dict[str, int]:
  """Appends the odd good records and one line per kind of bad record to root/SPLIT.jsonl.

  Returns the counts per reason its build must report, as in builder.info.metadata.
  """
  _write_images(root)
  with (root / f"{split}.jsonl").open("ab") as f:
    for question in _HARD_QUESTIONS:
      f.write(_json(_BASE | {"question": question, "answers": ["红色"]}) + b"\n")
    f.write(b"\n".join(line for _, line in _BAD_LINES) + b"\n")
  counts = collections.Counter(reason for reason, _ in _BAD_LINES)
  return {f"skipped/{split}/{k}": n for k, n in {**counts, "total": counts.total()}.items()}


def _write_jsonl(path: pathlib.Path, records: list[dict]) -> None:
  path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def manual_dir(tmp_path) -> pathlib.Path:
  root = tmp_path / "manual"
  _write_images(root)
  (root / "images/b.jpg").write_bytes(_encoded((17, 9, 3), "JPEG"))
  _write_jsonl(root / "train.jsonl", _TRAIN)
  _write_jsonl(root / "validation.jsonl", _TRAIN[:2])
  return root


def _build(name: str, manual_dir: pathlib.Path) -> tfds.core.DatasetBuilder:
  builder = tfds.builder(name, data_dir=manual_dir.parent / "tfds")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  return builder


def test_builds_good_records_and_counts_each_kind_of_bad_one(manual_dir, caplog):
  expected = write_hard_records(manual_dir) | {"skipped/validation/total": 0}
  with caplog.at_level(logging.INFO):
    builder = _build("jsonl_vqa", manual_dir)
  num_good = len(_TRAIN) + len(_HARD_QUESTIONS)
  assert builder.info.splits["train"].num_examples == num_good
  assert builder.info.splits["validation"].num_examples == 2
  assert "test" not in builder.info.splits
  assert dict(builder.info.metadata) == expected
  # Read back later, as a run does from the prepared files.
  assert dict(tfds.builder("jsonl_vqa", data_dir=builder.data_dir_root).info.metadata) == expected
  assert (f"skipped {len(_BAD_LINES)} of {num_good + len(_BAD_LINES)} records (invalid_json=2,"
          " invalid_unicode=2, missing_field=2, wrong_type=3, text_too_long=1,"
          " duplicate_question_id=1, missing_image=1, unreadable_image=1, empty_image_file=1,"
          " corrupt_image=2)") in caplog.text
  assert f"line {len(_TRAIN) + len(_HARD_QUESTIONS) + 1}: invalid_json" in caplog.text
  assert "validation.jsonl: skipped 0 of 2 records." in caplog.text

  ds = builder.as_dataset("train", decoders={"image": tfds.decode.SkipDecoding()})
  examples = {int(ex["question_id"]): ex for ex in tfds.as_numpy(ds)}
  assert sorted(examples) == [1, 3, *range(4, 4 + len(_HARD_QUESTIONS)), 1000]  # Or line no.
  assert examples[1]["image"] == (manual_dir / "images/a.png").read_bytes()
  assert examples[1000]["image"] == (manual_dir / "images/b.jpg").read_bytes()
  assert examples[1000]["question"] == b"" and examples[1000]["question_type"] == b""
  assert list(examples[1000]["answers"]) == [b"no", b"yes", b"no"]
  for i, question in enumerate(_HARD_QUESTIONS, start=4):
    assert examples[i]["question"] == question.encode()  # Byte for byte.
    assert list(examples[i]["answers"]) == ["红色".encode()]
  image = next(iter(builder.as_dataset("validation").filter(
      lambda ex: ex["question_id"] == 1000)))["image"]
  assert image.shape == (17, 9, 3)


@pytest.mark.parametrize("reason, line", _BAD_LINES, ids=[r for r, _ in _BAD_LINES])
def test_strict_reading_names_the_file_line_and_reason(tmp_path, reason, line):
  _write_images(tmp_path)
  path = tmp_path / "train.jsonl"
  path.write_bytes(_json(_BASE) + b"\n" + line + b"\n")
  read = jsonl_vqa.read_jsonl(path, read_images=True, strict=True)
  assert next(read)[0] == 1
  with pytest.raises(ValueError, match=rf"train\.jsonl:2: {reason}: "):
    next(read)


def test_strict_config_fails_the_build_naming_the_record(manual_dir):
  write_hard_records(manual_dir, "validation")
  with pytest.raises(ValueError, match=r"validation\.jsonl:8: invalid_json: "):
    _build("jsonl_vqa/strict", manual_dir)


def test_tok_truncates_a_100k_char_question():
  out = text_ops.tok(max_len=16, model="shapes")({"question": tf.constant(_LONG_QUESTION)})
  assert out["question_tokens"][0] == tokenizer.BOS_ID
  np.testing.assert_array_equal(out["question_mask"], [True] * 16)


def test_missing_validation_file_is_named(manual_dir):
  (manual_dir / "validation.jsonl").unlink()
  with pytest.raises(FileNotFoundError, match="validation.jsonl"):
    _build("jsonl_vqa", manual_dir)


def test_answer_vocab_command_on_a_jsonl_file_skips_bad_lines(manual_dir, tmp_path):
  write_hard_records(manual_dir)
  output = tmp_path / "answers.txt"
  run = subprocess.run(
      [sys.executable, "-m", "multimodal.data.answer_vocab",
       f"--jsonl={manual_dir / 'train.jsonl'}", "--top_k=3", f"--output={output}"],
      cwd=_REPO, check=True, capture_output=True, text=True, timeout=120)
  assert answer_vocab.load_answer_vocab(str(output)) == ("红色", "red", "no")
  num_bad_text = sum("image" not in r for r, _ in _BAD_LINES)  # Images are not read.
  assert f"skipped {num_bad_text} of {len(_TRAIN) + len(_HARD_QUESTIONS) + len(_BAD_LINES)}" \
      in run.stderr
