"""Zero-shot classification with a two-towers model: each image takes the class whose text
embedding is nearest to its image embedding; no classifier is trained."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
import tensorflow as tf

from multimodal.data import pp as pp_lib
from multimodal.evaluators import common
from multimodal.evaluators.registry import EVALUATORS, EvalContext


@EVALUATORS.register("zero_shot_classification")
class ZeroShotClassificationEvaluator(common.SplitEvaluator):
  """Reports `accuracy` (top-1), `accuracy_top5` and `num_examples`, for a task that predicts
  `image_embedding` and `text_embedding` (task `contrastive`).

  Args:
    split: the TFDS split.
    pp: preprocessing spec producing `image` and `label` int32[] (an index into
      `class_texts`; a negative label leaves the example out).
    class_texts: one text per class (e.g. "a small red circle"), embedded once per run.
    text_pp: preprocessing spec turning a feature `text` into the text tower's inputs
      (`text_tokens`, `text_mask`), as in training.
    batch_size: global evaluation batch size.
    every_steps: how often the trainer runs it (0: only at the end).
    max_examples: evaluate on the first N examples only (None: all).
  """

  def __init__(self, context: EvalContext, name: str, split: str, pp: str,
               class_texts: Sequence[str], text_pp: str, batch_size: int,
               every_steps: int = 0, max_examples: int | None = None):
    if len(class_texts) < 2:
      raise ValueError(f"Zero-shot classification needs at least 2 classes, got {class_texts}.")
    super().__init__(context, name, split, pp, batch_size, every_steps, max_examples)
    self.class_texts = list(class_texts)
    self.text_pp = pp_lib.parse(text_pp)

  def class_embeddings(self, variables: Any) -> np.ndarray:
    """float32[C, E]: the class texts' embeddings (padded to a multiple of the devices for
    the model, then cut back)."""
    inputs = self.text_pp({"text": tf.constant(self.class_texts)})
    inputs = {k: inputs[k].numpy() for k in ("text_tokens", "text_mask")}
    rows = -(-len(self.class_texts) // jax.device_count()) * jax.device_count()
    padded = {k: np.concatenate([v, np.repeat(v[:1], rows - len(v), axis=0)])
              for k, v in inputs.items()}
    embeddings = common.predict_host_rows(self.context, variables, padded)["text_embedding"]
    return embeddings[:len(self.class_texts)]

  def run(self, variables: Any, step: int) -> dict[str, float]:
    del step
    classes = self.class_embeddings(variables)
    k = min(5, len(self.class_texts))
    hits, hits_top_k = [], []
    for batch, predictions in common.predicted_batches(
        self.context, variables, split=self.split, pp=self.pp, batch_size=self.batch_size):
      counted = batch["_valid"] & (batch["label"] >= 0)
      scores = predictions["image_embedding"] @ classes.T  # [b, C]
      # Rank of the true class; ties count against it (a constant model scores nothing).
      true_score = np.take_along_axis(scores, np.maximum(batch["label"], 0)[:, None], axis=1)
      rank = (scores > true_score).sum(axis=1) + (scores == true_score).sum(axis=1) - 1
      hits.append((rank < 1)[counted])
      hits_top_k.append((rank < k)[counted])
    hits = common.allgather_rows(np.concatenate(hits))
    hits_top_k = common.allgather_rows(np.concatenate(hits_top_k))
    if not len(hits):
      raise ValueError(f"No example of {self.split!r} has a class label (label >= 0).")
    return {"accuracy": float(hits.mean()), f"accuracy_top{k}": float(hits_top_k.mean()),
            "num_examples": float(len(hits))}
