"""Training an image tokenizer (the `image_autoencoder` model): reconstruction loss plus the
quantizer's own terms (commitment, or a KL), with the codebook's health as metrics."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from multimodal.tasks.registry import TASKS, Batch

RECONSTRUCTION_LOSSES = ("mse", "l1")


def codebook_statistics(counts: jax.Array) -> dict[str, jax.Array]:
  """float[K] code counts -> perplexity (exp of the entropy of the code distribution: K when
  every code is used equally, 1 when one code takes every cell) and codebook_usage (the share
  of the K codes used at least once)."""
  counts = jnp.asarray(counts, jnp.float32)
  probs = counts / jnp.maximum(jnp.sum(counts), 1.0)
  entropy = -jnp.sum(jax.scipy.special.xlogy(probs, probs))  # 0 log 0 = 0
  return {"perplexity": jnp.exp(entropy), "codebook_usage": jnp.mean(counts > 0)}


def per_example_mse(reconstruction: jax.Array, images: jax.Array) -> jax.Array:
  """float[B, H, W, 3] twice -> float32[B]."""
  error = jnp.square(reconstruction.astype(jnp.float32) - images.astype(jnp.float32))
  return jnp.mean(error, axis=(1, 2, 3))


def foreground_mask(images: jax.Array, threshold: float) -> jax.Array:
  """float[B, H, W, 3] -> float32[B, H, W, 1]: 1 where a pixel differs from its image's
  background colour (the per-channel median over the image, right for scenes of a few objects
  on a plain background) by more than `threshold` in some channel, else 0."""
  images = images.astype(jnp.float32)
  background = jnp.median(images, axis=(1, 2), keepdims=True)
  distance = jnp.max(jnp.abs(images - background), axis=-1, keepdims=True)
  return (distance > threshold).astype(jnp.float32)


def pixel_weights(images: jax.Array, foreground_weight: float, threshold: float) -> jax.Array:
  """float32[B, H, W, 1]: foreground_weight on foreground pixels, 1 on the background, scaled
  so that each image's weights average 1 (the loss keeps its scale whatever the objects' area)."""
  weights = 1.0 + (foreground_weight - 1.0) * foreground_mask(images, threshold)
  return weights / jnp.mean(weights, axis=(1, 2, 3), keepdims=True)


@TASKS.register("image_autoencoder")
class ImageAutoencoderTask:
  """Loss: the reconstruction error (`reconstruction`: "mse" or "l1", per pixel) plus every
  term of the model's `losses`. Metrics: recon_mse, each quantizer term and statistic, and
  for discrete codes the batch's perplexity and codebook_usage.

  Args:
    reconstruction: "mse" or "l1".
    image_key: the batch key of the images float[B, H, W, 3].
    foreground_weight: how much more a foreground pixel's error counts than a background
      pixel's (1: all alike). On small objects over a plain background, a per-pixel loss is
      mostly background and pays little for the objects' outlines; weighting the objects up
      keeps their shapes. (L1 alone does the opposite there: its optimum is the background.)
    foreground_threshold: how far (in the images' value range) from the background colour a
      pixel must be to count as foreground.
  """

  def __init__(self, reconstruction: str = "mse", image_key: str = "image",
               foreground_weight: float = 1.0, foreground_threshold: float = 0.1):
    if reconstruction not in RECONSTRUCTION_LOSSES:
      raise ValueError(f"Unknown reconstruction loss {reconstruction!r}; use one of "
                       f"{list(RECONSTRUCTION_LOSSES)}.")
    if foreground_weight < 1.0:
      raise ValueError(f"foreground_weight must be at least 1, got {foreground_weight}.")
    if foreground_threshold <= 0.0:
      raise ValueError(f"foreground_threshold must be positive, got {foreground_threshold}.")
    self.reconstruction = reconstruction
    self.image_key = image_key
    self.foreground_weight = foreground_weight
    self.foreground_threshold = foreground_threshold

  def model_kwargs(self) -> dict[str, Any]:
    return {}

  def _images(self, batch: Batch) -> jax.Array:
    if self.image_key not in batch:
      raise KeyError(f"The image_autoencoder task reads batch[{self.image_key!r}]; the batch "
                     f"has {sorted(batch)}.")
    return batch[self.image_key]

  def loss(self, outputs: dict[str, Any], batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """outputs: the model's (reconstruction, losses, stats, codes and code_counts) -> (loss,
    metrics of the training batch)."""
    images = self._images(batch).astype(jnp.float32)
    reconstruction = outputs["reconstruction"]
    difference = reconstruction.astype(jnp.float32) - images
    squared = jnp.square(difference)
    recon_mse = jnp.mean(squared)  # every image has as many pixels: the mean of the per-image MSEs
    error = squared if self.reconstruction == "mse" else jnp.abs(difference)
    if self.foreground_weight != 1.0:
      error = error * pixel_weights(images, self.foreground_weight, self.foreground_threshold)
    recon_loss = jnp.mean(error)
    terms = outputs["losses"]
    loss = recon_loss + sum(terms.values())
    metrics = {"recon_mse": recon_mse, "recon_loss": recon_loss,
               **{f"{name}_loss": value for name, value in terms.items()}, **outputs["stats"]}
    if "code_counts" in outputs:
      metrics.update(codebook_statistics(jnp.sum(outputs["code_counts"], axis=0)))
    return loss, metrics

  def predict(self, outputs: dict[str, Any], batch: Batch) -> dict[str, jax.Array]:
    """Per example: recon_mse float32[B], the reconstruction float32[B, H, W, 3]; for
    discrete codes, codes int32[B, h * w] and code_counts float32[B, K] (what a split's
    perplexity and usage are summed from)."""
    predictions = {"recon_mse": per_example_mse(outputs["reconstruction"], self._images(batch)),
                   "reconstruction": outputs["reconstruction"].astype(jnp.float32)}
    for key in ("codes", "code_counts"):
      if key in outputs:
        predictions[key] = outputs[key]
    return predictions
