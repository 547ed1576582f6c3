"""The train step on 8 simulated devices equals the one-device run for the same global batch."""
import jax
import numpy as np
import pytest

from multimodal import models
from multimodal.config_utils import base_config
from multimodal.data import pipeline
from multimodal.models.transformer import scanned_layout
from multimodal.tasks.vqa import VqaTask
from multimodal.training import sharding
from multimodal.training.optimizer import learning_rate_schedule, make_optimizer
from multimodal.training.train_state import create_sharded_state
from multimodal.training.train_step import make_train_step

GLOBAL_BATCH = 16
SMALL = dict(variant=None, width=32, depth=1, mlp_dim=64, num_heads=4)
OPT_CONFIG = base_config().optimizer
OPTIMIZER = make_optimizer(OPT_CONFIG, total_steps=10)


def make_batches(num_answers, steps=3):
  rng = np.random.default_rng(0)
  for _ in range(steps):
    index = rng.integers(0, num_answers, GLOBAL_BATCH).astype(np.int32)
    yield dict(image=rng.uniform(-1, 1, (GLOBAL_BATCH, 16, 16, 3)).astype(np.float32),
               question_tokens=rng.integers(1, 50, (GLOBAL_BATCH, 8)).astype(np.int32),
               question_mask=np.arange(8)[None] < rng.integers(1, 9, (GLOBAL_BATCH, 1)),
               answer_index=index,
               answer_scores=np.eye(num_answers, dtype=np.float32)[index])


def init(mesh_sizes, devices, **stacking):
  """The small VQA model and its sharded state; `stacking` (remat, scan_layers) applies to
  every transformer stack. -> (mesh, task, model, state, shardings)."""
  mesh = sharding.make_mesh(mesh_sizes, devices)
  task = VqaTask(answers="shapes_vqa", tokenizer="shapes")
  small = dict(SMALL, **stacking)
  model = models.MODELS.build(
      dict(type="fusion_vqa", image=dict(type="vit", patch_size=8, stem="conv",
                                         stem_channels=(8,), **small),
           text=dict(type="text_encoder", **small),
           fusion=dict(type="cross_attention", width=32, depth=2, num_heads=4, mlp_dim=64,
                       **stacking),
           head=dict(type="classifier", hidden_dim=32)),
      num_answers=len(task.answers), vocab_size=64)
  batch = next(make_batches(len(task.answers)))
  example = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
  state, shardings = create_sharded_state(model, OPTIMIZER, example, jax.random.key(0), mesh,
                                          sharding.DEFAULT_RULES)
  return mesh, task, model, state, shardings


def train(mesh_sizes, devices, params=None, grad_accum_steps=1, **stacking):
  """Three steps from the initial params, or from `params` where given.
  -> (losses, final state, initial params on the host)."""
  mesh, task, model, state, shardings = init(mesh_sizes, devices, **stacking)
  if params is not None:
    state = state.replace(params=jax.device_put(params, shardings.params))
  initial_params = jax.device_get(state.params)
  step = make_train_step(model, task, OPTIMIZER, learning_rate_schedule(OPT_CONFIG, 10),
                         jax.random.key(1), shardings, sharding.batch_sharding(mesh),
                         sharding.replicated(mesh), grad_accum_steps=grad_accum_steps)
  losses = []
  for batch in make_batches(len(task.answers)):
    state, metrics = step(state, pipeline.to_global(batch, sharding.batch_sharding(mesh)))
    losses.append(float(metrics["loss"]))
  return losses, state, initial_params


def mesh_id(sizes):
  return "-".join(f"{axis}{size}" for axis, size in sizes.items())


@pytest.fixture(scope="module")
def reference():
  assert len(jax.devices()) == 8, "tests/conftest.py asks XLA for 8 CPU devices"
  losses, state, initial_params = train({"data": 1}, jax.devices()[:1])
  return losses, jax.device_get(state.params), initial_params


@pytest.mark.parametrize("mesh_sizes", [{"data": 8}, {"fsdp": 8}, {"data": 2, "fsdp": 4},
                                        {"data": 2, "fsdp": 2, "model": 2},
                                        {"data": 4, "model": 2}, {"fsdp": 4, "model": 2}],
                         ids=mesh_id)
def test_sharded_training_equals_one_device(reference, mesh_sizes):
  ref_losses, ref_params, _ = reference
  losses, state, _ = train(mesh_sizes, jax.devices())
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5),
               jax.device_get(state.params), ref_params)


def test_scanned_remat_training_equals_the_one_device_loop(reference):
  ref_losses, ref_params, initial_params = reference
  losses, state, _ = train({"data": 2, "fsdp": 2, "model": 2}, jax.devices(),
                           params=scanned_layout(initial_params), scan_layers=True, remat=True)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5),
               jax.device_get(state.params), scanned_layout(ref_params))


@pytest.mark.parametrize("mesh_sizes", [{"data": 4, "model": 2}, {"fsdp": 4, "model": 2}],
                         ids=mesh_id)
@pytest.mark.parametrize("scan_layers", [False, True], ids=["loop", "scan"])
def test_tensor_parallel_splits_heads_and_mlp(mesh_sizes, scan_layers):
  fsdp = mesh_sizes.get("fsdp", 1)
  *_, state, _ = init(mesh_sizes, jax.devices(), scan_layers=scan_layers)
  blocks = state.params["fusion"]["blocks" if scan_layers else "block0"]
  layers = (2,) if scan_layers else ()  # a scanned stack's `layers` axis stays whole
  query = blocks["self_attention"]["query"]["kernel"]  # [embed=32, heads=4, kv=8]
  assert query.sharding.shard_shape(query.shape) == layers + (32 // fsdp, 2, 8)
  fc1 = blocks["mlp"]["fc1"]["kernel"]  # [embed=32, mlp=64]
  assert fc1.sharding.shard_shape(fc1.shape) == layers + (32 // fsdp, 32)


def test_fsdp_shards_params_and_optimizer_state():
  _, state, _ = train({"fsdp": 8}, jax.devices())
  kernel = state.params["fusion"]["block0"]["mlp"]["fc1"]["kernel"]  # [embed=32, mlp=64]
  assert kernel.sharding.shard_shape(kernel.shape) == (4, 64)
  mu = state.opt_state[1][0].mu["fusion"]["block0"]["mlp"]["fc1"]["kernel"]
  assert mu.sharding.shard_shape(mu.shape) == (4, 64)


def test_mesh_errors_name_the_problem():
  with pytest.raises(ValueError, match="needs 16 devices"):
    sharding.make_mesh({"data": 16}, jax.devices())
  with pytest.raises(KeyError, match="Unknown mesh axes"):
    sharding.make_mesh({"dta": 8}, jax.devices())


@pytest.mark.parametrize("mesh_sizes", [{"data": 1}, {"data": 2, "fsdp": 2}])
def test_gradient_accumulation_equals_the_whole_batch(reference, mesh_sizes):
  """4 micro-batches of 4 give the update of the batch of 16 (on 1 device and on 4)."""
  ref_losses, ref_params, _ = reference
  devices = jax.devices()[:int(np.prod(list(mesh_sizes.values())))]
  losses, state, _ = train(mesh_sizes, devices, grad_accum_steps=4)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5),
               jax.device_get(state.params), ref_params)
