"""How well an image tokenizer reconstructs a split, how much of its codebook it uses, and
(with an attribute classifier) whether its reconstructions still show what a prompt asks for:
the ceiling of every text-to-image model that draws through this tokenizer."""
from __future__ import annotations

from typing import Any

import numpy as np

from multimodal.data import pipeline
from multimodal.data.shapes import t2i_prompts
from multimodal.data.shapes.render import render
from multimodal.evaluators import common, prompt_match
from multimodal.evaluators.attribute_classifier import AttributeClassifier
from multimodal.evaluators.registry import EVALUATORS, EvalContext
from multimodal.evaluators.text_to_image import read_matches, real_accuracy, to_unit
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
  `recon_mse` and `code_counts` predictions).

  With classifier_workdir (a configs/shapes_scene_parser.py run) also `recon_prompt_match`
  and `recon_prompt_match/{kind}`: the prompt set's scenes (`t2i_prompts.prompt_set`,
  prompts_per_kind of each kind) rendered at the model's resolution, passed through the
  autoencoder, and read by the classifier as matching their prompts; beside it
  `classifier_accuracy` (/{kind}), the same on the renderings themselves. A text-to-image model
  over this tokenizer cannot score above recon_prompt_match.
  """

  def __init__(self, context: EvalContext, name: str, split: str, pp: str, batch_size: int,
               every_steps: int = 0, max_examples: int | None = None,
               classifier_workdir: str | None = None, prompts_per_kind: int = 40,
               classifier_batch_size: int = 64):
    super().__init__(context, name, split, pp, batch_size, every_steps, max_examples)
    self.classifier = None
    if classifier_workdir:
      self.classifier = AttributeClassifier(classifier_workdir, classifier_batch_size)
      self.prompts = t2i_prompts.prompt_set(prompts_per_kind)
    self._ceiling: dict[str, float] | None = None

  def run(self, params: Any, step: int) -> dict[str, float]:
    del step
    errors, counts, size = [], None, None
    for batch, predictions in common.predicted_batches(
        self.context, params, split=self.split, pp=self.pp, batch_size=self.batch_size):
      valid = batch["_valid"]
      size = predictions["reconstruction"].shape[1]
      errors.append(predictions["recon_mse"][valid].astype(np.float64))
      if "code_counts" in predictions:
        batch_counts = predictions["code_counts"][valid].astype(np.float64).sum(0)
        counts = batch_counts if counts is None else counts + batch_counts
    errors = common.allgather_rows(np.concatenate(errors))
    if counts is not None:
      counts = common.allgather_rows(counts[None]).sum(0)
    metrics = summarize(errors, counts)
    if self.classifier is not None:
      metrics.update(self._prompt_matches(params, size))
    return metrics

  def _prompt_matches(self, params: Any, size: int) -> dict[str, float]:
    """recon_prompt_match (/{kind}) and classifier_accuracy (/{kind}) on the prompt scenes."""
    images = to_unit(np.stack([render(t2i_prompts.scaled(p.scene, size))
                               for p in self.prompts]))
    local = pipeline.host_batch_size(self.batch_size)
    rows = []
    # Every host reconstructs all the prompt images (a few hundred): no gather needed.
    for batch in common.padded_batches(
        ({"image": images[i:i + local]} for i in range(0, len(images), local)), local):
      rows.append(common.predict_host_rows(self.context, params, batch)["reconstruction"]
                  [batch["_valid"]])
    matched, _ = read_matches(self.prompts, np.concatenate(rows), self.classifier)
    kinds = [p.kind for p in self.prompts]
    if self._ceiling is None:
      self._ceiling = real_accuracy(self.prompts, self.classifier, size)
    return {**prompt_match.accuracy(kinds, matched, "recon_prompt_match"), **self._ceiling}
