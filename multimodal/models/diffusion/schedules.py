"""Noise schedules of DDPM, the forward (noising) process, and the three ways a network may
parametrise what it predicts.

Timesteps are t = 0 ... T-1; step t has noised the data t + 1 times, with
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,   abar_t = prod_{i <= t} (1 - beta_i),
so abar decreases from nearly 1 (t = 0) to nearly 0 (t = T-1). With a = sqrt(abar_t) and
s = sqrt(1 - abar_t) the network predicts one of
  "eps": the noise eps;   "x0": the clean x0;   "v": v = a eps - s x0 (Salimans & Ho, 2022),
each of which, with x_t, gives the other two.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "x0", "v")


def linear_betas(timesteps: int, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
  """DDPM's (Ho et al., 2020) betas, float64[T], from `start` to `end` at T = 1000 and
  rescaled by 1000 / T for other T (improved-diffusion), so the last abar stays near 0."""
  scale = 1000 / timesteps
  return np.linspace(scale * start, scale * end, timesteps, dtype=np.float64)


def cosine_betas(timesteps: int, offset: float = 0.008, max_beta: float = 0.999
                 ) -> np.ndarray:
  """Nichol & Dhariwal's (2021) schedule, float64[T]: abar(u) = f(u) / f(0) with
  f(u) = cos((u / T + offset) / (1 + offset) * pi / 2)^2 at u = t + 1, betas clipped at
  `max_beta` (the last would be 1)."""
  f = lambda u: math.cos((u / timesteps + offset) / (1 + offset) * math.pi / 2) ** 2
  betas = [min(1 - f(t + 1) / f(t), max_beta) for t in range(timesteps)]
  return np.asarray(betas, np.float64)


def alphas_cumprod(schedule: str, timesteps: int) -> np.ndarray:
  """abar_t = prod_{i <= t} (1 - beta_i) of the named schedule, float64[T]."""
  if schedule not in SCHEDULES:
    raise ValueError(f"Unknown noise schedule {schedule!r}; use one of {list(SCHEDULES)}.")
  if timesteps < 1:
    raise ValueError(f"The diffusion needs at least one timestep, got timesteps={timesteps}.")
  betas = linear_betas(timesteps) if schedule == "linear" else cosine_betas(timesteps)
  return np.cumprod(1.0 - betas)


def check_prediction(prediction: str) -> None:
  if prediction not in PREDICTIONS:
    raise ValueError(f"Unknown diffusion prediction {prediction!r}; use one of "
                     f"{list(PREDICTIONS)}.")


def per_example(values: jax.Array, like: jax.Array) -> jax.Array:
  """float[B] -> float[B, 1, ..., 1] with as many dimensions as `like`."""
  return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def coefficients(abar: jax.Array, like: jax.Array) -> tuple[jax.Array, jax.Array]:
  """abar float[B] -> (a, s) = (sqrt(abar), sqrt(1 - abar)), each float[B, 1, ..., 1]."""
  abar = per_example(abar.astype(jnp.float32), like)
  return jnp.sqrt(abar), jnp.sqrt(1.0 - abar)


def q_sample(x0: jax.Array, abar: jax.Array, noise: jax.Array) -> jax.Array:
  """x0 float[B, ...], abar float[B], noise float[B, ...] -> x_t = a x0 + s noise."""
  a, s = coefficients(abar, x0)
  return a * x0 + s * noise


def prediction_target(prediction: str, x0: jax.Array, noise: jax.Array, abar: jax.Array
                      ) -> jax.Array:
  """What a network of the `prediction` kind should output for x_t = q_sample(x0, abar,
  noise): float[B, ...]."""
  check_prediction(prediction)
  if prediction == "eps":
    return noise
  if prediction == "x0":
    return x0
  a, s = coefficients(abar, x0)
  return a * noise - s * x0


def x0_and_eps(prediction: str, output: jax.Array, x_t: jax.Array, abar: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
  """A network's output of the `prediction` kind at x_t float[B, ...] -> (x0, eps), each
  float[B, ...] (the inverse of `prediction_target`)."""
  check_prediction(prediction)
  a, s = coefficients(abar, x_t)
  if prediction == "eps":
    return (x_t - s * output) / a, output
  if prediction == "x0":
    return output, eps_from_x0(output, x_t, abar)
  return a * x_t - s * output, s * x_t + a * output


def eps_from_x0(x0: jax.Array, x_t: jax.Array, abar: jax.Array) -> jax.Array:
  """The noise that takes x0 to x_t: (x_t - a x0) / s."""
  a, s = coefficients(abar, x_t)
  return (x_t - a * x0) / s
