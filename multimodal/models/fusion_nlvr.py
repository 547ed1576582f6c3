"""NLVR with any fusion module: both images through one image encoder, their tokens side by side
as one `image` modality (a learned embedding tells the left image's tokens from the right's),
the statement through the text encoder, then the fusion module and a head over true / false.

`pair="joint"`: the pair is one sequence, so that every module of the fusion library works on
it unchanged (cross-attention lets each statement token attend to both images at once).
`pair="separate"`: the statement with each image in its own pass of the same fusion module,
the two pooled vectors concatenated for the head, as BEiT-3's release does
(`beit3_models.Beit3Nlvr`): each pass is a one-image question, so a fusion module trained on
VQA carries over as it is.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.features import Features, Fused
from multimodal.models.fusion.registry import FUSION
from multimodal.models.fusion_vqa import compute_dtype, fuse_and_predict
from multimodal.models.heads.registry import HEADS
from multimodal.models.registry import ENCODERS, MODELS

Spec = dict[str, Any]


def image_pair(left: Features, right: Features, side_embedding: jax.Array) -> Features:
  """Two images' features [B, N, D] -> one modality of 2N tokens, the left image's first,
  each with its side's embedding (float[2, D]) added; pooled: the mean of the two."""
  tokens = jnp.concatenate([left.tokens + side_embedding[0].astype(left.tokens.dtype),
                            right.tokens + side_embedding[1].astype(right.tokens.dtype)], axis=1)
  pooled = None if left.pooled is None else (left.pooled + right.pooled) / 2
  return Features(tokens=tokens, mask=jnp.concatenate([left.mask, right.mask], axis=1),
                  pooled=pooled)


@MODELS.register("fusion_nlvr")
class FusionNlvr(nn.Module):
  """Attributes:
    image, text, fusion, head: `{'type': name, ...settings}` specs, as in `fusion_vqa`.
    num_classes: 2 (false, true), from the task.
    vocab_size: the tokenizer's vocabulary size (from the task).
    pair: "joint" (both images as one modality) or "separate" (one fusion pass per image).
    dtype: compute dtype name; parameters stay float32.
  Batch keys: left_image, right_image float[B, H, W, 3]; text_tokens int32[B, T]; text_mask
  bool[B, T].
  """
  image: Spec
  text: Spec
  fusion: Spec
  head: Spec
  num_classes: int
  vocab_size: int
  pair: str = "joint"
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> jax.Array:
    """-> logits float32[B, num_classes]."""
    dtype = compute_dtype(self.dtype)
    image_encoder = ENCODERS.build(self.image, dtype=dtype, name="image_encoder")
    left = image_encoder(batch["left_image"], train=train)
    right = image_encoder(batch["right_image"], train=train)
    text = ENCODERS.build(self.text, vocab_size=self.vocab_size, dtype=dtype,
                          name="text_encoder")(batch["text_tokens"], batch["text_mask"],
                                               train=train)
    if self.pair == "separate":
      if FUSION.get(dict(self.fusion)["type"]).decision_level:
        raise ValueError(f"pair='separate' needs a fusion module with a fused vector; "
                         f"{dict(self.fusion)['type']!r} combines decisions (use pair='joint').")
      fusion = FUSION.build(self.fusion, dtype=dtype, name="fusion")
      passes = [fusion({"image": image, "text": text}, train=train) for image in (left, right)]
      fused = Fused(tokens=jnp.concatenate([f.tokens for f in passes], axis=1),
                    mask=jnp.concatenate([f.mask for f in passes], axis=1),
                    pooled=jnp.concatenate([f.pooled for f in passes], axis=-1))
      return HEADS.build(self.head, num_classes=self.num_classes, dtype=dtype, name="head")(
          fused, train=train)
    if self.pair != "joint":
      raise ValueError(f"Unknown pair mode {self.pair!r}; use 'joint' or 'separate'.")
    side = self.param("side_embedding", p.init(nn.initializers.normal(0.02), None, "embed"),
                      (2, left.tokens.shape[-1]))
    features = {"image": image_pair(left, right, side), "text": text}
    return fuse_and_predict(self.fusion, self.head, self.num_classes, dtype, features,
                            train=train)
