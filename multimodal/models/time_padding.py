"""Padding masks over time for the encoders of signals (audio, video, sensors)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def time_mask(x: jax.Array, mask: jax.Array | None, what: str) -> jax.Array:
  """bool[B, T]: which time steps of x: [B, T, ...] are real (all of them when mask is None)."""
  if mask is None:
    return jnp.ones(x.shape[:2], bool)
  if mask.shape != x.shape[:2]:
    raise ValueError(f"{what}: the mask must be bool[B, T] = {list(x.shape[:2])} (one entry "
                     f"per time step), got shape {list(mask.shape)}.")
  return mask.astype(bool)


def zero_padding(x: jax.Array, mask: jax.Array) -> jax.Array:
  """x: float[B, T, ...] with its padded steps (mask: bool[B, T] False) set to zero."""
  return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x, 0).astype(x.dtype)


def pad_to_patches(x: jax.Array, mask: jax.Array, patch: int) -> tuple[jax.Array, jax.Array]:
  """Prepares x: float[B, T, ...] for patches of `patch` time steps.

  Padded steps (mask: bool[B, T] False) are zeroed, so nothing depends on their values, and
  T is zero-padded at the end to a multiple of `patch`.
  Returns (float[B, P * patch, ...], bool[B, P]) with P = ceil(T / patch): the padded signal,
  and which patches hold at least one real step.
  """
  steps = x.shape[1]
  pad = -steps % patch
  x = jnp.pad(zero_padding(x, mask), [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  mask = jnp.pad(mask, [(0, 0), (0, pad)])
  return x, jnp.any(mask.reshape(mask.shape[0], -1, patch), axis=2)


def local_attention(token_steps: np.ndarray, window: int | None) -> np.ndarray | None:
  """bool[N, N]: token i may attend token j when their time steps (token_steps: int[N], e.g.
  each patch's index along time) lie at most `window` apart; None (attend all) when window is
  None."""
  if window is None:
    return None
  if window < 0:
    raise ValueError(f"time_window={window} must be >= 0 (or None: attend to all steps).")
  steps = np.asarray(token_steps)
  return np.abs(steps[:, None] - steps[None, :]) <= window
