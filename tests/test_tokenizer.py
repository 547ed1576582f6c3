"""Sentencepiece training, loading, the packaged shapes model and the training command."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from multimodal.data import tokenizer
from multimodal.data.shapes import scenes, vqa_questions

_REPO = pathlib.Path(__file__).resolve().parents[1]


def test_train_and_load(tmp_path):
  path = str(tmp_path / "sp.model")
  tokenizer.train(["the quick brown fox", "jumps over the lazy dog"] * 10, path, vocab_size=40)
  sp = tokenizer.load(path)
  assert [sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()] == [0, 1, 2, 3]
  assert sp.decode(sp.encode("the lazy fox")) == "the lazy fox"
  assert tokenizer.load(path) is sp  # Loaded once per path.


def test_load_missing_model_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.model"):
    tokenizer.load(str(tmp_path / "nope.model"))


def test_packaged_shapes_model_has_no_unk_on_shapes_text():
  sp = tokenizer.load("shapes")
  texts = list(vqa_questions.ANSWERS)
  for k in range(300):  # Scenes of another seed than the model was trained on.
    rng = np.random.default_rng((123, k))
    texts += [q.text for q in vqa_questions.generate_questions(scenes.sample_scene(rng, 64), rng)]
  ids = [sp.encode(t) for t in texts]
  assert not any(tokenizer.UNK_ID in i for i in ids)
  assert max(map(len, ids)) < 16  # tok(max_len=16) keeps BOS and every question whole.


def test_command_trains_on_a_jsonl_file(tmp_path):
  jsonl = tmp_path / "train.jsonl"
  jsonl.write_text("".join(
      json.dumps({"image": f"{i}.png", "question": q, "answers": ["yes"]}) + "\n"
      for i, q in enumerate(["is the cat on the mat?", "what color is the dog?"] * 5)))
  output = tmp_path / "sp.model"
  subprocess.run(
      [sys.executable, "-m", "multimodal.data.tokenizer", f"--jsonl={jsonl}",
       f"--output={output}", "--vocab_size=40", "--with_answers"],
      cwd=_REPO, check=True, capture_output=True, timeout=120)
  sp = tokenizer.load(str(output))
  assert tokenizer.UNK_ID not in sp.encode("what color is the cat? yes")
