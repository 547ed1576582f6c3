"""NLVR: the fusion-library model over an image pair, the classification task and evaluator,
and the main job on shapes_nlvr with both the fusion models and BEiT-3 (with and without
masked-data-modeling pretraining)."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from multimodal import models
from multimodal.evaluators.classification import accuracy_by_group
from multimodal.tasks.classification import ClassificationTask
from multimodal.training import init_params
from tests.main_runs import read_params, run_main
from tests.test_configs import REPO, load, shrink


def nlvr_batch(seed=0, batch=3, length=8):
  rng = np.random.default_rng(seed)
  lengths = np.array([8, 5, 3][:batch])
  return dict(left_image=rng.uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32),
              right_image=rng.uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32),
              text_tokens=rng.integers(4, 50, (batch, length)).astype(np.int32),
              text_mask=np.arange(length)[None] < lengths[:, None],
              label=np.array([True, False, True][:batch]))


@pytest.fixture(scope="module", params=["shapes_nlvr.py", "shapes_nlvr.py:pair=separate",
                                        "shapes_nlvr_beit3.py"])
def nlvr_model(request):
  """(a tiny NLVR model of the config, its params)."""
  path, _, arg = request.param.partition(":")
  config = load(os.path.join(REPO, "configs", path)).get_config(
      "res=32" + (f",{arg}" if arg else ""))
  model = models.MODELS.build(shrink(config.model.to_dict()), num_classes=2, vocab_size=50)
  params = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(nlvr_batch())
  return model, params["params"]


def test_padding_changes_nothing_and_the_pair_is_ordered(nlvr_model):
  model, params = nlvr_model
  apply = jax.jit(lambda b: model.apply({"params": params}, b, train=False))
  batch = nlvr_batch()
  logits = apply(batch)
  assert logits.shape == (3, 2)
  padded = dict(batch, text_tokens=np.where(batch["text_mask"], batch["text_tokens"], 7))
  np.testing.assert_allclose(apply(padded), logits, rtol=1e-5, atol=1e-6)
  swapped = dict(batch, left_image=batch["right_image"], right_image=batch["left_image"])
  assert np.max(np.abs(apply(swapped) - logits)) > 1e-6


def test_separate_passes_share_one_fusion_module_and_need_a_fused_vector():
  config = load(os.path.join(REPO, "configs", "shapes_nlvr.py"))
  build = lambda arg: models.MODELS.build(shrink(config.get_config(arg).model.to_dict()),
                                          num_classes=2, vocab_size=50)
  shapes = lambda model: nn.meta.unbox(jax.eval_shape(lambda: model.init(
      jax.random.key(0), nlvr_batch(), train=False))["params"])
  joint, separate = shapes(build("res=32")), shapes(build("res=32,pair=separate"))
  assert jax.tree.map(lambda x: x.shape, separate["fusion"]) == jax.tree.map(
      lambda x: x.shape, joint["fusion"])  # one module, as a one-image VQA model has it
  assert "side_embedding" not in separate
  width = separate["head"]["ln"]["scale"].shape[0]
  assert width == 2 * joint["head"]["ln"]["scale"].shape[0]  # both passes' pooled vectors
  with pytest.raises(ValueError, match="combines decisions"):
    shapes(build("res=32,pair=separate,fusion=late"))


def test_classification_loss_is_cross_entropy_on_the_label():
  task = ClassificationTask(num_classes=2, tokenizer="shapes_vl")
  logits = jnp.array([[2.0, -1.0], [0.5, 0.25], [-3.0, 1.0]])
  labels = np.array([True, False, True])
  loss, metrics = task.loss(logits, {"label": labels})
  want = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(int)).mean()
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(metrics["accuracy"], 2 / 3, rtol=1e-6)  # rows 1 and 2 right
  assert task.predict(logits, {"label": labels})["prediction"].tolist() == [0, 0, 1]
  assert task.model_kwargs()["num_classes"] == 2
  smoothed = ClassificationTask(num_classes=2, label_smoothing=0.2)
  targets = np.array([[0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
  np.testing.assert_allclose(smoothed.loss(logits, {"label": labels})[0],
                             optax.softmax_cross_entropy(logits, targets).mean(), rtol=1e-6)


def test_classification_errors_name_the_problem():
  with pytest.raises(ValueError, match="at least 2 classes"):
    ClassificationTask(num_classes=1)
  with pytest.raises(KeyError, match="batch\\['label'\\]"):
    ClassificationTask(num_classes=2).loss(jnp.zeros((2, 2)), {"labels": np.zeros(2)})


def test_accuracy_by_group_as_counted_by_hand():
  records = [dict(template="count_compare", label="True", correct=1.0),
             dict(template="count_compare", label="False", correct=0.0),
             dict(template="exist_both", label="True", correct=1.0),
             dict(template="exist_both", label="False", correct=1.0)]
  metrics = accuracy_by_group(records, ("template", "label"))
  assert metrics == {"accuracy": 0.75, "num_examples": 4.0,
                     "accuracy/template/count_compare": 0.5,
                     "accuracy/template/exist_both": 1.0,
                     "accuracy/label/False": 0.5, "accuracy/label/True": 1.0}
  with pytest.raises(ValueError, match="No examples"):
    accuracy_by_group([], ("template",))


def check_nlvr_results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  for split, size in (("validation", 16), ("test", 16), ("test_heldout", 16)):
    assert 0.0 <= results[f"{split}/classification/accuracy"] <= 1.0
    assert results[f"{split}/classification/num_examples"] == size
    assert any(k.startswith(f"{split}/classification/accuracy/template/") for k in results)
  with open(os.path.join(workdir, "predictions", "test_heldout_step20.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert len(records) == 16 and {"statement", "template", "label", "prediction"} <= set(
      records[0])
  return results


def test_main_job_fusion_model(tmp_path):
  workdir = str(tmp_path / "run")
  result = run_main(workdir, str(tmp_path / "tfds"), config="shapes_nlvr.py")
  assert result.returncode == 0, result.stderr[-3000:]
  check_nlvr_results(workdir)


def test_main_job_beit3_from_its_pretraining(tmp_path):
  data_dir = str(tmp_path / "tfds")
  pretrained = str(tmp_path / "mdm")
  result = run_main(pretrained, data_dir, config="shapes_mdm_beit3.py")
  assert result.returncode == 0, result.stderr[-3000:]
  flat = init_params.load_flat(pretrained)
  saved = read_params(pretrained, 20)
  assert set(flat) == set(saved) and "mlm_head/kernel" in flat
  for key, value in saved.items():
    np.testing.assert_array_equal(flat[key], value)

  workdir = str(tmp_path / "nlvr")
  result = run_main(workdir, data_dir, config="shapes_nlvr_beit3.py",
                    config_arg=f"tiny=true,init={pretrained}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Initialised the params from {pretrained}" in result.stderr
  check_nlvr_results(workdir)
