"""Sampling from a trained denoiser on the device: DDPM's ancestral sampler and DDIM (eta=0),
each over a chosen number of evenly spaced steps, compiled as one `lax.fori_loop`; and
classifier-free guidance.

A sampler sees the network through `Denoiser`: (x_t float[B, ...], t int32[B]) -> its
estimates (x0, eps) of the clean sample and the noise, float[B, ...] each.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from multimodal.models.diffusion import schedules

Denoiser = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
SAMPLERS = ("ddim", "ddpm")


def sampling_timesteps(timesteps: int, steps: int) -> np.ndarray:
  """The `steps` timesteps a sampler visits, evenly spaced from T-1 down to 0: int32[steps]."""
  if not 1 <= steps <= timesteps:
    raise ValueError(f"sample_steps must be in [1, {timesteps}] (the model's timesteps), "
                     f"got {steps}.")
  return np.round(np.linspace(timesteps - 1, 0, steps)).astype(np.int32)


def ddim_step(x0: jax.Array, eps: jax.Array, abar_prev: jax.Array) -> jax.Array:
  """DDIM with eta = 0 (Song et al., 2021): the point at the earlier noise level abar_prev
  float[B] on the line through the estimates, sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps."""
  a, s = schedules.coefficients(abar_prev, x0)
  return a * x0 + s * eps


def ddpm_step(x_t: jax.Array, x0: jax.Array, abar: jax.Array, abar_prev: jax.Array,
              noise: jax.Array) -> jax.Array:
  """A draw from the posterior q(x_prev | x_t, x0) of the forward process between the noise
  levels abar > abar_prev (float[B]; the steps in between skipped as in improved-diffusion's
  respacing), with its variance beta~ = (1 - abar_prev) / (1 - abar) * beta."""
  abar, abar_prev = (schedules.per_example(v.astype(jnp.float32), x_t)
                     for v in (abar, abar_prev))
  beta = 1.0 - abar / abar_prev
  mean = (jnp.sqrt(abar_prev) * beta * x0 + jnp.sqrt(1.0 - beta) * (1.0 - abar_prev) * x_t
          ) / (1.0 - abar)
  variance = beta * (1.0 - abar_prev) / (1.0 - abar)
  return mean + jnp.sqrt(variance) * noise


def sample(sampler: str, denoise: Denoiser, noise: jax.Array, alphas_cumprod: jax.Array,
           steps: int, rng: jax.Array | None = None, clip_x0: bool = False) -> jax.Array:
  """From pure noise float[B, ...] at t = T-1 to a sample float[B, ...] in `steps` steps of
  the `sampler` ("ddim" or "ddpm"; ddpm draws its noise from `rng`). clip_x0: clip each x0
  estimate to [-1, 1] (pixels) and take eps consistent with it."""
  if sampler not in SAMPLERS:
    raise ValueError(f"Unknown sampler {sampler!r}; use one of {list(SAMPLERS)}.")
  if sampler == "ddpm" and rng is None:
    raise ValueError("The ddpm sampler draws noise at every step: pass an rng.")
  alphas_cumprod = jnp.asarray(alphas_cumprod, jnp.float32)
  ts = sampling_timesteps(alphas_cumprod.shape[0], steps)
  abars = alphas_cumprod[ts]
  abars_prev = jnp.concatenate([alphas_cumprod[ts[1:]], jnp.ones((1,), jnp.float32)])
  batch = noise.shape[0]

  def body(i: jax.Array, x: jax.Array) -> jax.Array:
    t = jnp.full((batch,), jnp.asarray(ts)[i], jnp.int32)
    abar, abar_prev = jnp.full((batch,), abars[i]), jnp.full((batch,), abars_prev[i])
    x0, eps = denoise(x, t)
    if clip_x0:
      x0 = jnp.clip(x0, -1.0, 1.0)
      eps = schedules.eps_from_x0(x0, x, abar)
    if sampler == "ddim":
      return ddim_step(x0, eps, abar_prev)
    return ddpm_step(x, x0, abar, abar_prev,
                     jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype))

  return jax.lax.fori_loop(0, steps, body, noise)


def classifier_free_guidance(apply: Callable[[jax.Array, jax.Array, Any], jax.Array],
                             x_t: jax.Array, t: jax.Array, cond: Any, uncond: Any,
                             scale: float | jax.Array) -> jax.Array:
  """uncond + scale * (cond - uncond) of the network's outputs `apply(x_t, t, text)` with the
  prompt (`cond`) and without (`uncond`), in one batched call over [cond; uncond] rows (the
  texts are pytrees of float[B, ...] arrays). Linear in the output, so for eps, x0 and v
  predictions alike it is the guided eps (Ho & Salimans, 2021). scale 1 (a Python number)
  is the conditional output alone, with no second half."""
  if isinstance(scale, (int, float)) and scale == 1:
    return apply(x_t, t, cond)
  both = lambda a, b: jnp.concatenate([a, b], axis=0)
  out = apply(both(x_t, x_t), both(t, t), jax.tree.map(both, cond, uncond))
  out_cond, out_uncond = jnp.split(out, 2, axis=0)
  return out_uncond + scale * (out_cond - out_uncond)
