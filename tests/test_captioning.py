"""Captioning end to end: the main job on shapes_captions trains, decodes a caption per image
and scores it against that image's five references."""
import json
import os

import pytest
import tensorflow_datasets as tfds

from multimodal.evaluators import caption_metrics, captioning
from tests.main_runs import run_main


def test_caption_scores_are_coco_captions_bleu_and_cider_on_tokenized_text():
  captions = ["A red circle.", "two blue squares"]
  references = [["a red circle", "a circle, red"], ["two blue squares", "blue squares: two"]]
  metrics, per_caption = captioning.caption_scores(captions, references)
  hyps = ["a red circle", "two blue squares"]
  refs = [["a red circle", "a circle red"], ["two blue squares", "blue squares two"]]
  assert [metrics[f"bleu_{k}"] for k in range(1, 5)] == pytest.approx(
      caption_metrics.bleu(hyps, refs))
  cider, want = caption_metrics.cider_d(hyps, refs)
  assert metrics["cider"] == pytest.approx(cider) and per_caption == pytest.approx(want)
  assert metrics["num_examples"] == 2.0


def test_main_job_writes_and_scores_one_caption_per_image(tmp_path):
  workdir, data_dir = str(tmp_path / "run"), str(tmp_path / "tfds")
  result = run_main(workdir, data_dir, config="shapes_captions.py")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  with open(os.path.join(workdir, "predictions", "validation_step20.jsonl")) as f:
    predictions = [json.loads(line) for line in f]

  validation = tfds.as_numpy(tfds.load("shapes_captions/tiny", split="validation",
                                       data_dir=data_dir))
  assert [p["references"] for p in predictions] == [
      [c.decode() for c in e["captions"]] for e in validation]
  metrics, per_caption = captioning.caption_scores([p["caption"] for p in predictions],
                                                   [p["references"] for p in predictions])
  for name, value in metrics.items():
    assert results[f"validation/captioning/{name}"] == pytest.approx(value)
  assert [p["cider"] for p in predictions] == pytest.approx(per_caption)
  assert all(len(p["caption"].split()) <= 24 for p in predictions)
