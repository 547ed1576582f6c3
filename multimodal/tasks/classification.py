"""Classification of a whole example into one of a few classes: NLVR's true / false over a
statement and an image pair, or any other labelled example (image, text or both)."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
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
    label_sigma: for ordered classes (offset bins, counts): the target is a Gaussian of this
      standard deviation (in classes) around the label, normalised over the classes, instead
      of all on the label (0: off).
    decode_window: for ordered classes scored with a tolerance (an offset within 40 ms of
      the truth counts as right): odd-length weights w, and the prediction is the class c
      that maximises sum_k w[k] p(c + k - len(w) // 2), the probability that the truth lies
      within the tolerance of c (`av_ops.tolerance_window` gives w for offset bins). Empty:
      the argmax.
  """

  def __init__(self, num_classes: int, tokenizer: str | None = None, label_key: str = "label",
               label_smoothing: float = 0.0, label_sigma: float = 0.0,
               decode_window: Sequence[float] = ()):
    if num_classes < 2:
      raise ValueError(f"Classification needs at least 2 classes; got num_classes={num_classes}.")
    if not 0.0 <= label_smoothing < 1.0:
      raise ValueError(f"label_smoothing must lie in [0, 1); got {label_smoothing}.")
    if label_sigma < 0:
      raise ValueError(f"label_sigma must be >= 0 (0: off); got {label_sigma}.")
    window = np.asarray(decode_window, np.float32)
    if window.size and (window.ndim != 1 or window.size % 2 == 0 or (window < 0).any()
                        or not window.any()):
      raise ValueError(f"decode_window must be an odd number of weights >= 0, not all zero; "
                       f"got {tuple(decode_window)}.")
    self.num_classes = num_classes
    self.tokenizer = tokenizer
    self.label_key = label_key
    self.label_smoothing = label_smoothing
    self.label_sigma = label_sigma
    self.decode_window = window

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
    targets = optax.smooth_labels(self.targets(batch), self.label_smoothing)
    loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
    return loss, {"accuracy": jnp.mean(self.predict(logits, batch)["correct"])}

  def targets(self, batch: Batch) -> jax.Array:
    """float32[B, C]: one-hot labels, or with `label_sigma` a Gaussian around each label."""
    labels = self.labels(batch)
    if not self.label_sigma:
      return jax.nn.one_hot(labels, self.num_classes)
    distance = jnp.arange(self.num_classes)[None, :] - labels[:, None]
    weights = jnp.exp(-0.5 * (distance / self.label_sigma) ** 2)
    return weights / jnp.sum(weights, axis=-1, keepdims=True)

  def predict(self, logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """-> prediction int32[B] (the argmax class, or with `decode_window` the class most likely
    within the tolerance), correct float32[B] (1 if it is the label)."""
    scores = logits
    if self.decode_window.size:
      probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
      window = jnp.asarray(self.decode_window[::-1])  # convolve flips it back
      scores = jax.vmap(lambda p: jnp.convolve(p, window, mode="same"))(probabilities)
    prediction = jnp.argmax(scores, axis=-1).astype(jnp.int32)
    return {"prediction": prediction,
            "correct": (prediction == self.labels(batch)).astype(jnp.float32)}
