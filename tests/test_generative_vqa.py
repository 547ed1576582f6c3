"""Generative VQA end to end: the prompt/answer sequences, the task, and the main job."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from multimodal.data import tokenizer
from multimodal.data.pp import text_ops
from multimodal.tasks import TASKS
from tests.main_runs import run_main

SP = tokenizer.load("shapes")
BOS, EOS = SP.bos_id(), SP.eos_id()


def run_op(question, answers, **kwargs):
  op = text_ops.tok_prompt_answer(model="shapes", **kwargs)
  out = op({"question": tf.constant(question), "answers": tf.constant(answers)})
  return {k: out[k].numpy() for k in ("text_tokens", "text_mask", "prefix_mask")}


def test_prompt_then_the_most_frequent_answer_then_eos():
  out = run_op("what color is the circle?", ["red", "blue", "blue"], max_len=20)
  q, a = SP.encode("what color is the circle?"), SP.encode("blue")
  ids = [BOS, *q, *a, EOS]
  assert out["text_tokens"].tolist() == ids + [0] * (20 - len(ids))
  assert out["text_mask"].tolist() == [True] * len(ids) + [False] * (20 - len(ids))
  assert out["prefix_mask"].tolist() == [True] * (1 + len(q)) + [False] * (20 - 1 - len(q))


def test_evaluation_sequences_hold_the_prompt_only():
  out = run_op("is there a square?", ["yes"], max_len=16, with_answer=False)
  n = 1 + len(SP.encode("is there a square?"))
  assert out["text_mask"].sum() == n and (out["prefix_mask"] == out["text_mask"]).all()


def test_a_long_sequence_loses_its_prompt_end_first_and_keeps_eos():
  question = "how many red circles are there above the blue square?"
  answer_ids = SP.encode("2")
  out = run_op(question, ["2"], max_len=6)
  tokens = out["text_tokens"].tolist()
  assert tokens[-1 - len(answer_ids):] == answer_ids + [EOS] and tokens[0] == BOS
  assert out["text_mask"].all()
  with pytest.raises(ValueError, match="max_len must be >= 2"):
    text_ops.tok_prompt_answer(max_len=1, model="shapes")


def test_answer_text_stops_at_eos():
  task = TASKS.build({"type": "image_to_text", "tokenizer": "shapes"})
  ids = SP.encode("blue")
  assert task.answer_text(np.asarray(ids + [EOS] + SP.encode("red"))) == "blue"
  assert task.answer_text(np.asarray(ids + [0, 0])) == "blue"
  assert task.model_kwargs() == {"vocab_size": SP.get_piece_size()}


def test_main_job_trains_and_evaluates_by_decoding(tmp_path):
  workdir = str(tmp_path / "run")
  # Batches of 48: the second of the 64 validation questions is padded (text padding too).
  result = run_main(workdir, str(tmp_path / "tfds"), "--config.evals.validation.batch_size=48",
                    config="shapes_vqa_generative.py")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert 0.0 <= results["validation/generative_vqa/accuracy"] <= 1.0
  assert "validation/generative_vqa/accuracy/count" in results
  with open(os.path.join(workdir, "predictions", "validation_step20.jsonl")) as f:
    predictions = [json.loads(line) for line in f]
  assert len(predictions) == 64
  # Each score is the exact match ("soft" metric on one answer) of the decoded text.
  for p in predictions:
    assert p["score"] == float(p["prediction"] == p["answers"][0])
