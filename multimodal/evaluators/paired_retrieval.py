"""Cross-modal retrieval between the two halves of one-to-one pairs (an audio track and its
video, a sensor window and its clip): recall at k in both directions over a whole split."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from multimodal.evaluators import common, retrieval_metrics
from multimodal.evaluators.registry import EVALUATORS, EvalContext


@EVALUATORS.register("paired_retrieval")
class PairedRetrievalEvaluator(common.SplitEvaluator):
  """Reports `{x}_to_{y}/R@k` and `{y}_to_{x}/R@k` (each example's own partner among the k
  most similar of the split; ties count against it, see `retrieval_metrics`), `chance/R@k`
  (k / N) and `num_examples`, for a task that predicts `{x}_embedding` and `{y}_embedding`
  (L2-normalised; the `contrastive` task with `paired_embeddings`).

  Args (besides the split evaluator's):
    modalities: (x, y).
    ks: the k of R@k.
  """

  def __init__(self, context: EvalContext, name: str, split: str, pp: str, batch_size: int,
               modalities: tuple[str, str], every_steps: int = 0,
               max_examples: int | None = None, ks: Sequence[int] = (1, 5, 10)):
    super().__init__(context, name, split, pp, batch_size, every_steps, max_examples)
    if len(modalities) != 2:
      raise ValueError(f"{name}: retrieval needs two modalities; got {modalities}.")
    self.modalities = tuple(modalities)
    self.ks = tuple(ks)

  def run(self, variables: Any, step: int) -> dict[str, float]:
    embeddings = {m: [] for m in self.modalities}
    for batch, predictions in common.predicted_batches(
        self.context, variables, split=self.split, pp=self.pp, batch_size=self.batch_size):
      valid = np.flatnonzero(batch["_valid"])
      for m in self.modalities:
        embeddings[m].append(predictions[f"{m}_embedding"][valid])
    x, y = (np.concatenate(embeddings[m]) for m in self.modalities)
    return paired_recall(x, y, self.modalities, self.ks)


def paired_recall(x: np.ndarray, y: np.ndarray, names: tuple[str, str],
                  ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """x float[N, D], y float[N, D] (row i of each is one pair) -> recall at k both ways,
  named `{x}_to_{y}/R@k`, `{y}_to_{x}/R@k`, with `chance/R@k` and `num_examples`."""
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"paired retrieval needs one {names[1]} per {names[0]}; got "
                     f"{x.shape[0]} and {y.shape[0]}.")
  recall = retrieval_metrics.recall_at_k(x, y, np.arange(len(x)), ks)
  metrics = {"num_examples": float(len(x))}
  for k in ks:
    metrics[f"{names[0]}_to_{names[1]}/R@{k}"] = recall[f"image_to_text/R@{k}"]
    metrics[f"{names[1]}_to_{names[0]}/R@{k}"] = recall[f"text_to_image/R@{k}"]
    metrics[f"chance/R@{k}"] = min(k / len(x), 1.0)
  return metrics
