"""The train step on 8 simulated devices equals the one-device run for the same global batch."""
import jax
import numpy as np
import pytest

from multimodal import models
from multimodal.config_utils import base_config
from multimodal.tasks.vqa import VqaTask
from multimodal.training import sharding
from multimodal.training.optimizer import learning_rate_schedule, make_optimizer
from multimodal.training.train_state import create_sharded_state
from multimodal.training.train_step import make_train_step
from multimodal.data import pipeline

GLOBAL_BATCH = 16
SMALL = dict(variant=None, width=32, depth=1, mlp_dim=64, num_heads=4)


def make_batches(num_answers, steps=3):
  rng = np.random.default_rng(0)
  for _ in range(steps):
    index = rng.integers(0, num_answers, GLOBAL_BATCH).astype(np.int32)
    yield dict(image=rng.uniform(-1, 1, (GLOBAL_BATCH, 16, 16, 3)).astype(np.float32),
               question_tokens=rng.integers(1, 50, (GLOBAL_BATCH, 8)).astype(np.int32),
               question_mask=np.arange(8)[None] < rng.integers(1, 9, (GLOBAL_BATCH, 1)),
               answer_index=index,
               answer_scores=np.eye(num_answers, dtype=np.float32)[index])


def train(mesh_sizes, devices):
  mesh = sharding.make_mesh(mesh_sizes, devices)
  task = VqaTask(answers="shapes_vqa", tokenizer="shapes")
  model = models.MODELS.build(
      dict(type="fusion_vqa", image=dict(type="vit", patch_size=8, stem="conv",
                                         stem_channels=(8,), **SMALL),
           text=dict(type="text_encoder", **SMALL),
           fusion=dict(type="cross_attention", width=32, depth=1, num_heads=4, mlp_dim=64),
           head=dict(type="classifier", hidden_dim=32)),
      num_answers=len(task.answers), vocab_size=64)
  opt_config = base_config().optimizer
  optimizer = make_optimizer(opt_config, total_steps=10)
  batches = list(make_batches(len(task.answers)))
  example = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batches[0].items()}
  state, shardings = create_sharded_state(model, optimizer, example, jax.random.key(0), mesh,
                                          sharding.DEFAULT_RULES)
  step = make_train_step(model, task, optimizer, learning_rate_schedule(opt_config, 10),
                         jax.random.key(1), shardings, sharding.batch_sharding(mesh),
                         sharding.replicated(mesh))
  losses = []
  for batch in batches:
    state, metrics = step(state, pipeline.to_global(batch, sharding.batch_sharding(mesh)))
    losses.append(float(metrics["loss"]))
  return losses, state


@pytest.fixture(scope="module")
def reference():
  assert len(jax.devices()) == 8, "tests/conftest.py asks XLA for 8 CPU devices"
  losses, state = train({"data": 1}, jax.devices()[:1])
  return losses, jax.device_get(state.params)


@pytest.mark.parametrize("mesh_sizes", [{"data": 8}, {"fsdp": 8}, {"data": 2, "fsdp": 4},
                                        {"data": 2, "fsdp": 2, "model": 2}])
def test_sharded_training_equals_one_device(reference, mesh_sizes):
  ref_losses, ref_params = reference
  losses, state = train(mesh_sizes, jax.devices())
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5),
               jax.device_get(state.params), ref_params)


def test_fsdp_shards_params_and_optimizer_state():
  _, state = train({"fsdp": 8}, jax.devices())
  kernel = state.params["fusion"]["block0"]["mlp"]["fc1"]["kernel"]  # [embed=32, mlp=64]
  assert kernel.sharding.shard_shape(kernel.shape) == (4, 64)
  mu = state.opt_state[1][0].mu["fusion"]["block0"]["mlp"]["fc1"]["kernel"]
  assert mu.sharding.shard_shape(mu.shape) == (4, 64)


def test_mesh_errors_name_the_problem():
  with pytest.raises(ValueError, match="needs 16 devices"):
    sharding.make_mesh({"data": 16}, jax.devices())
  with pytest.raises(KeyError, match="Unknown mesh axes"):
    sharding.make_mesh({"dta": 8}, jax.devices())
