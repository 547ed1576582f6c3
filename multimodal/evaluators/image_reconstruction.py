"""How well an image tokenizer reconstructs a split, and how much of its codebook it uses."""
from __future__ import annotations

from typing import Any

import numpy as np

from multimodal.evaluators import common
from multimodal.evaluators.registry import EVALUATORS
from multimodal.tasks.image_autoencoder import codebook_statistics

PIXEL_RANGE = 2.0  # images in [-1, 1]


def summarize(recon_mse: np.ndarray, code_counts: np.ndarray | None) -> dict[str, float]:
  """Per-image mean squared errors float[N] and the split's code counts float[K] (None for
  continuous latents) -> recon_mse (mean), psnr (mean over the images, in dB, for pixels in
  [-1, 1]), num_images, and perplexity and codebook_usage of the split's codes."""
  if not len(recon_mse):
    raise ValueError("No images were evaluated.")
  psnr = 10.0 * np.log10(PIXEL_RANGE ** 2 / np.maximum(recon_mse, 1e-10))
  metrics = {"recon_mse": float(np.mean(recon_mse)), "psnr": float(np.mean(psnr)),
             "num_images": float(len(recon_mse))}
  if code_counts is not None:
    metrics.update({k: float(v) for k, v in codebook_statistics(code_counts).items()})
  return metrics


@EVALUATORS.register("image_reconstruction")
class ImageReconstructionEvaluator(common.SplitEvaluator):
  """Reports recon_mse, psnr and num_images over the split and, for a discrete tokenizer,
  the perplexity and codebook_usage of all its images' codes together (the task's
  `recon_mse` and `code_counts` predictions)."""

  def run(self, params: Any, step: int) -> dict[str, float]:
    del step
    errors, counts = [], None
    for batch, predictions in common.predicted_batches(
        self.context, params, split=self.split, pp=self.pp, batch_size=self.batch_size):
      valid = batch["_valid"]
      errors.append(predictions["recon_mse"][valid].astype(np.float64))
      if "code_counts" in predictions:
        batch_counts = predictions["code_counts"][valid].astype(np.float64).sum(0)
        counts = batch_counts if counts is None else counts + batch_counts
    errors = common.allgather_rows(np.concatenate(errors))
    if counts is not None:
      counts = common.allgather_rows(counts[None]).sum(0)
    return summarize(errors, counts)
