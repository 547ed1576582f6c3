"""DCCA: canonical correlations match classic CCA computed in NumPy, have CCA's invariances,
give finite gradients that raise the correlation, refuse bad input, and reach the aux loss."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from multimodal.losses import dcca
from multimodal.models import aux_losses


def numpy_cca(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
  """Classic CCA in float64: rho^2 are the eigenvalues of Sxx^-1 Sxy Syy^-1 Syx."""
  x = x - x.mean(axis=0)
  y = y - y.mean(axis=0)
  n = x.shape[0] - 1
  sxx = x.T @ x / n + ridge * np.eye(x.shape[1])
  syy = y.T @ y / n + ridge * np.eye(y.shape[1])
  sxy = x.T @ y / n
  rho2 = np.linalg.eigvals(np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)).real
  k = min(x.shape[1], y.shape[1])
  return np.sqrt(np.clip(np.sort(rho2)[::-1][:k], 0, None))


def noisy_views(n: int, dx: int, dy: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """float64[n, dx], float64[n, dy]: y a linear map of x plus noise of a different scale per
  column, so the canonical correlations are high and distinct."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, dx)) + 2.0
  noise = rng.normal(size=(n, dy)) * np.geomspace(0.2, 5.0, dy)
  return x, x @ rng.normal(size=(dx, dy)) + noise


@pytest.mark.parametrize("n, dx, dy, ridge", [(256, 6, 4, 1e-3), (6, 10, 8, 0.1)])
def test_canonical_correlations_match_numpy_cca(n, dx, dy, ridge):
  x, y = noisy_views(n, dx, dy)
  expected = numpy_cca(x, y, ridge)
  got = dcca.canonical_correlations(x.astype(np.float32), y.astype(np.float32), ridge=ridge)
  assert got.dtype == jnp.float32 and got.shape == (min(dx, dy),)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  if n > dx:  # Distinct and high enough for the comparison to mean something.
    assert expected[0] > 0.9 and np.all(np.diff(expected) < -0.01)
  top2 = dcca.total_correlation(x, y, ridge=ridge, num_components=2)
  np.testing.assert_allclose(top2, expected[:2].sum(), rtol=1e-4)
  np.testing.assert_allclose(dcca.dcca_loss(x, y, ridge=ridge), -expected.sum(), rtol=1e-4)


def test_total_correlation_has_the_invariances_of_cca():
  x, y = noisy_views(512, 5, 5, seed=1)
  x, y = x.astype(np.float32), y.astype(np.float32)
  total = dcca.total_correlation(x, y, ridge=0.0)
  rng = np.random.default_rng(2)
  mixed = x @ (np.eye(5) + 0.5 * rng.normal(size=(5, 5))).astype(np.float32) * 30.0 - 7.0
  np.testing.assert_allclose(dcca.total_correlation(mixed, y, ridge=0.0), total, rtol=1e-4)
  np.testing.assert_allclose(dcca.total_correlation(x + 100.0, y, ridge=0.0), total, rtol=1e-4)
  # y an invertible linear map of x: every correlation is 1 (y narrower: min(Dx, Dy) of them).
  np.testing.assert_allclose(dcca.canonical_correlations(x, x @ rng.normal(size=(5, 5)),
                                                         ridge=0.0), 1.0, atol=1e-4)
  np.testing.assert_allclose(dcca.total_correlation(x, x[:, :3] @ rng.normal(size=(3, 3)),
                                                    ridge=0.0), 3.0, atol=1e-4)
  # Independent views: each correlation is only sampling noise, a few times 1 / sqrt(N).
  independent = dcca.total_correlation(rng.normal(size=(4096, 4)), rng.normal(size=(4096, 4)),
                                       ridge=0.0)
  assert 0.0 <= float(independent) < 0.15


def test_gradient_is_finite_matches_finite_differences_and_survives_repeated_eigenvalues():
  x, y = noisy_views(64, 4, 3, seed=3)
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  # Jitted: one compile per shape is faster than running the backward pass op by op.
  grads = jax.jit(jax.grad(dcca.dcca_loss, argnums=(0, 1)), static_argnames="ridge")
  grad = grads(x, y, ridge=1e-3)[0]
  direction = jnp.asarray(np.random.default_rng(4).normal(size=x.shape), jnp.float32)
  eps = 1e-2
  numeric = (dcca.dcca_loss(x + eps * direction, y)
             - dcca.dcca_loss(x - eps * direction, y)) / (2 * eps)
  np.testing.assert_allclose(jnp.vdot(grad, direction), numeric, rtol=2e-2)
  # Batches smaller than the width (ridge-dominated covariance: eigenvalues repeat) and
  # whitened features (covariance the identity) are where an eigh-based whitening gives NaN.
  small_x, small_y = noisy_views(5, 12, 12, seed=5)
  whitened = np.linalg.qr(np.random.default_rng(6).normal(size=(64, 4)))[0] * np.sqrt(63)
  for a, b, ridge in [(small_x, small_y, 1e-3), (whitened, whitened[:, :3] * 2.0, 0.0)]:
    grad_a, grad_b = grads(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                           ridge=ridge)
    assert bool(jnp.all(jnp.isfinite(grad_a)) & jnp.all(jnp.isfinite(grad_b)))


def test_gradient_descent_on_linear_projections_finds_the_shared_signal():
  """Two 6-D views share a 2-D latent under larger view-specific nuisance; DCCA training of
  2-D projections of each should find the latent, nearly reaching full-view CCA's top two."""
  rng = np.random.default_rng(7)
  n = 512
  shared = rng.normal(size=(n, 2))
  views = [np.concatenate([shared + 0.3 * rng.normal(size=(n, 2)),
                           3.0 * rng.normal(size=(n, 4))], axis=1)
           @ np.linalg.qr(rng.normal(size=(6, 6)))[0] for _ in range(2)]  # Rotated.
  v1, v2 = (jnp.asarray(v, jnp.float32) for v in views)
  params = {"w1": jnp.asarray(rng.normal(size=(6, 2)), jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)}

  def loss(p):
    return dcca.dcca_loss(v1 @ p["w1"], v2 @ p["w2"])

  optimizer = optax.adam(0.05)

  @jax.jit
  def train(p):
    def step(carry, _):
      p, opt_state = carry
      updates, opt_state = optimizer.update(jax.grad(loss)(p), opt_state)
      return (optax.apply_updates(p, updates), opt_state), None
    return jax.lax.scan(step, (p, optimizer.init(p)), None, length=200)[0][0]

  before, after = -loss(params), -loss(train(params))
  best = dcca.total_correlation(v1, v2, num_components=2)
  assert float(best) > float(before) + 0.5
  assert float(after) > float(before) + 0.5 and float(after) > 0.97 * float(best)


@pytest.mark.parametrize("x_shape, y_shape, kwargs, match", [
    ((8, 3), (8, 3, 1), {}, "2-D"),
    ((8,), (8, 3), {}, "2-D"),
    ((8, 3), (7, 3), {}, "paired"),
    ((1, 3), (1, 3), {}, "at least 2"),
    ((8, 3), (8, 3), {"ridge": -1e-3}, "ridge"),
    ((8, 3), (8, 2), {"num_components": 3}, "num_components"),
    ((8, 3), (8, 2), {"num_components": 0}, "num_components"),
])
def test_bad_input_is_refused_with_a_clear_message(x_shape, y_shape, kwargs, match):
  with pytest.raises(ValueError, match=match):
    dcca.dcca_loss(jnp.ones(x_shape), jnp.ones(y_shape), **kwargs)


class TwoProjections(nn.Module):
  """Projects two views to 2-D and adds their weighted DCCA loss as an auxiliary loss."""

  @nn.compact
  def __call__(self, a, b):
    pa, pb = nn.Dense(2, name="pa")(a), nn.Dense(2, name="pb")(b)
    dcca.add_dcca_aux_loss(self, pa, pb, 0.5, ridge=1e-2)
    return pa, pb


def test_add_dcca_aux_loss_sows_the_weighted_loss_in_training_only():
  a, b = (jnp.asarray(v, jnp.float32) for v in noisy_views(32, 4, 3, seed=8))
  model = TwoProjections()
  params = model.init(jax.random.key(0), a, b)["params"]
  (pa, pb), state = model.apply({"params": params}, a, b, mutable=[aux_losses.COLLECTION])
  expected = 0.5 * dcca.dcca_loss(pa, pb, ridge=1e-2)
  assert float(expected) < -0.1
  np.testing.assert_allclose(aux_losses.total(state), expected, rtol=1e-6)
  _, state = model.apply({"params": params}, a, b, mutable=["intermediates"])
  assert aux_losses.COLLECTION not in state
