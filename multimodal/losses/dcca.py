"""Deep CCA (Andrew et al. 2013): make two modalities' embeddings maximally correlated.

Canonical correlation analysis finds directions a, b that maximise corr(x a, y b); the k
canonical correlations are the singular values of T = Sxx^{-1/2} Sxy Syy^{-1/2}, built from the
batch's covariances. DCCA trains the encoders under the two views to maximise their total
correlation, the sum of those singular values (the trace norm of T), so `dcca_loss` is its
negative: use it as the objective or add it to any model's loss (`add_dcca_aux_loss`).

Why ridge: with a batch no larger than the embedding width (N <= D) the sample covariances are
singular and N - 1 canonical correlations are exactly 1 whatever the data, so the loss carries
no signal. `ridge * I` on Sxx and Syy makes them invertible (and well conditioned in float32)
and shrinks those spurious correlations; a ridge far below the features' variances still leaves
them near 1, so prefer batches well above the width.

Numerics, all in float32 with full-precision matmuls (TPU and GPU default to bf16 / TF32 passes):
- Whitening by Cholesky factors (Sxx = Lx Lx^T, T = Lx^{-1} Sxy Ly^{-T}) rather than by an
  eigendecomposition: any whitening gives the same singular values, but the gradient of eigh
  divides by eigenvalue gaps, so it is NaN when eigenvalues repeat, which ridge causes (N < D
  leaves D - N + 1 eigenvalues equal to ridge), and so do already-whitened features.
- A jitter of 1e-6 times Sxx's mean variance on its diagonal keeps the Cholesky factor defined
  for ridge = 0 and rank-deficient batches (dead units); it moves the correlations by ~1e-6.
- Correlations as singular values from `jnp.linalg.svd(compute_uv=False)`, whose gradient
  u_i v_i^T has no division by gaps (unlike sqrt(eig(T^T T)), infinite at a zero correlation).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import aux_losses

_JITTER = 1e-6  # Relative to the mean variance; see the module docstring.


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _check(x: jax.Array, y: jax.Array, ridge: float, num_components: int | None) -> int:
  """Validates the inputs and returns k, the number of canonical correlations to keep."""
  if x.ndim != 2 or y.ndim != 2:
    raise ValueError(f"DCCA takes two 2-D batches of embeddings [N, D], got shapes "
                     f"{x.shape} and {y.shape}.")
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"DCCA needs paired examples: x has {x.shape[0]} rows and y has "
                     f"{y.shape[0]}.")
  if x.shape[0] < 2:
    raise ValueError(f"DCCA needs a batch of at least 2 pairs for covariances, got "
                     f"{x.shape[0]}.")
  if ridge < 0:
    raise ValueError(f"DCCA's ridge must be >= 0, got {ridge}.")
  most = min(x.shape[1], y.shape[1])
  if num_components is None:
    return most
  if not 1 <= num_components <= most:
    raise ValueError(f"DCCA's num_components must be in [1, min(Dx, Dy) = {most}], got "
                     f"{num_components}.")
  return num_components


def _whitening_factor(centered: jax.Array, ridge: float) -> jax.Array:
  """float32[D, D] lower-triangular L with L L^T = the ridge-regularised covariance of
  float32[N, D] `centered`."""
  dim = centered.shape[1]
  cov = _matmul(centered.T, centered) / (centered.shape[0] - 1)
  jitter = _JITTER * jnp.trace(cov) / dim + jnp.finfo(jnp.float32).tiny
  return jnp.linalg.cholesky(cov + (ridge + jitter) * jnp.eye(dim, dtype=jnp.float32))


def canonical_correlations(x: jax.Array, y: jax.Array, *, ridge: float = 1e-3,
                           num_components: int | None = None) -> jax.Array:
  """float32[k], descending: the top k canonical correlations between the paired rows of
  float[N, Dx] `x` and float[N, Dy] `y` (k = num_components, or min(Dx, Dy) if None), with
  `ridge` added to the diagonals of both views' covariances."""
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  k = _check(x, y, ridge, num_components)
  x = x - x.mean(axis=0)
  y = y - y.mean(axis=0)
  cross = _matmul(x.T, y) / (x.shape[0] - 1)  # Sxy: float32[Dx, Dy].
  lx, ly = _whitening_factor(x, ridge), _whitening_factor(y, ridge)
  # T = Lx^{-1} Sxy Ly^{-T}, by two triangular solves.
  t = jax.scipy.linalg.solve_triangular(lx, cross, lower=True)
  t = jax.scipy.linalg.solve_triangular(ly, t.T, lower=True).T
  return jnp.linalg.svd(t, compute_uv=False)[:k]


def total_correlation(x: jax.Array, y: jax.Array, *, ridge: float = 1e-3,
                      num_components: int | None = None) -> jax.Array:
  """float32[]: the sum of the top k canonical correlations (DCCA's objective, at most k)."""
  return canonical_correlations(x, y, ridge=ridge, num_components=num_components).sum()


def dcca_loss(x: jax.Array, y: jax.Array, *, ridge: float = 1e-3,
              num_components: int | None = None) -> jax.Array:
  """float32[]: minus the total correlation of float[N, Dx] `x` and float[N, Dy] `y`."""
  return -total_correlation(x, y, ridge=ridge, num_components=num_components)


def add_dcca_aux_loss(module: nn.Module, x: jax.Array, y: jax.Array, weight: float, *,
                      ridge: float = 1e-3, num_components: int | None = None) -> None:
  """From inside `module`, adds weight * dcca_loss(x, y) to the training loss as "dcca"."""
  if module.is_mutable_collection(aux_losses.COLLECTION):  # Evaluation skips the SVD.
    aux_losses.add_aux_loss(module, "dcca", weight * dcca_loss(
        x, y, ridge=ridge, num_components=num_components))
