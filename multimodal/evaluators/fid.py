"""Fréchet distance between two sets of features, each summarised by a Gaussian (FID when
the features are an image network's; here, the attribute classifier's pooled ViT features).

  d^2 = |mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^(1/2))

tr((C_a C_b)^(1/2)) is computed as tr((S C_b S)^(1/2)) with S = C_a^(1/2): C_a C_b is similar
to S C_b S, which is symmetric positive semi-definite, so both square roots come from
symmetric eigen-decompositions (eigenvalues clipped at 0) in float64, with no complex
intermediates or iterative sqrtm.
"""
from __future__ import annotations

import numpy as np


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """float[N, D] -> (mean float64[D], covariance float64[D, D], unbiased)."""
  x = np.asarray(features, np.float64)
  if x.ndim != 2 or len(x) < 2:
    raise ValueError(f"Fitting a Gaussian needs features [N >= 2, D]; got shape {x.shape}.")
  return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
  """The square root of a symmetric positive semi-definite matrix."""
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray,
                     cov_b: np.ndarray) -> float:
  """The squared Fréchet distance between N(mean_a, cov_a) and N(mean_b, cov_b)."""
  mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
  cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
  if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (
      mean_a.shape * 2):
    raise ValueError(f"Gaussians of different dimensions: means {mean_a.shape}, "
                     f"{mean_b.shape}; covariances {cov_a.shape}, {cov_b.shape}.")
  root_a = _sqrt_psd(cov_a)
  inner = root_a @ cov_b @ root_a
  cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)))
  distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
  return float(max(distance, 0.0))  # rounding can leave -1e-12 for equal Gaussians


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """Fréchet distance between Gaussians fitted to float[N_a, D] and float[N_b, D]."""
  return frechet_distance(*gaussian(features_a), *gaussian(features_b))
