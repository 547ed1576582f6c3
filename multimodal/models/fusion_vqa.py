"""VQA models: image and text encoders -> a fusion module -> an answer head."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import missing_modalities
from multimodal.models.fusion import FUSION
from multimodal.models.heads import HEADS
from multimodal.models.features import Features, Fused
from multimodal.models.registry import ENCODERS, MODELS

Spec = dict[str, Any]


def compute_dtype(name: str) -> jnp.dtype:
  if name not in ("float32", "bfloat16"):
    raise ValueError(f"Unknown compute dtype {name!r}; use 'float32' or 'bfloat16'.")
  return jnp.dtype(name)


@MODELS.register("fusion_vqa")
class FusionVqa(nn.Module):
  """Answers a question about an image with logits over the answer vocabulary.

  Attributes:
    image, text, fusion, head: `{'type': name, ...settings}` specs resolved in the registries.
    num_answers: size of the answer vocabulary (filled in from the data config).
    vocab_size: size of the tokenizer's vocabulary (filled in from the data config).
    dtype: compute dtype name; parameters stay float32.
    modality_dropout: in training, the probability that an example loses one modality
      (image or text, chosen uniformly), as if it were missing.
  Batch keys: image float[B, H, W, 3], question_tokens int32[B, T], question_mask [B, T];
  optional image_missing, text_missing bool[B]: remove that modality in those examples.
  """
  image: Spec
  text: Spec
  fusion: Spec
  head: Spec
  num_answers: int
  vocab_size: int
  dtype: str = "float32"
  modality_dropout: float = 0.0

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> jax.Array:
    """-> logits float32[B, num_answers]."""
    dtype = compute_dtype(self.dtype)
    features = {
        "image": ENCODERS.build(self.image, dtype=dtype, name="image_encoder")(
            batch["image"], train=train),
        "text": ENCODERS.build(self.text, vocab_size=self.vocab_size, dtype=dtype,
                               name="text_encoder")(
            batch["question_tokens"], batch["question_mask"], train=train),
    }
    features = missing_modalities.remove(features, missing_modalities.from_batch(batch))
    if train and self.modality_dropout > 0:
      features = missing_modalities.remove(features, missing_modalities.sample_dropped(
          self.make_rng("dropout"), list(features), batch["image"].shape[0],
          self.modality_dropout))
    return fuse_and_predict(self.fusion, self.head, self.num_answers, dtype, features,
                            train=train)


def fuse_and_predict(fusion: Spec, head: Spec, num_classes: int, dtype: jnp.dtype,
                     features: dict[str, Features], *, train: bool) -> jax.Array:
  """The fusion module over the features, then the head. Decision-level modules (late, and
  hybrid with several groups) get the head spec too and return their combined logits, which
  are used instead. Call inside a compact method: the params `fusion` and `head` belong to the
  caller. -> logits float32[B, num_classes]."""
  extra = {}
  if FUSION.get(dict(fusion)["type"]).decision_level:
    extra = dict(head=head, num_classes=num_classes)
  fused = FUSION.build(fusion, dtype=dtype, name="fusion", **extra)(features, train=train)
  if fused.logits is not None:
    return fused.logits
  return HEADS.build(head, num_classes=num_classes, dtype=dtype, name="head")(
      fused, train=train)


@MODELS.register("text_only_vqa")
class TextOnlyVqa(nn.Module):
  """The blind baseline: answers from the question alone (what a text prior can reach)."""
  text: Spec
  head: Spec
  num_answers: int
  vocab_size: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> jax.Array:
    """-> logits float32[B, num_answers]."""
    dtype = compute_dtype(self.dtype)
    text = ENCODERS.build(self.text, vocab_size=self.vocab_size, dtype=dtype,
                          name="text_encoder")(
        batch["question_tokens"], batch["question_mask"], train=train)
    fused = Fused(tokens=text.tokens, mask=text.mask, pooled=text.pooled)
    return HEADS.build(self.head, num_classes=self.num_answers, dtype=dtype, name="head")(
        fused, train=train)
