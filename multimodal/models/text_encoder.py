"""Transformer text encoder over sentencepiece tokens, with padding masks."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models import variants
from multimodal.models.features import Features
from multimodal.models.pooling import MapPooling, pool
from multimodal.models.posemb import AddPositionEmbedding
from multimodal.models.registry import ENCODERS
from multimodal.models.transformer import Encoder


@ENCODERS.register("text_encoder")
class TextEncoder(nn.Module):
  """Token ids -> embeddings + learned positions -> pre-LN transformer -> Features.

  Attributes:
    vocab_size: rows of the token embedding (the tokenizer's vocabulary size).
    pool_type: "cls" (the first token, which the `tok` op makes BOS), "last" (the last
      position, as SigLIP), "gap", "map", "none".
    max_len: rows of the learned position table (None: the input's length; see
      `AddPositionEmbedding`).
    remat, remat_policy, scan_layers: how the transformer blocks run (see `Encoder`).
    key_bias: give the attentions' key projections a bias (SigLIP checkpoints have one).
  """
  vocab_size: int
  variant: str | None = "tiny"
  width: int | None = None
  depth: int | None = None
  mlp_dim: int | None = None
  num_heads: int | None = None
  pool_type: str = "gap"
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  scan_layers: bool = False
  max_len: int | None = None
  key_bias: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array, *, train: bool) -> Features:
    """tokens: int32[B, T]; mask: bool[B, T] -> Features(float[B, T, D], mask, float[B, D])."""
    size = variants.resolve(self.variant, width=self.width, depth=self.depth,
                            mlp_dim=self.mlp_dim, num_heads=self.num_heads)
    mask = mask.astype(bool)
    x = nn.Embed(self.vocab_size, size["width"], dtype=self.dtype, name="embedding",
                 embedding_init=p.init(nn.initializers.normal(0.02), "vocab", "embed"))(tokens)
    x = AddPositionEmbedding("learn", max_len=self.max_len, name="posemb")(x)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    x = Encoder(size["depth"], size["num_heads"], size["mlp_dim"], self.dropout, self.dtype,
                remat=self.remat, remat_policy=self.remat_policy, scan_layers=self.scan_layers,
                key_bias=self.key_bias, name="encoder")(x, mask, train=train)
    map_pool = (MapPooling(size["num_heads"], size["mlp_dim"], self.dtype, self.key_bias,
                           name="map")
                if self.pool_type == "map" else None)
    return Features(tokens=x, mask=mask, pooled=pool(self.pool_type, x, mask, map_pool))
