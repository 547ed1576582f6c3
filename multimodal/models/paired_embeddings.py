"""Two modalities embedded apart, for co-learning objectives that compare them (DCCA,
contrastive) as the whole objective: each modality's encoder, pooled, then a linear projection
to `embed_dim`; for a contrastive loss also L2-normalised, with a learned temperature and bias
(as `two_towers`). See `co_learning.py`, which also adds these losses beside another task."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from multimodal.models.co_learning import project
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
    contrastive: L2-normalise the embeddings and add the logits' temperature and bias (for
      the `contrastive` task); without it the embeddings stay as projected (DCCA).
    temperature_init, bias_init: as `two_towers` (SigLIP's log 10 and -10 by default).
    dtype: compute dtype name; parameters stay float32.
  """
  encoders: dict[str, Spec]
  embed_dim: int
  vocab_size: int | None = None
  contrastive: bool = False
  temperature_init: float = 2.302585  # log(10)
  bias_init: float = -10.0
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    """-> {modality: float32[B, embed_dim]} for both modalities (normalised only when
    `contrastive`: CCA is invariant to each view's scale), and with `contrastive` also
    "temperature" and "bias" float32[]."""
    if len(self.encoders) != 2:
      raise ValueError(f"paired_embeddings needs exactly two modalities; got "
                       f"{sorted(self.encoders)}.")
    dtype = compute_dtype(self.dtype)
    features = encode(self.encoders, batch, dtype, self.vocab_size, train=train)
    return project(self, features, self.embed_dim, dtype, self.contrastive,
                   self.temperature_init, self.bias_init)
