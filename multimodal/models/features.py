"""What encoders hand to fusion modules, and what fusion modules hand to heads."""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Features:
  """One modality's encoder output.

  Attributes:
    tokens: float[B, T, D] token features.
    mask: bool[B, T], True where a token is real (False for padding).
    pooled: float[B, D] one vector per example (the encoder's pooling), or None.
  """
  tokens: jax.Array
  mask: jax.Array
  pooled: jax.Array | None = None


def masked_mean(tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """float[B, T, D], bool[B, T] -> float[B, D]; examples with no valid token give zeros."""
  weights = mask.astype(tokens.dtype)[..., None]
  total = jnp.sum(tokens * weights, axis=1)
  count = jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  return total / count


def pooled_vector(features: Features) -> jax.Array:
  """float[B, D]: the encoder's pooled vector, or the mean of the real tokens without one."""
  return features.pooled if features.pooled is not None else masked_mean(features.tokens,
                                                                         features.mask)


@flax.struct.dataclass
class Fused:
  """A fusion module's output: what a head consumes.

  Attributes:
    tokens: float[B, T, D] fused tokens.
    mask: bool[B, T].
    pooled: float[B, D] one fused vector per example.
    logits: float32[B, C] for decision-level fusion (late, hybrid with several groups): the
      combined per-modality predictions, which the model returns instead of applying a head.
    modality_logits: {modality or group: float32[B, C]}, the predictions that were combined.
    modality_weights: float[B, M] how much each modality (in sorted name order) contributes,
      for modules that weigh them (gated, weighted_sum); rows sum to 1 over present ones.
  """
  tokens: jax.Array
  mask: jax.Array
  pooled: jax.Array
  logits: jax.Array | None = None
  modality_logits: dict[str, jax.Array] | None = None
  modality_weights: jax.Array | None = None


def is_present(mask: jax.Array) -> jax.Array:
  """bool[B, T] -> bool[B]: whether an example has any token of this modality."""
  return jnp.any(mask, axis=1)
