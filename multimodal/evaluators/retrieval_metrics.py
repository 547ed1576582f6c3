"""Image-text retrieval recall: R@k in both directions from L2-normalised embeddings.

Image to text: an image is a hit at k when any of its captions is among the k texts most
similar to it. Text to image: a caption is a hit at k when its image is among the k images
most similar to it. Ties count against the query (a competitor that scores the same as the
right answer ranks before it), so a constant model does not score well.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def recall_at_k(image: np.ndarray, text: np.ndarray, text_image: np.ndarray,
                ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """image float[I, D], text float[T, D] (normalised), text_image int[T] (the index of each
  caption's image) -> {"image_to_text/R@k": ..., "text_to_image/R@k": ...} in [0, 1]."""
  image, text = np.asarray(image, np.float64), np.asarray(text, np.float64)
  text_image = np.asarray(text_image)
  if text_image.shape != (len(text),) or text_image.min(initial=0) < 0 or (
      text_image.max(initial=-1) >= len(image)):
    raise ValueError(f"text_image must give each of the {len(text)} texts an image index in "
                     f"[0, {len(image)}); got shape {text_image.shape}.")
  similarity = image @ text.T  # [I, T]
  own = text_image[None, :] == np.arange(len(image))[:, None]  # [I, T]: caption of the image
  if not own.any(axis=1).all():
    raise ValueError("Every image needs at least one caption for image-to-text recall.")
  # Image to text: the rank of the best own caption = texts scoring at least as high, minus 1.
  best_own = np.where(own, similarity, -np.inf).max(axis=1, keepdims=True)
  image_rank = (np.where(own, -np.inf, similarity) >= best_own).sum(axis=1)
  # Text to image: images (other than its own) scoring at least as high as its own image.
  own_score = similarity[text_image, np.arange(len(text))]
  text_rank = ((similarity >= own_score[None, :]) & ~own).sum(axis=0)
  metrics = {}
  for k in ks:
    metrics[f"image_to_text/R@{k}"] = float(np.mean(image_rank < k))
    metrics[f"text_to_image/R@{k}"] = float(np.mean(text_rank < k))
  return metrics
