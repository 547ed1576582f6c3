"""Deep CCA between two modalities' embeddings (`paired_embeddings`) as the objective."""
from __future__ import annotations

from typing import Any

import jax

from multimodal.losses import dcca
from multimodal.tasks.registry import TASKS, Batch


@TASKS.register("dcca")
class DccaTask:
  """Maximises the total canonical correlation of the two embeddings over each batch.

  Args:
    modalities: the two output keys compared (e.g. ("audio", "video")).
    ridge: added to each view's covariance (see `losses/dcca.py`).
    num_components: the canonical correlations summed (None: all, min of the widths).
  """

  def __init__(self, modalities: tuple[str, str], ridge: float = 1e-3,
               num_components: int | None = None):
    if len(modalities) != 2:
      raise ValueError(f"dcca compares two modalities; got {modalities}.")
    self.modalities = tuple(modalities)
    self.ridge = ridge
    self.num_components = num_components

  def model_kwargs(self) -> dict[str, Any]:
    return {}

  def loss(self, outputs: dict[str, jax.Array], batch: Batch
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-> (minus the batch's total correlation, {"total_correlation"})."""
    del batch
    a, b = (outputs[m] for m in self.modalities)
    loss = dcca.dcca_loss(a, b, ridge=self.ridge, num_components=self.num_components)
    return loss, {"total_correlation": -loss}

  def predict(self, outputs: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
    """-> {"{modality}_embedding": float32[B, E]} for both."""
    del batch
    return {f"{m}_embedding": outputs[m] for m in self.modalities}
