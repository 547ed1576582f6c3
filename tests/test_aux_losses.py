"""Auxiliary losses sown by any module reach the training loss, and the gated module's
balance loss keeps its gates from collapsing onto one modality."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from multimodal.models import aux_losses, missing_modalities
from multimodal.models.fusion.pooled import balance_loss
from multimodal.training import sharding
from multimodal.training.train_state import create_sharded_state
from multimodal.training.train_step import make_train_step
from tests.test_fusion_modules import B, build, features, run


class PenalisedLinear(nn.Module):
  """Linear map whose `extra` parameter only the auxiliary loss sees."""

  @nn.compact
  def __call__(self, batch, *, train):
    extra = self.param("extra", nn.initializers.ones, (3,))
    aux_losses.add_aux_loss(self, "extra_norm", 0.5 * jnp.sum(extra ** 2))
    return nn.Dense(1)(batch["x"])[:, 0]


class SquaredError:
  def loss(self, outputs, batch):
    return jnp.mean((outputs - batch["y"]) ** 2), {}

  def predict(self, outputs, batch):
    return {"y": outputs}


def test_train_step_adds_sown_losses_to_the_task_loss_and_reports_both():
  model, task = PenalisedLinear(), SquaredError()
  rng = np.random.default_rng(0)
  batch = {"x": rng.normal(size=(8, 4)).astype(np.float32),
           "y": rng.normal(size=(8,)).astype(np.float32)}
  mesh = sharding.make_mesh({"data": 1}, jax.devices()[:1])
  optimizer = optax.sgd(0.1)
  state, shardings = create_sharded_state(model, optimizer, batch, jax.random.key(0), mesh,
                                          sharding.DEFAULT_RULES)
  params = jax.device_get(state.params)
  step = make_train_step(model, task, optimizer, optax.constant_schedule(0.1),
                         jax.random.key(1), shardings, sharding.batch_sharding(mesh),
                         sharding.replicated(mesh))
  state, metrics = step(state, batch)
  task_loss = np.mean((model.apply({"params": params}, batch, train=False) - batch["y"]) ** 2)
  np.testing.assert_allclose(metrics["task_loss"], task_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["aux_loss"], 1.5, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], task_loss + 1.5, rtol=1e-5)
  # Only the auxiliary loss reaches `extra`: one SGD step on 0.5 |extra|^2 scales it by 0.9.
  np.testing.assert_allclose(jax.device_get(state.params)["extra"], 0.9, rtol=1e-6)


def test_add_aux_loss_refuses_non_scalars_and_does_nothing_outside_training():
  class Bad(nn.Module):
    @nn.compact
    def __call__(self, x):
      aux_losses.add_aux_loss(self, "bad", x)
      return x
  with pytest.raises(ValueError, match="scalar"):
    Bad().apply({}, jnp.ones(3), mutable=[aux_losses.COLLECTION])
  assert aux_losses.total({}) is None
  model = PenalisedLinear()
  variables = model.init(jax.random.key(0), {"x": jnp.ones((2, 4))}, train=False)
  _, collections = model.apply(variables, {"x": jnp.ones((2, 4))}, train=False,
                               mutable=["intermediates"])
  assert aux_losses.COLLECTION not in collections


def test_balance_loss_is_zero_for_uniform_use_and_one_for_collapse():
  present = jnp.ones((4, 2), bool)
  assert float(balance_loss(jnp.full((4, 2), 0.5), present)) == 0.0
  np.testing.assert_allclose(balance_loss(jnp.tile(jnp.array([[0.0, 1.0]]), (4, 1)), present),
                             1.0)
  # Per-example weights that differ but average to uniform cost nothing.
  assert float(balance_loss(jnp.array([[0.9, 0.1], [0.1, 0.9]]), present[:2])) < 1e-12
  # An example with the image missing has a uniform gate of (0, 1): all on the text is right.
  present = jnp.array([[True, True], [False, True]])
  weights = jnp.array([[0.5, 0.5], [0.0, 1.0]])
  assert float(balance_loss(weights, present)) < 1e-12


def test_gated_adds_its_weighted_balance_loss_during_training_only():
  module, params = build("gated", balance_loss_weight=0.25)
  rng = np.random.default_rng(3)  # Gates away from their uniform start.
  params["gate_scores"] = jax.tree.map(
      lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params["gate_scores"])
  feats = missing_modalities.remove(features(), {"image": jnp.arange(B) == 0})
  out, state = run(module, params, feats, mutable=[aux_losses.COLLECTION])
  present = jnp.stack([feats[m].mask.any(axis=1) for m in ("image", "text")], axis=1)
  expected = 0.25 * balance_loss(out.modality_weights, present)
  assert float(expected) > 1e-4
  np.testing.assert_allclose(aux_losses.total(state), expected, rtol=1e-6)
  np.testing.assert_allclose(state[aux_losses.COLLECTION]["gate_balance"][0], expected)
  # Its gradient pushes the batch's gates toward uniform use.
  grads = jax.grad(lambda w: balance_loss(w, jnp.ones((2, 2), bool)))(
      jnp.array([[0.1, 0.9], [0.2, 0.8]]))
  assert np.all(grads[:, 0] < 0) and np.all(grads[:, 1] > 0)
  _, off = run(build("gated", balance_loss_weight=0.0)[0], params, feats,
               mutable=[aux_losses.COLLECTION])
  assert aux_losses.total(off) is None
