"""Visual question answering as classification over a closed answer vocabulary."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from multimodal.data import answer_vocab, tokenizer
from multimodal.tasks.registry import TASKS, Batch


@TASKS.register("vqa")
class VqaTask:
  """Answer classification with softmax cross-entropy or sigmoid BCE on soft scores.

  Args:
    answers: answer vocabulary spec (a built-in name such as "shapes_vqa" or a text file).
    tokenizer: sentencepiece model (a packaged name such as "shapes" or a path).
    loss: "softmax" (cross-entropy on `answer_index`, for one answer per question) or
      "sigmoid" (BCE on `answer_scores`, for several annotators' answers, as in VQAv2).
  Batch keys: answer_index int32[B] (-1: no answer in the vocabulary, ignored by the softmax
  loss), answer_scores float32[B, A] (VQA soft scores, min(1, annotators / 3)).
  """

  def __init__(self, answers: str, tokenizer: str, loss: str = "softmax"):
    if loss not in ("softmax", "sigmoid"):
      raise ValueError(f"Unknown VQA loss {loss!r}; use 'softmax' or 'sigmoid'.")
    self.answers = answer_vocab.load_answer_vocab(answers)
    self.tokenizer = tokenizer
    self.loss_type = loss

  def model_kwargs(self) -> dict[str, Any]:
    return dict(num_answers=len(self.answers),
                vocab_size=tokenizer.load(self.tokenizer).get_piece_size())

  def loss(self, logits: jax.Array, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """logits: float32[B, A] -> (loss, {"accuracy": training-batch VQA accuracy})."""
    if self.loss_type == "softmax":
      labels = batch["answer_index"]
      valid = (labels >= 0).astype(jnp.float32)
      per_example = optax.softmax_cross_entropy_with_integer_labels(
          logits, jnp.maximum(labels, 0))
      loss = jnp.sum(per_example * valid) / jnp.maximum(jnp.sum(valid), 1.0)
    else:
      # Summed over answers, averaged over examples (as VQAv2 codebases do).
      loss = jnp.mean(jnp.sum(optax.sigmoid_binary_cross_entropy(
          logits, batch["answer_scores"]), axis=-1))
    return loss, {"accuracy": jnp.mean(self.predict(logits, batch)["score"])}

  def predict(self, logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """-> answer int32[B] (index into `answers`), score float32[B] (its VQA accuracy)."""
    answer = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    score = jnp.take_along_axis(batch["answer_scores"], answer[:, None], axis=-1)[:, 0]
    return {"answer": answer, "score": score}
