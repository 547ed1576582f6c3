"""Classification of a whole example into one of a few classes: NLVR's true / false over a
statement and an image pair, or any other labelled example (image, text or both)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from multimodal.data import tokenizer
from multimodal.tasks.registry import TASKS, Batch


@TASKS.register("classification")
class ClassificationTask:
  """Softmax cross-entropy over `num_classes` on the integer (or bool) label `label_key`.

  Args:
    num_classes: the number of classes (2 for NLVR: 0 false, 1 true).
    tokenizer: the text encoder's sentencepiece model (a packaged name or a path), or None
      for models without text.
    label_key: the batch key of the labels int[B] or bool[B].
    label_smoothing: the share of the target spread over the other classes.
  """

  def __init__(self, num_classes: int, tokenizer: str | None = None, label_key: str = "label",
               label_smoothing: float = 0.0):
    if num_classes < 2:
      raise ValueError(f"Classification needs at least 2 classes; got num_classes={num_classes}.")
    if not 0.0 <= label_smoothing < 1.0:
      raise ValueError(f"label_smoothing must lie in [0, 1); got {label_smoothing}.")
    self.num_classes = num_classes
    self.tokenizer = tokenizer
    self.label_key = label_key
    self.label_smoothing = label_smoothing

  def model_kwargs(self) -> dict[str, Any]:
    kwargs = dict(num_classes=self.num_classes)
    if self.tokenizer is not None:
      kwargs["vocab_size"] = tokenizer.load(self.tokenizer).get_piece_size()
    return kwargs

  def labels(self, batch: Batch) -> jax.Array:
    if self.label_key not in batch:
      raise KeyError(f"The classification task reads labels from batch[{self.label_key!r}]; "
                     f"the batch has {sorted(batch)} (keep the label in the pp spec).")
    return batch[self.label_key].astype(jnp.int32)

  def loss(self, logits: jax.Array, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """logits float32[B, C] -> (mean cross-entropy, {"accuracy"} of the training batch)."""
    labels = self.labels(batch)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, self.num_classes),
                                  self.label_smoothing)
    loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
    return loss, {"accuracy": jnp.mean(self.predict(logits, batch)["correct"])}

  def predict(self, logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """-> prediction int32[B] (the argmax class), correct float32[B] (1 if it is the label)."""
    prediction = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return {"prediction": prediction,
            "correct": (prediction == self.labels(batch)).astype(jnp.float32)}
