"""DALL-E's discrete VAE bottleneck (Ramesh et al., 2021): logits over the codebook per cell,
relaxed in training with Gumbel-softmax (Jang et al., 2017), a hard argmax at evaluation, and a
KL term to the uniform prior over codes."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p


def kl_to_uniform(logits: jax.Array) -> jax.Array:
  """float[..., K] -> float32[...]: KL(softmax(logits) || uniform over K)."""
  log_q = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(log_q) * log_q, axis=-1) + math.log(logits.shape[-1])


class GumbelQuantizer(nn.Module):
  """Attributes:
    codebook_size: K codes; code_dim: the width D of their (learned) embeddings.
    temperature: the Gumbel-softmax temperature in training (lower: closer to one-hot).
    kl_weight: weight of the KL to the uniform prior, averaged over the cells.
  """
  codebook_size: int
  code_dim: int
  temperature: float = 1.0
  kl_weight: float = 1e-3

  def setup(self):
    if self.temperature <= 0:
      raise ValueError(f"temperature must be positive; got {self.temperature}.")
    self.embedding = self.param("embedding", p.init(nn.initializers.normal(1.0), "vocab", "embed"),
                                (self.codebook_size, self.code_dim))

  @property
  def input_dim(self) -> int:
    return self.codebook_size

  def __call__(self, logits: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """logits float[B, h, w, K] -> latents float32[B, h, w, D] (the relaxed codes' mix of
    embeddings in training, the argmax code's embedding otherwise), codes int32[B, h, w]
    (argmax), code_counts float32[B, K], losses {kl}, stats {}."""
    logits = logits.astype(jnp.float32)
    codes = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if train:
      noise = jax.random.gumbel(self.make_rng("dropout"), logits.shape)
      weights = jax.nn.softmax((logits + noise) / self.temperature, axis=-1)
      latents = weights @ self.embedding
    else:
      latents = self.lookup(codes)
    one_hot = jax.nn.one_hot(codes, self.codebook_size, dtype=jnp.float32)
    return {"latents": latents, "codes": codes,
            "code_counts": one_hot.reshape(logits.shape[0], -1, self.codebook_size).sum(1),
            "losses": {"kl": self.kl_weight * jnp.mean(kl_to_uniform(logits))},
            "stats": {}}

  def lookup(self, codes: jax.Array) -> jax.Array:
    """int32[...] -> float32[..., D]: the codes' embeddings."""
    return self.embedding[codes]
