"""Masked data modeling (BEiT-3's pretraining): cross-entropy on the masked text tokens and
mean squared error on the masked patches' normalised pixels (model `beit3_mdm`)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from multimodal.data import tokenizer as tokenizer_lib
from multimodal.tasks.registry import TASKS, Batch

MASK_PIECE = "<mask>"


def mask_id(tokenizer: str) -> int:
  """The id of the tokenizer's mask piece; an error if it has none."""
  sp = tokenizer_lib.load(tokenizer)
  piece = sp.piece_to_id(MASK_PIECE)
  if piece == sp.unk_id():
    raise ValueError(f"The tokenizer {tokenizer!r} has no {MASK_PIECE!r} piece for masked "
                     "language modeling (train one with --user_defined_symbols='<mask>'; the "
                     "packaged 'shapes_vl' has it).")
  return piece


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


@TASKS.register("masked_data_modeling")
class MaskedDataModelingTask:
  """Args:
    tokenizer: the text's sentencepiece model; it must have a `<mask>` piece.
    image_loss_weight: the weight of the masked-image loss beside the text's.
  """

  def __init__(self, tokenizer: str, image_loss_weight: float = 1.0):
    self.tokenizer = tokenizer
    self.image_loss_weight = image_loss_weight
    self.mask_id = mask_id(tokenizer)

  def model_kwargs(self) -> dict[str, Any]:
    return dict(vocab_size=tokenizer_lib.load(self.tokenizer).get_piece_size(),
                mask_id=self.mask_id)

  def loss(self, outputs: dict[str, jax.Array], batch: Batch
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-> (text loss + image_loss_weight * image loss, {"text_loss", "text_accuracy" (masked
    tokens predicted right), "image_loss"})."""
    del batch
    text_weights = outputs["text_weights"]
    text_loss = weighted_mean(optax.softmax_cross_entropy_with_integer_labels(
        outputs["text_logits"], outputs["text_targets"]), text_weights)
    squared = jnp.mean(jnp.square(outputs["image_predictions"] - outputs["image_targets"]),
                       axis=-1)
    image_loss = weighted_mean(squared, outputs["image_weights"])
    right = jnp.argmax(outputs["text_logits"], axis=-1) == outputs["text_targets"]
    return text_loss + self.image_loss_weight * image_loss, {
        "text_loss": text_loss, "image_loss": image_loss,
        "text_accuracy": weighted_mean(right.astype(jnp.float32), text_weights)}

  def predict(self, outputs: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
    """-> text_correct, text_masked float32[B] (masked tokens right, masked tokens), and
    image_error float32[B] (mean squared error over the masked patches)."""
    del batch
    right = jnp.argmax(outputs["text_logits"], axis=-1) == outputs["text_targets"]
    weights = outputs["text_weights"]
    squared = jnp.mean(jnp.square(outputs["image_predictions"] - outputs["image_targets"]),
                       axis=-1)
    image_weights = outputs["image_weights"]
    return {"text_correct": jnp.sum(right * weights, axis=1),
            "text_masked": jnp.sum(weights, axis=1),
            "image_error": jnp.sum(squared * image_weights, axis=1)
                           / jnp.maximum(jnp.sum(image_weights, axis=1), 1.0)}
