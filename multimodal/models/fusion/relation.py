"""Relation-network fusion (Santoro et al. 2017, "A simple neural network module for relational
reasoning"): an MLP reads every pair of context tokens (objects) together with the query's
vector (the question), and the pairs' outputs are summed.

    pooled = LayerNorm(f( sum_{i,j} g([o_i, o_j, q, [i == j]]) / T ))

over the real (unmasked) pairs, T the context's length with its padding (a fixed scale).

The sum (not a mean, not a softmax) is what lets the module count: a pair term that fires for
"a red object" adds up once per red object, so "more circles in the left image" is a
comparison of two sums. Pairs read relations ("a blue object above a green one"), and the
diagonal pairs (i == j, flagged) read single objects. Meant for a few object tokens (a
detector's regions, the scene parser's readings): the cost grows with the square of the
context length.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.features import Features, Fused, pooled_vector
from multimodal.models.fusion.base import FusionModule, require
from multimodal.models.fusion.registry import FUSION
from multimodal.models.transformer import dense, layer_norm


@FUSION.register("relation_network")
class RelationNetwork(FusionModule):
  """g: `depth` layers of `mlp_dim` units (ReLU) over each pair of context tokens with the query
  vector; f: Dense(mlp_dim) - ReLU - Dense(width) over the pairs' sum, then a LayerNorm.

  Attributes:
    query: the modality that conditions every pair (its pooled vector; e.g. "text").
    context: the modality whose tokens are paired (e.g. "image" holding object tokens).
    conditioning: how the query enters g: "concat" (in its first layer's input, as the paper
      has it) or "film" (also scaling and shifting every layer's features, FiLM-style).
  Output tokens: per context token i, the sum over j of g(o_i, o_j, q) ([B, Tc, mlp_dim],
  masked as the context); pooled: f of their sum, [B, width].
  """
  query: str = "text"
  context: str = "image"
  conditioning: str = "concat"

  def film(self, h: jax.Array, q: jax.Array, layer: int) -> jax.Array:
    """h float[B, Tc, Tc, H] scaled and shifted per feature by the query: h * (1 + gamma(q))
    + beta(q) (FiLM, Perez et al. 2018; gamma and beta start at zero)."""
    gamma_beta = nn.Dense(2 * self.mlp_dim, dtype=self.dtype, name=f"g{layer}_film",
                          kernel_init=p.init(nn.initializers.zeros, None, "mlp"),
                          bias_init=p.init(nn.initializers.zeros, "mlp"))(q)
    gamma, beta = jnp.split(gamma_beta[:, None, None], 2, axis=-1)
    return h * (1 + gamma) + beta

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[query]: [B, Tq, Dq]; features[context]: [B, Tc, Dc] -> Fused(tokens
    [B, Tc, mlp_dim], pooled [B, width])."""
    require(features, (self.query, self.context), "relation_network")
    if self.depth < 1:
      raise ValueError(f"relation_network needs depth >= 1 (layers of g), got {self.depth}.")
    if self.conditioning not in ("concat", "film"):
      raise ValueError(f"Unknown relation_network conditioning {self.conditioning!r}; use "
                       "'concat' or 'film'.")
    objects, q = features[self.context], pooled_vector(features[self.query])
    mask, o = objects.mask.astype(bool), objects.tokens
    # g's first layer on the concatenation [o_i, o_j, q, i == j], computed per part.
    first = lambda x, name: dense(self.mlp_dim, None, "mlp", name, self.dtype)(x)
    left, right, cond = first(o, "g0_first"), first(o, "g0_second"), first(q, "g0_query")
    same = self.param("g0_same_object", p.init(nn.initializers.zeros, "mlp"), (self.mlp_dim,))
    tokens = objects.tokens.shape[1]
    diagonal = jnp.eye(tokens, dtype=left.dtype)[None, :, :, None] * same.astype(left.dtype)
    h = left[:, :, None] + right[:, None, :] + cond[:, None, None] + diagonal
    film = self.conditioning == "film"
    h = nn.relu(self.film(h, q, 0) if film else h)
    for i in range(1, self.depth):
      h = dense(self.mlp_dim, None, "mlp", f"g{i}", self.dtype)(h)
      h = nn.relu(self.film(h, q, i) if film else h)
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    pairs = (mask[:, :, None] & mask[:, None, :]).astype(h.dtype)[..., None]  # [B, Tc, Tc, 1]
    # Sums scaled by the fixed 1 / Tc (not a mean over the real tokens, which would lose
    # the count), to keep f's inputs in range however long the context is.
    per_object = jnp.sum(h * pairs, axis=2) / tokens  # [B, Tc, mlp_dim]
    total = jnp.sum(per_object, axis=1)
    x = nn.relu(dense(self.mlp_dim, None, "mlp", "f0", self.dtype)(total))
    x = dense(self.width, "mlp", "embed", "f1", self.dtype)(x)
    pooled = layer_norm("ln_final", self.dtype)(x)
    return Fused(tokens=per_object, mask=mask, pooled=pooled)
