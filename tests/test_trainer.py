"""The main job end to end on the tiny Shapes setting: train, evaluate, checkpoint, resume."""
import json
import os

import numpy as np
import pytest

from configs import shapes_vqa
from multimodal.training import trainer as trainer_lib
from tests.main_runs import read_scalars, run_main
QUESTION_TYPES = ("exist", "count", "color", "shape", "size", "relation", "compare_count")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def tiny_config(data_dir, **overrides):
  config = shapes_vqa.get_config("tiny=true")
  config.data.data_dir = data_dir
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def test_main_job_trains_evaluates_and_resumes(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  first = run_main(workdir, data_dir)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "steps/s" in first.stderr and "ETA" in first.stderr
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["step"] == 20
  assert 0.0 <= results["validation/vqa/accuracy"] <= 1.0
  for question_type in QUESTION_TYPES:
    assert f"validation/vqa/accuracy/{question_type}" in results
  predictions = [json.loads(line) for line in open(
      os.path.join(workdir, "predictions", "validation_step20.jsonl"))]
  assert len(predictions) == 64
  assert set(predictions[0]) == {"question", "question_type", "answers", "prediction", "score"}
  assert np.mean([p["score"] for p in predictions]) == pytest.approx(
      results["validation/vqa/accuracy"])
  assert read_scalars(workdir, "train/loss")
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "20"))

  again = run_main(workdir, data_dir)  # a finished run evaluates and exits
  assert again.returncode == 0, again.stderr[-3000:]
  assert "already reached step 20" in again.stderr
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == results

  evaluated = run_main(workdir, data_dir, "--eval_only")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == results


def test_config_typo_names_the_nearest_key(tmp_path, data_dir):
  result = run_main(str(tmp_path / "typo"), data_dir, "--config.total_stpes=5")
  assert result.returncode != 0
  assert 'Did you mean "total_steps"' in result.stderr


def test_resumed_run_continues_with_the_same_losses(tmp_path, data_dir):
  config = tiny_config(data_dir, total_steps=8, log_every_steps=1)
  config.checkpoint.every_steps = 4
  config.model.image.dropout = 0.1  # resumed dropout masks must match too
  straight = str(tmp_path / "straight")
  trainer = trainer_lib.Trainer(config, straight)
  trainer.train()
  trainer.close()

  resumed = str(tmp_path / "resumed")
  trainer = trainer_lib.Trainer(config, resumed)
  assert trainer.train(stop_at=5) == 5  # checkpoints at 4 and 5
  trainer.close()
  trainer = trainer_lib.Trainer(config, resumed)
  assert trainer.restore() == 5
  trainer.train()
  trainer.close()

  want = read_scalars(straight, "train/loss")
  got = read_scalars(resumed, "train/loss")
  assert sorted(want) == list(range(1, 9)) and sorted(got) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in range(6, 9)], [want[s] for s in range(6, 9)],
                             rtol=1e-6)


def test_checkpoint_that_does_not_fit_the_model_is_a_clear_error(tmp_path, data_dir):
  config = tiny_config(data_dir, total_steps=2)
  trainer = trainer_lib.Trainer(config, str(tmp_path))
  trainer.train()
  trainer.close()
  config.model.head.hidden_dim = 24
  with pytest.raises(ValueError, match=r"different config:\s+model.head.hidden_dim: 128 -> 24"):
    trainer_lib.Trainer(config, str(tmp_path))
  with pytest.raises(ValueError, match=r"does not match the model[\s\S]*head\.hidden\.kernel"):
    trainer_lib.Trainer(config, str(tmp_path), allow_config_change=True).restore()
