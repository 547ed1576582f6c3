"""What a denoiser is conditioned on besides the noisy input: the timestep (sinusoidal
features, then an MLP) plus the pooled prompt, one vector per example; and the prompt dropped
at random in training, for classifier-free guidance."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.transformer import dense


def timestep_features(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """int[B] timesteps -> float32[B, dim]: cosines then sines of t at frequencies from 1 down
  to 1 / max_period, geometrically spaced (the Transformer's position features, as DDPM)."""
  if dim % 2:
    raise ValueError(f"Timestep features need an even width, got {dim}.")
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = t.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class ConditionEmbedding(nn.Module):
  """MLP(timestep features) + Dense(pooled prompt): float32[B, width].

  An empty prompt (all of it masked) pools to zeros, so it adds only the bias.
  """
  width: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, t: jax.Array, pooled_text: jax.Array) -> jax.Array:
    """t: int[B]; pooled_text: float[B, D] -> float[B, width]."""
    h = timestep_features(t, self.width).astype(self.dtype)
    h = nn.silu(dense(self.width, None, "mlp", "time_fc1", self.dtype)(h))
    h = dense(self.width, "mlp", "embed", "time_fc2", self.dtype)(h)
    return h + dense(self.width, None, "embed", "text_proj", self.dtype)(pooled_text)


def drop_prompts(rng: jax.Array, mask: jax.Array, rate: float) -> jax.Array:
  """bool[B, T] text mask with each example's prompt removed (its row all False) with
  probability `rate`: the unconditional examples classifier-free guidance needs."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"prompt_dropout must be in [0, 1], got {rate}.")
  keep = jax.random.bernoulli(rng, 1.0 - rate, (mask.shape[0],))
  return mask.astype(bool) & keep[:, None]
