"""The continuous bottleneck of latent diffusion's autoencoder (Rombach et al., 2022): a
diagonal Gaussian per cell, a small KL to N(0, I), a sample in training and the mean
otherwise."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def kl_to_standard_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, 1)) per element (same shape as its inputs)."""
  return 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


class GaussianLatent(nn.Module):
  """Attributes:
    latent_dim: C channels per cell (the encoder gives 2 C: the mean and the log-variance).
    kl_weight: weight of the KL to N(0, I), averaged over every latent element.
  """
  latent_dim: int
  kl_weight: float = 1e-4

  @property
  def input_dim(self) -> int:
    return 2 * self.latent_dim

  def __call__(self, moments: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """moments float[B, h, w, 2 C] -> latents float32[B, h, w, C] (a sample in training, the
    mean otherwise), losses {kl}, stats {latent_std: the means' standard deviation (its
    inverse is the usual latent_scale)}."""
    mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    logvar = jnp.clip(logvar, -30.0, 20.0)  # latent diffusion's bounds, against overflow
    latents = mean
    if train:
      noise = jax.random.normal(self.make_rng("dropout"), mean.shape)
      latents = mean + jnp.exp(0.5 * logvar) * noise
    return {"latents": latents,
            "losses": {"kl": self.kl_weight * jnp.mean(kl_to_standard_normal(mean, logvar))},
            "stats": {"latent_std": jnp.std(jax.lax.stop_gradient(mean))}}
