"""Invariants every fusion module keeps, inside the VQA model: padding changes nothing, a
missing modality gives finite outputs, gradients reach both encoders, and an fsdp-sharded
step on 8 devices gives the one-device loss and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal import models
from multimodal.models import missing_modalities
from multimodal.models.features import Features
from multimodal.models.fusion import FUSION
from multimodal.tasks.vqa import VqaTask
from multimodal.training import sharding
from multimodal.training.train_state import abstract_sharded_state
from multimodal.training.optimizer import make_optimizer
from multimodal.config_utils import base_config

MODULES = ("early", "late", "hybrid", "weighted_sum", "concat_mlp", "gated", "cross_attention",
           "co_attention", "bottleneck", "multiway", "relation_network")
SMALL = dict(variant=None, width=32, depth=1, mlp_dim=64, num_heads=4)
BATCH, TOKENS, RES = 8, 8, 16
TASK = VqaTask(answers="shapes_vqa", tokenizer="shapes")


def test_every_module_is_registered():
  assert sorted(MODULES) == FUSION.names()


def make_model(fusion: str, **fusion_settings):
  spec = dict(type=fusion, width=32, depth=2, num_heads=4, mlp_dim=64, **fusion_settings)
  return models.MODELS.build(
      dict(type="fusion_vqa",
           image=dict(type="vit", patch_size=8, stem="patch", pool_type="none", **SMALL),
           text=dict(type="text_encoder", **SMALL), fusion=spec,
           head=dict(type="classifier", hidden_dim=32)),
      num_answers=len(TASK.answers), vocab_size=64)


def make_batch(seed: int = 0, tokens: int = TOKENS) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  index = rng.integers(0, len(TASK.answers), BATCH).astype(np.int32)
  lengths = rng.integers(1, tokens + 1, (BATCH, 1))
  return dict(image=rng.uniform(-1, 1, (BATCH, RES, RES, 3)).astype(np.float32),
              question_tokens=rng.integers(1, 50, (BATCH, tokens)).astype(np.int32),
              question_mask=np.arange(tokens)[None] < lengths,
              answer_index=index,
              answer_scores=np.eye(len(TASK.answers), dtype=np.float32)[index])


@pytest.fixture(scope="module", params=MODULES)
def module_and_params(request):
  model = make_model(request.param)
  init = jax.jit(lambda rng, batch: model.init(rng, batch, train=False)["params"])
  return request.param, model, init(jax.random.key(0), make_batch())


def test_padding_tokens_change_nothing(module_and_params):
  """The question's padding positions hold other token ids: the logits stay the same."""
  _, model, params = module_and_params
  batch = make_batch()
  other = dict(batch, question_tokens=np.where(
      batch["question_mask"], batch["question_tokens"],
      np.random.default_rng(1).integers(1, 50, batch["question_tokens"].shape)).astype(np.int32))
  assert not np.array_equal(other["question_tokens"], batch["question_tokens"])
  apply = jax.jit(lambda batch: model.apply({"params": params}, batch, train=False))
  np.testing.assert_allclose(apply(batch), apply(other), rtol=1e-5, atol=1e-5)


def test_padding_inside_the_fusion_changes_nothing(module_and_params):
  """Padding straight into the fusion module: extra masked tokens of any value, in every
  modality, leave the pooled vector and the logits unchanged."""
  name, model, params = module_and_params
  from multimodal.models.features import Features
  rng = np.random.default_rng(2)
  feats = {"image": Features(jnp.asarray(rng.normal(size=(BATCH, 4, 32)), jnp.float32),
                             jnp.ones((BATCH, 4), bool)),
           "text": Features(jnp.asarray(rng.normal(size=(BATCH, 6, 32)), jnp.float32),
                            jnp.asarray(np.arange(6)[None] < rng.integers(1, 7, (BATCH, 1))))}
  padded = {m: Features(jnp.concatenate([f.tokens, jnp.asarray(
      rng.normal(size=(BATCH, 3, 32)) * 10, jnp.float32)], 1),
      jnp.concatenate([f.mask, jnp.zeros((BATCH, 3), bool)], 1)) for m, f in feats.items()}
  spec = dict(model.fusion)
  extra = dict(head=model.head, num_classes=5) if FUSION.get(name).decision_level else {}
  fusion = FUSION.build(spec, **extra)
  variables = jax.jit(lambda f: fusion.init(jax.random.key(0), f, train=False))(feats)
  apply = jax.jit(lambda f: fusion.apply(variables, f, train=False))
  a, b = apply(feats), apply(padded)
  np.testing.assert_allclose(a.pooled, b.pooled, rtol=1e-5, atol=1e-5)
  if a.logits is not None:
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
  del params


def test_missing_modality_gives_finite_outputs(module_and_params):
  _, model, params = module_and_params
  apply = jax.jit(lambda batch: model.apply({"params": params}, batch, train=False))

  def logits(*missing):
    batch = make_batch()
    for m in ("image", "text"):
      batch[m + missing_modalities.MISSING_SUFFIX] = np.full(BATCH, m in missing)
    return np.asarray(apply(batch))

  full = logits()
  np.testing.assert_allclose(full, apply(make_batch()), rtol=1e-5, atol=1e-5)
  for missing in ("image", "text"):
    without = logits(missing)
    assert np.all(np.isfinite(without)), f"non-finite logits without {missing}"
    assert not np.allclose(without, full), f"removing {missing} changed nothing"
  assert np.all(np.isfinite(logits("image", "text")))


def test_fsdp_sharded_step_equals_one_device_and_gradients_reach_every_encoder(
    module_and_params):
  name, model, params = module_and_params
  batch = make_batch()
  one_device = jax.jit(lambda params: TASK.loss(
      model.apply({"params": params}, batch, train=False), batch)[0])(params)

  mesh = sharding.make_mesh({"fsdp": 8}, jax.devices()[:8])
  example = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
  optimizer = make_optimizer(base_config().optimizer, total_steps=10)
  # The trainer's shardings, from the params' logical axes (nothing compiled to get them).
  _, shardings = abstract_sharded_state(model, optimizer, example, mesh, sharding.DEFAULT_RULES)
  placed = jax.device_put(params, shardings.params)
  sharded = [x for x in jax.tree.leaves(placed) if not x.sharding.is_fully_replicated]
  assert sharded, f"{name}: no parameter is split over fsdp"
  global_batch = {k: jax.device_put(v, sharding.batch_sharding(mesh)) for k, v in batch.items()}

  def loss(params):
    return TASK.loss(model.apply({"params": params}, global_batch, train=False), global_batch)[0]

  value, grads = jax.jit(jax.value_and_grad(loss), in_shardings=(shardings.params,),
                         out_shardings=(sharding.replicated(mesh), shardings.params))(placed)
  assert float(value) == pytest.approx(float(one_device), rel=1e-5)
  for encoder in ("image_encoder", "text_encoder"):
    assert global_norm(grads[encoder]) > 1e-6, f"{name}: no gradient reaches the {encoder}"


def global_norm(tree) -> float:
  return float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree))))


def test_a_null_context_token_lets_cross_attention_tell_how_many_tokens_match():
  """Softmax attention averages: repeating a context token changes nothing. With the null
  token (always attended to, a share that falls as more tokens match) it does; padded context
  tokens still change nothing."""
  rng = np.random.default_rng(0)
  text = Features(tokens=jnp.asarray(rng.normal(size=(2, 3, 16)), jnp.float32),
                  mask=jnp.ones((2, 3), bool))
  one = rng.normal(size=(2, 1, 16)).astype(np.float32)

  def context(copies: int, padding: int = 0) -> Features:
    tokens = np.concatenate([np.repeat(one, copies, axis=1),
                             rng.normal(size=(2, padding, 16)).astype(np.float32)], axis=1)
    mask = np.arange(copies + padding)[None].repeat(2, 0) < copies
    return Features(tokens=jnp.asarray(tokens), mask=jnp.asarray(mask))

  outputs = {}
  for null in (False, True):
    module = FUSION.build(dict(type="cross_attention", width=16, depth=1, num_heads=2,
                               mlp_dim=32, null_context=null))
    params = module.init(jax.random.key(0), {"text": text, "image": context(1)}, train=False)
    run = lambda image: np.asarray(module.apply(params, {"text": text, "image": image},
                                                train=False).pooled)
    outputs[null] = [run(context(n)) for n in (1, 3)]
    np.testing.assert_allclose(run(context(3, padding=2)), outputs[null][1], atol=1e-5)
  np.testing.assert_allclose(outputs[False][0], outputs[False][1], atol=1e-5)
  assert np.abs(outputs[True][0] - outputs[True][1]).max() > 1e-3
