"""Model state in variable collections other than params, and the EMA of the params: updated
by the train step as a hand computation says, checkpointed, resumed, and used for evaluation."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util
from jax.sharding import PartitionSpec

from configs import shapes_vqa
from multimodal import models
from multimodal.training import sharding
from multimodal.training import trainer as trainer_lib
from multimodal.training.checkpoint import Checkpointer
from multimodal.training.train_state import ModelVariables, TrainState, create_sharded_state
from multimodal.training.train_step import make_predict, make_train_step

MOMENTUM = 0.5
DECAY = 0.5


@models.MODELS.register("test_running_mean_vqa")
class RunningMeanVqa(nn.Module):
  """Answer logits from each image column's mean, centred by a running mean of the columns
  (collection "stats": `mean` float32[W], annotated ("embed",), and `count` int32[] of
  training calls), which a call with train=True updates before using."""
  num_answers: int
  vocab_size: int = 0

  @nn.compact
  def __call__(self, batch, *, train):
    columns = batch["image"].mean(axis=(1, 3))  # [B, W]
    count = self.variable("stats", "count", jnp.zeros, (), jnp.int32)
    mean = self.variable("stats", "mean", nn.with_logical_partitioning(jnp.zeros, ("embed",)),
                         columns.shape[1:], jnp.float32)
    if train:
      mean.value = MOMENTUM * mean.value + (1 - MOMENTUM) * columns.mean(axis=0)
      count.value += 1
    return nn.Dense(self.num_answers)(columns - mean.value)


def running_mean(images, start=None):
  """The hand computation of `mean` after training calls on each of `images` in order."""
  mean = np.zeros(images[0].shape[2], np.float32) if start is None else start
  for image in images:
    mean = MOMENTUM * mean + (1 - MOMENTUM) * image.mean(axis=(0, 1, 3))
  return mean


def ema_of(start, params_sequence):
  ema = start
  for params in params_sequence:
    ema = jax.tree.map(lambda e, p: DECAY * e + (1 - DECAY) * p, ema, params)
  return ema


def assert_trees_close(got, want, rtol=1e-5, atol=1e-6):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


class FirstLogitRegression:
  """Squared error of the first logit against batch["y"]; predictions: the logits."""

  def loss(self, logits, batch):
    return jnp.mean((logits[:, 0] - batch["y"]) ** 2), {}

  def predict(self, logits, batch):
    return {"logits": logits}


class StatefulGenerator(FirstLogitRegression):
  """A generative task whose model keeps state: predict passes it as `model_state`."""

  def generate(self, model, params, batch, model_state=None):
    return {"logits": model.apply({"params": params, **model_state}, batch, train=False)}


def direct_setup(ema=True, batch_size=8, task=None):
  """RunningMeanVqa on one device with plain SGD -> (model, task, state, shardings, mesh,
  batch)."""
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(-1, 1, (batch_size, 4, 6, 3)).astype(np.float32),
           "y": rng.normal(size=(batch_size,)).astype(np.float32)}
  model, task = RunningMeanVqa(num_answers=3), task or FirstLogitRegression()
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  state, shardings = create_sharded_state(model, optax.sgd(0.1), batch, jax.random.key(0),
                                          mesh, sharding.DEFAULT_RULES, ema=ema)
  return model, task, state, shardings, mesh, batch


def direct_step(model, task, shardings, mesh, grad_accum_steps=1):
  return make_train_step(model, task, optax.sgd(0.1), optax.constant_schedule(0.1),
                         jax.random.key(1), shardings, sharding.batch_sharding(mesh),
                         sharding.replicated(mesh), grad_accum_steps=grad_accum_steps,
                         ema_decay=DECAY)


def test_grad_accumulation_passes_the_state_through_the_micro_batches_in_order():
  model, task, state, shardings, mesh, batch = direct_setup()
  state, _ = direct_step(model, task, shardings, mesh, grad_accum_steps=2)(state, batch)
  stats = jax.device_get(state.model_state["stats"])
  assert int(stats["count"]) == 2
  # Micro-batch j holds rows j, j + 2, ...: the first one's mean is the older, halved again.
  micro = [batch["image"][0::2], batch["image"][1::2]]
  np.testing.assert_allclose(stats["mean"], running_mean(micro), rtol=1e-5)
  assert not np.allclose(stats["mean"], running_mean(micro[::-1]), rtol=1e-3)


def test_a_nonfinite_step_keeps_params_state_and_ema():
  model, task, state, shardings, mesh, batch = direct_setup()
  step = direct_step(model, task, shardings, mesh)
  state, metrics = step(state, batch)
  assert not metrics["nonfinite"]
  before = jax.device_get((state.params, state.model_state, state.ema_params))
  # A finite forward pass (the state update is finite too) but a NaN loss.
  state, metrics = step(state, dict(batch, y=np.full_like(batch["y"], np.nan)))
  assert metrics["nonfinite"] and int(state.skipped_steps) == 1
  assert_trees_close(jax.device_get((state.params, state.model_state, state.ema_params)),
                     before, rtol=0, atol=0)
  assert int(state.model_state["stats"]["count"]) == 1


def test_predict_applies_the_ema_params_and_the_model_state():
  model, task, state, shardings, mesh, batch = direct_setup()
  state, _ = direct_step(model, task, shardings, mesh)(state, batch)
  assert not np.allclose(state.model_state["stats"]["mean"], 0)
  ema = jax.tree.map(lambda x: x + 1.0, state.params)  # an EMA that differs from the params
  state = state.replace(ema_params=ema)
  replicated = sharding.replicated(mesh)
  for task in (FirstLogitRegression(), StatefulGenerator()):
    predict = make_predict(model, task, shardings.eval_variables(),
                           sharding.batch_sharding(mesh), replicated)
    got = predict(state.eval_variables(), batch)["logits"]
    want = model.apply({"params": ema, **state.model_state}, batch, train=False)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    without_state = model.apply({"params": ema, "stats": jax.tree.map(
        jnp.zeros_like, state.model_state["stats"])}, batch, train=False)
    assert not np.allclose(got, without_state, atol=1e-3)
    with pytest.raises(ValueError, match=r"keeps state \(\['stats'\]\).*eval_variables"):
      predict(state.params, batch)


class Linear(nn.Module):
  """A model without state."""

  @nn.compact
  def __call__(self, batch, *, train):
    return nn.Dense(2)(batch["x"])


def test_a_stateless_model_checkpoints_and_restores_old_and_new_layouts(tmp_path):
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  state, _ = create_sharded_state(Linear(), optax.adam(1e-3), {"x": np.ones((4, 3), np.float32)},
                                  jax.random.key(0), mesh, sharding.DEFAULT_RULES)
  assert state.model_state == {} and state.ema_params is None
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"), every_steps=1, keep=3)
  checkpointer.save(1, state.replace(step=state.step + 1))
  # The layout written before model_state and ema_params existed.
  checkpointer.save(2, {"step": state.step + 2, "params": state.params,
                        "opt_state": state.opt_state, "skipped_steps": state.skipped_steps})
  checkpointer.wait()
  for step in (1, 2):
    restored = checkpointer.restore(state, step)
    assert isinstance(restored, TrainState) and int(restored.step) == step
    assert restored.model_state == {} and restored.ema_params is None
    assert_trees_close(restored.params, state.params, rtol=0, atol=0)
    assert jax.tree.structure(restored.opt_state) == jax.tree.structure(state.opt_state)
  checkpointer.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def tiny_config(data_dir, **overrides):
  config = shapes_vqa.get_config("tiny=true")
  config.data.data_dir = data_dir
  config.model = dict(type="test_running_mean_vqa")
  config.total_steps, config.log_every_steps, config.ema_decay = 4, 1, DECAY
  config.mesh = dict(data=4, fsdp=2, model=1)
  config.evals.validation.max_examples = 32
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def test_trainer_updates_checkpoints_and_resumes_the_state_and_ema(tmp_path, data_dir):
  config, workdir = tiny_config(data_dir), str(tmp_path / "run")
  trainer = trainer_lib.Trainer(config, workdir)
  shardings = trainer.state_shardings
  assert shardings.model_state["stats"]["mean"].spec == PartitionSpec("fsdp")
  assert shardings.model_state["stats"]["count"].spec == PartitionSpec()
  assert trainer.state.model_state["stats"]["mean"].sharding.spec == PartitionSpec("fsdp")
  assert jax.tree.map(lambda s: s.spec, shardings.ema_params) == jax.tree.map(
      lambda s: s.spec, shardings.params)
  images = [b["image"] for b, _ in zip(trainer._dataset().as_numpy_iterator(), range(4))]
  params = [jax.device_get(trainer.state.params)]
  assert_trees_close(jax.device_get(trainer.state.ema_params), params[0], rtol=0, atol=0)
  for stop in (1, 2, 3):  # each call restores the checkpoint the previous one saved
    assert trainer.train(stop_at=stop) == stop
    params.append(jax.device_get(trainer.state.params))
  saved = jax.device_get((trainer.state.model_state, trainer.state.ema_params))
  trainer.close()
  assert int(saved[0]["stats"]["count"]) == 3
  np.testing.assert_allclose(saved[0]["stats"]["mean"], running_mean(images[:3]), rtol=1e-5)
  assert_trees_close(saved[1], ema_of(params[0], params[1:]))
  assert not np.allclose(saved[1]["Dense_0"]["kernel"], params[3]["Dense_0"]["kernel"])

  resumed = trainer_lib.Trainer(config, workdir)
  assert resumed.restore() == 3
  assert_trees_close(jax.device_get((resumed.state.model_state, resumed.state.ema_params)),
                     saved, rtol=0, atol=0)
  assert resumed.train() == 4
  stats = jax.device_get(resumed.state.model_state["stats"])
  assert int(stats["count"]) == 4
  np.testing.assert_allclose(stats["mean"], running_mean(images), rtol=1e-5)
  assert_trees_close(jax.device_get(resumed.state.ema_params),
                     ema_of(saved[1], [jax.device_get(resumed.state.params)]))
  resumed.close()


def test_evaluation_predicts_with_the_ema_params(tmp_path, data_dir):
  trainer = trainer_lib.Trainer(tiny_config(data_dir), str(tmp_path))
  answers = trainer.task.answers

  def predictions(step):
    path = os.path.join(str(tmp_path), "predictions", f"validation_step{step}.jsonl")
    return {json.loads(line)["prediction"] for line in open(path)}

  evaluator, state = trainer.evaluators["validation"], trainer.state
  evaluator.run(ModelVariables(state.params, state.model_state), step=0)
  unused = next(i for i, a in enumerate(answers) if a not in predictions(0))
  # An EMA that answers `unused` to everything: zero kernel, a bias that picks it.
  ema = jax.tree.map(jnp.zeros_like, state.params)
  ema["Dense_0"]["bias"] = ema["Dense_0"]["bias"].at[unused].set(10.0)
  trainer.state = state.replace(ema_params=ema)
  trainer._run_eval("validation", step=1)
  assert predictions(1) == {answers[unused]}
  trainer.close()


def test_ema_starts_from_the_loaded_params(tmp_path, data_dir):
  first = trainer_lib.Trainer(tiny_config(data_dir), str(tmp_path / "source"))
  loaded = jax.tree.map(lambda x: 2.0 * np.asarray(x) + 0.5, jax.device_get(first.state.params))
  first.close()
  path = str(tmp_path / "params.npz")
  np.savez(path, **traverse_util.flatten_dict(loaded, sep="/"))
  config = tiny_config(data_dir, total_steps=1)
  config.init.params = path
  trainer = trainer_lib.Trainer(config, str(tmp_path / "run"))
  assert trainer.train() == 1
  assert_trees_close(jax.device_get(trainer.state.ema_params),
                     ema_of(loaded, [jax.device_get(trainer.state.params)]))
  trainer.close()


def test_ema_decay_out_of_range_is_an_error(tmp_path, data_dir):
  with pytest.raises(ValueError, match=r"config.ema_decay must be in \[0, 1\)"):
    trainer_lib.Trainer(tiny_config(data_dir, ema_decay=1.0), str(tmp_path))
