"""Contrastive learning (CLIP / SigLIP) between two modalities' embeddings: image and text
(`two_towers`), or any pair (`paired_embeddings` with contrastive=True, e.g. audio and
video)."""
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
    tokenizer: sentencepiece model of the text tower (a packaged name or a path); None when
      neither modality is text.
    loss: "softmax" (CLIP), "sigmoid" (SigLIP over the whole [B, B] logits) or
      "sigmoid_chunked" (the same value, each device holding only [B/P, B/P] logits at a
      time: texts passed around the mesh's batch axes; B must split over them).
    mesh: the device mesh (the trainer offers it); "sigmoid_chunked" needs it.
    modalities: the model's two output keys that are compared, (x, y); chunked, y's
      embeddings are the ones passed around the mesh.
  Batch keys: the two modalities' inputs (image float[B, H, W, 3], text_tokens int32[B, T],
  text_mask bool[B, T]; audio, video, ...); the pair in row i matches, every other pairing is
  a negative.
  """

  def __init__(self, tokenizer: str | None = None, loss: str = "sigmoid",
               mesh: Mesh | None = None, modalities: tuple[str, str] = ("image", "text")):
    if loss not in LOSSES:
      raise ValueError(f"Unknown contrastive loss {loss!r}; expected one of {LOSSES}.")
    if len(modalities) != 2 or modalities[0] == modalities[1]:
      raise ValueError(f"contrastive compares two different modalities; got {modalities}.")
    if "text" in modalities and tokenizer is None:
      raise ValueError("contrastive with a text modality needs its tokenizer (tokenizer=...).")
    if loss == "sigmoid_chunked" and mesh is None:
      raise ValueError("loss='sigmoid_chunked' needs the device mesh (mesh=...); the trainer "
                       "passes it.")
    self.tokenizer = tokenizer
    self.loss_name = loss
    self.mesh = mesh
    self.modalities = tuple(modalities)

  def model_kwargs(self) -> dict[str, Any]:
    if self.tokenizer is None:
      return {}
    return dict(vocab_size=tokenizer_lib.load(self.tokenizer).get_piece_size())

  def loss(self, outputs: dict[str, jax.Array], batch: Batch
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-> (loss, {"temperature", "bias", and except for "sigmoid_chunked"
    "{x}_to_{y}_accuracy" (e.g. image_to_text_accuracy): the share of x whose own y scores
    highest in the batch})."""
    x_name, y_name = self.modalities
    x, y = outputs[x_name], outputs[y_name]
    temperature, bias = outputs["temperature"], outputs["bias"]
    if self.loss_name == "softmax":
      loss = contrastive.softmax_loss(x, y, temperature)
    elif self.loss_name == "sigmoid":
      loss = contrastive.sigmoid_loss(x, y, temperature, bias)
    else:
      loss = contrastive.chunked_sigmoid_loss(x, y, temperature, bias, self.mesh)
    metrics = {"temperature": temperature, "bias": bias}
    if self.loss_name != "sigmoid_chunked":  # That loss exists to never hold [B, B] at once.
      similarity = jax.lax.stop_gradient(x @ y.T)
      metrics[f"{x_name}_to_{y_name}_accuracy"] = jnp.mean(
          jnp.argmax(similarity, axis=1) == jnp.arange(x.shape[0]))
    return loss, metrics

  def predict(self, outputs: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
    """-> {x}_embedding and/or {y}_embedding float32[B, E] (whichever the batch fed; e.g.
    image_embedding, text_embedding)."""
    del batch
    return {f"{m}_embedding": outputs[m] for m in self.modalities if m in outputs}
