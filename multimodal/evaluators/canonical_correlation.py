"""How correlated two modalities' embeddings are on held-out pairs (DCCA's measure), beside
random projections of the same inputs."""
from __future__ import annotations

from typing import Any

import numpy as np

from multimodal.evaluators import common
from multimodal.evaluators.registry import EVALUATORS, EvalContext
from multimodal.losses import dcca


def random_projection(inputs: np.ndarray, width: int, seed: int) -> np.ndarray:
  """float[N, ...] -> float32[N, width]: the flattened inputs times a fixed Gaussian matrix."""
  flat = inputs.reshape(len(inputs), -1).astype(np.float32)
  matrix = np.random.default_rng(seed).standard_normal((flat.shape[1], width), np.float32)
  return flat @ (matrix / np.sqrt(flat.shape[1]))


@EVALUATORS.register("canonical_correlation")
class CanonicalCorrelationEvaluator(common.SplitEvaluator):
  """Reports `total_correlation` (the sum of the top `num_components` canonical
  correlations) and `correlation/{i}` of the two modalities' embeddings over the split, and
  `random_projection/total_correlation`: the same for random linear projections of the two
  inputs (pp's output) to the embedding width.

  Args (besides the split evaluator's):
    modalities: the two modalities; predictions `{m}_embedding` and model inputs `m`.
    ridge, num_components: as `losses.dcca.canonical_correlations`.
  """

  def __init__(self, context: EvalContext, name: str, split: str, pp: str, batch_size: int,
               modalities: tuple[str, str], every_steps: int = 0,
               max_examples: int | None = None, ridge: float = 1e-3,
               num_components: int | None = None):
    super().__init__(context, name, split, pp, batch_size, every_steps, max_examples)
    if len(modalities) != 2:
      raise ValueError(f"{name}: canonical correlation needs two modalities; got "
                       f"{modalities}.")
    self.modalities = tuple(modalities)
    self.ridge, self.num_components = ridge, num_components

  def run(self, variables: Any, step: int) -> dict[str, float]:
    embeddings = {m: [] for m in self.modalities}
    inputs = {m: [] for m in self.modalities}
    for batch, predictions in common.predicted_batches(
        self.context, variables, split=self.split, pp=self.pp, batch_size=self.batch_size):
      valid = np.flatnonzero(batch["_valid"])
      for m in self.modalities:
        embeddings[m].append(predictions[f"{m}_embedding"][valid])
        inputs[m].append(batch[m][valid])
    a, b = (np.concatenate(embeddings[m]) for m in self.modalities)
    kwargs = dict(ridge=self.ridge, num_components=self.num_components)
    correlations = np.asarray(dcca.canonical_correlations(a, b, **kwargs))
    metrics = {"total_correlation": float(correlations.sum()), "num_examples": float(len(a))}
    metrics.update({f"correlation/{i}": float(c) for i, c in enumerate(correlations)})
    projected = [random_projection(np.concatenate(inputs[m]), a.shape[1], seed)
                 for seed, m in enumerate(self.modalities)]
    metrics["random_projection/total_correlation"] = float(
        dcca.total_correlation(*projected, **kwargs))
    return metrics
