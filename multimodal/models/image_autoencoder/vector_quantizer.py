"""VQ-VAE's quantizer with an exponential-moving-average codebook (van den Oord et al., 2017,
appendix; Sonnet's `VectorQuantizerEMA`), dead codes restarted from the batch (Jukebox).

The codebook is not a parameter: it and its EMA statistics live in the non-param collection
`codebook`, updated in training (`train=True` with the collection mutable); the gradient only
trains the encoder (commitment loss) and passes straight through the quantization.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

COLLECTION = "codebook"


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  return x / jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), eps * eps))


def nearest_codes(vectors: jax.Array, codebook: jax.Array) -> jax.Array:
  """float[N, D], float[K, D] -> int32[N]: each vector's nearest code by squared distance."""
  products = jnp.matmul(vectors, codebook.T, precision=jax.lax.Precision.HIGHEST)
  distances = (jnp.sum(jnp.square(vectors), -1, keepdims=True) - 2 * products
               + jnp.sum(jnp.square(codebook), -1)[None])
  return jnp.argmin(distances, axis=-1).astype(jnp.int32)


class VectorQuantizer(nn.Module):
  """Attributes:
    codebook_size: K codes; code_dim: their width D (the encoder's output width).
    beta: weight of the commitment loss mean((z - sg(quantized))^2).
    decay: the EMA decay of the codes' usage counts and sums.
    epsilon: Laplace smoothing of the usage counts (no division by zero).
    restart_threshold: a code whose EMA usage (assignments per batch) falls below this is
      moved onto a random encoder output of the batch (rng "dropout") with usage 1; 0: never.
      1 (Jukebox's): a code used less than about once per batch keeps moving to the data.
    data_init: at the first training step, every code starts from a random encoder output
      (a k-means-style initialisation from the data).
    normalize: l2-normalise the encoder outputs and the codes (cosine-similarity lookup, as
      ViT-VQGAN's), so that no code drifts out of reach.
  """
  codebook_size: int
  code_dim: int
  beta: float = 0.25
  decay: float = 0.99
  epsilon: float = 1e-5
  restart_threshold: float = 1.0
  data_init: bool = True
  normalize: bool = False

  def setup(self):
    if not 0.0 <= self.decay < 1.0:
      raise ValueError(f"ema_decay must lie in [0, 1); got {self.decay}.")
    def initial_codebook() -> jax.Array:
      codes = jax.random.normal(self.make_rng("params"), (self.codebook_size, self.code_dim))
      return l2_normalize(codes) if self.normalize else codes
    self.embedding = self.variable(COLLECTION, "embedding", initial_codebook)  # float[K, D]
    self.usage = self.variable(COLLECTION, "usage",
                               lambda: jnp.ones((self.codebook_size,), jnp.float32))
    self.sums = self.variable(COLLECTION, "sums", lambda: self.embedding.value)  # EMA usage * code
    self.initialized = self.variable(COLLECTION, "initialized",
                                     lambda: jnp.asarray(not self.data_init))

  @property
  def input_dim(self) -> int:
    return self.code_dim

  def __call__(self, z: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """z float[B, h, w, D] -> latents float32[B, h, w, D] (the codes, straight-through),
    codes int32[B, h, w], code_counts float32[B, K] (each example's code histogram),
    losses {commitment}, stats {restarted_codes}."""
    vectors = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
    if self.normalize:
      vectors = l2_normalize(vectors)
    codebook = self.embedding.value
    codes = nearest_codes(vectors, codebook)
    quantized = codebook[codes]
    commitment = jnp.mean(jnp.square(vectors - jax.lax.stop_gradient(quantized)))
    latents = vectors + jax.lax.stop_gradient(quantized - vectors)
    one_hot = jax.nn.one_hot(codes, self.codebook_size, dtype=jnp.float32)
    restarted = jnp.zeros((), jnp.float32)
    if train and self.is_mutable_collection(COLLECTION) and not self.is_initializing():
      restarted = self._update(jax.lax.stop_gradient(vectors), one_hot)
    batch = z.shape[0]
    return {"latents": latents.reshape(z.shape), "codes": codes.reshape(z.shape[:-1]),
            "code_counts": one_hot.reshape(batch, -1, self.codebook_size).sum(1),
            "losses": {"commitment": self.beta * commitment},
            "stats": {"restarted_codes": restarted}}

  def _update(self, vectors: jax.Array, one_hot: jax.Array) -> jax.Array:
    """One EMA step of the codes' usage and sums from the batch's assignments, then the dead
    codes' restart; returns how many codes were restarted."""
    mix = lambda old, new: self.decay * old + (1 - self.decay) * new
    usage = mix(self.usage.value, jnp.sum(one_hot, 0))
    sums = mix(self.sums.value,
               jnp.matmul(one_hot.T, vectors, precision=jax.lax.Precision.HIGHEST))
    total = jnp.sum(usage)
    smoothed = (usage + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
    codebook = sums / smoothed[:, None]
    dead = (usage < self.restart_threshold) | ~self.initialized.value
    picks = jax.random.choice(self.make_rng("dropout"), vectors.shape[0],
                              (self.codebook_size,), replace=vectors.shape[0] < self.codebook_size)
    fresh = vectors[picks]
    restart = lambda new, old: jnp.where(dead[:, None], new, old)
    codebook = restart(fresh, codebook)
    self.embedding.value = l2_normalize(codebook) if self.normalize else codebook
    self.sums.value = restart(fresh, sums)
    self.usage.value = jnp.where(dead, 1.0, usage)
    self.initialized.value = jnp.asarray(True)
    return jnp.sum(dead).astype(jnp.float32)

  def lookup(self, codes: jax.Array) -> jax.Array:
    """int32[...] -> float32[..., D]: the codes' vectors."""
    return self.embedding.value[codes]
