"""Position embeddings."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from multimodal.models import partitioning as p


def sincos_2d(height: int, width: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sin-cos embeddings (MoCo v3 / big_vision): float32[height * width, dim]."""
  if dim % 4:
    raise ValueError(f"2-D sin-cos position embeddings need a width divisible by 4, got {dim}.")
  y, x = np.mgrid[:height, :width]
  omega = 1.0 / temperature ** (np.arange(dim // 4) / (dim // 4 - 1 or 1))
  y = y.reshape(-1)[:, None] * omega[None, :]
  x = x.reshape(-1)[:, None] * omega[None, :]
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype(np.float32)


class AddPositionEmbedding(nn.Module):
  """Adds learned (`kind="learn"`) or fixed 2-D sin-cos (`kind="sincos2d"`) embeddings.

  max_len: rows of the learned table, of which a sequence uses the first T (a table sized for
    the longest text, as in converted checkpoints); None: exactly the sequence's length.
  """
  kind: str = "learn"
  grid: tuple[int, int] | None = None  # needed for sincos2d
  max_len: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, T, D] -> float[B, T, D]."""
    _, length, dim = x.shape
    if self.kind == "learn":
      rows = length if self.max_len is None else self.max_len
      if length > rows:
        raise ValueError(f"A sequence of {length} tokens is longer than the {rows} learned "
                         "position embeddings (max_len).")
      emb = self.param("embedding", p.init(nn.initializers.normal(0.02), "pos", "embed"),
                       (rows, dim))[:length]
    elif self.kind == "sincos2d":
      if self.grid is None or self.grid[0] * self.grid[1] != length:
        raise ValueError(f"sincos2d needs a grid matching {length} tokens, got {self.grid}.")
      emb = jnp.asarray(sincos_2d(*self.grid, dim))
    else:
      raise ValueError(f"Unknown position embedding {self.kind!r}; use 'learn' or 'sincos2d'.")
    return x + emb[None].astype(x.dtype)
