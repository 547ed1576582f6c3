"""The relation-question probes (multimodal/benchmarks/relation_probe.py)."""
import json
import os

import numpy as np
import pytest

from multimodal.benchmarks import relation_probe
from tests.fusion_sweep import XDIST_GROUP


def test_a_linear_probe_finds_a_linear_cue_and_not_a_random_one():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2000, 16))
  linear = (x @ rng.normal(size=16) > 0).astype(int)
  random = rng.integers(3, size=2000)
  fit, score = slice(0, 1000), slice(1000, None)
  assert relation_probe.probe_accuracy(x[fit], linear[fit], x[score], linear[score], 1.0) > 0.95
  accuracy = relation_probe.probe_accuracy(x[fit], random[fit], x[score], random[score], 1.0)
  assert abs(accuracy - 1 / 3) < 0.06


@pytest.mark.xdist_group(XDIST_GROUP)  # the worker that holds the session's sweep
def test_probes_a_trained_module_on_the_validation_relation_questions(fusion_sweep, tmp_path):
  rows = relation_probe.run(fusion_sweep.workdir, ["gated"], fit_questions=256, ridge=10.0,
                            output_dir=str(tmp_path), log=lambda _: None)
  (row,) = rows
  with open(os.path.join(fusion_sweep.workdir, "gated", "results.json")) as f:
    results = json.load(f)
  # The questions are regenerated from the builder's seeds and preprocessed as the evaluator
  # does: the head scores them exactly as the final evaluation scored the relation questions.
  assert row["questions"] > 0
  assert row["head"] == pytest.approx(results["validation/vqa/accuracy/relation"])
  for cue in relation_probe.CUES:
    assert 0.0 <= row[f"{cue}/trained"] <= 1.0 and 0.0 <= row[f"{cue}/untrained"] <= 1.0
  with open(tmp_path / relation_probe.MARKDOWN) as f:
    assert "| gated |" in f.read()
  assert json.loads((tmp_path / relation_probe.JSON).read_text()) == rows


def test_a_module_without_checkpoints_is_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoints"):
    relation_probe.restore_params(str(tmp_path), "gated")
