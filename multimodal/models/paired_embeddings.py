"""Two modalities embedded apart, for co-learning objectives that compare them (DCCA,
contrastive): each modality's encoder, pooled, then a linear projection to `embed_dim`."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from multimodal.models import partitioning as p
from multimodal.models.fusion_classifier import encode
from multimodal.models.fusion_vqa import compute_dtype
from multimodal.models.registry import MODELS

Spec = dict[str, Any]


@MODELS.register("paired_embeddings")
class PairedEmbeddings(nn.Module):
  """Attributes:
    encoders: {modality: encoder spec}, exactly two; each reads the batch key of its name
      (text: text_tokens, text_mask), as in `fusion_classifier`.
    embed_dim: the width of each modality's embedding.
    vocab_size: the tokenizer's vocabulary size (only with a text modality).
    dtype: compute dtype name; parameters stay float32.
  """
  encoders: dict[str, Spec]
  embed_dim: int
  vocab_size: int | None = None
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    """-> {modality: float32[B, embed_dim]} for both modalities (not normalised: CCA is
    invariant to each view's scale)."""
    if len(self.encoders) != 2:
      raise ValueError(f"paired_embeddings needs exactly two modalities; got "
                       f"{sorted(self.encoders)}.")
    dtype = compute_dtype(self.dtype)
    features = encode(self.encoders, batch, dtype, self.vocab_size, train=train)
    return {name: nn.Dense(self.embed_dim, dtype=dtype, name=f"{name}_projection",
                           kernel_init=p.init(nn.initializers.lecun_normal(), "embed", None),
                           bias_init=p.init(nn.initializers.zeros, None))(f.pooled)
            .astype("float32")
            for name, f in features.items()}
