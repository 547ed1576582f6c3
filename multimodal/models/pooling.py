"""Ways to turn tokens into one vector per example."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.attention import MultiHeadAttention
from multimodal.models.features import masked_mean
from multimodal.models.transformer import Mlp, layer_norm


class MapPooling(nn.Module):
  """Multihead attention pooling: a learned probe attends over the tokens, then an MLP.

  key_bias: give the key projection a bias (see `MultiHeadAttention`).
  """
  num_heads: int
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32
  key_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """float[B, T, D], bool[B, T] -> float[B, D]."""
    batch, _, dim = x.shape
    probe = self.param("probe", p.init(nn.initializers.xavier_uniform(), None, None, "embed"),
                       (1, 1, dim))
    probe = jnp.broadcast_to(probe.astype(x.dtype), (batch, 1, dim))
    pooled = MultiHeadAttention(self.num_heads, self.dtype, self.key_bias, name="attention")(
        probe, x, mask=mask[:, None, :])
    pooled = pooled + Mlp(self.mlp_dim, dtype=self.dtype, name="mlp")(
        layer_norm("ln", self.dtype)(pooled), train=False)
    return pooled[:, 0]


def pool(kind: str, tokens: jax.Array, mask: jax.Array, map_pool: MapPooling | None = None
         ) -> jax.Array | None:
  """Pools float[B, T, D] tokens by `kind` in {cls, last, gap, map, none} -> float[B, D] or None.

  "last" takes the last position whatever the mask says, as SigLIP's text tower does (its texts
  are padded to a fixed length, so this is one slot for every example).
  """
  if kind == "cls":
    return tokens[:, 0]
  if kind == "last":
    return tokens[:, -1]
  if kind == "gap":
    return masked_mean(tokens, mask)
  if kind == "map":
    return map_pool(tokens, mask)
  if kind == "none":
    return None
  raise ValueError(f"Unknown pooling {kind!r}; use one of cls, last, gap, map, none.")
