"""Image-text contrastive learning (CLIP / SigLIP) for the `two_towers` model."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from multimodal.data import tokenizer as tokenizer_lib
from multimodal.losses import contrastive
from multimodal.tasks.registry import TASKS, Batch

LOSSES = ("softmax", "sigmoid", "sigmoid_chunked")


@TASKS.register("contrastive")
class ContrastiveTask:
  """Args:
    tokenizer: sentencepiece model of the text tower (a packaged name or a path).
    loss: "softmax" (CLIP), "sigmoid" (SigLIP over the whole [B, B] logits) or
      "sigmoid_chunked" (the same value, each device holding only [B/P, B/P] logits at a
      time: texts passed around the mesh's batch axes; B must split over them).
    mesh: the device mesh (the trainer offers it); "sigmoid_chunked" needs it.
  Batch keys: image float[B, H, W, 3], text_tokens int32[B, T], text_mask bool[B, T]; the
  pair in row i matches, every other pairing is a negative.
  """

  def __init__(self, tokenizer: str, loss: str = "sigmoid", mesh: Mesh | None = None):
    if loss not in LOSSES:
      raise ValueError(f"Unknown contrastive loss {loss!r}; expected one of {LOSSES}.")
    if loss == "sigmoid_chunked" and mesh is None:
      raise ValueError("loss='sigmoid_chunked' needs the device mesh (mesh=...); the trainer "
                       "passes it.")
    self.tokenizer = tokenizer
    self.loss_name = loss
    self.mesh = mesh

  def model_kwargs(self) -> dict[str, Any]:
    return dict(vocab_size=tokenizer_lib.load(self.tokenizer).get_piece_size())

  def loss(self, outputs: dict[str, jax.Array], batch: Batch
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-> (loss, {"temperature", "bias", and except for "sigmoid_chunked"
    "image_to_text_accuracy": the share of images whose own text scores highest in the
    batch})."""
    image, text = outputs["image"], outputs["text"]
    temperature, bias = outputs["temperature"], outputs["bias"]
    if self.loss_name == "softmax":
      loss = contrastive.softmax_loss(image, text, temperature)
    elif self.loss_name == "sigmoid":
      loss = contrastive.sigmoid_loss(image, text, temperature, bias)
    else:
      loss = contrastive.chunked_sigmoid_loss(image, text, temperature, bias, self.mesh)
    metrics = {"temperature": temperature, "bias": bias}
    if self.loss_name != "sigmoid_chunked":  # That loss exists to never hold [B, B] at once.
      similarity = jax.lax.stop_gradient(image @ text.T)
      metrics["image_to_text_accuracy"] = jnp.mean(
          jnp.argmax(similarity, axis=1) == jnp.arange(image.shape[0]))
    return loss, metrics

  def predict(self, outputs: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
    """-> image_embedding and/or text_embedding float32[B, E] (whichever the batch fed)."""
    del batch
    names = {"image": "image_embedding", "text": "text_embedding"}
    return {names[k]: v for k, v in outputs.items() if k in names}
