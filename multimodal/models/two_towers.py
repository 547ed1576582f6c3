"""Two towers (CLIP / SigLIP): an image encoder and a text encoder, each pooled and projected
to one embedding width and L2-normalised, with a learned temperature and bias for the
contrastive losses of `multimodal.losses.contrastive`.

Batch keys: image float[B, H, W, 3] and/or text_tokens int32[B, T] with text_mask bool[B, T];
either tower runs alone when the other's input is absent (retrieval embeds the two sides
separately).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.registry import ENCODERS, MODELS

Spec = dict[str, Any]


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  x = x.astype(jnp.float32)
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def temperature_and_bias(module: nn.Module, temperature_init: float, bias_init: float
                         ) -> tuple[jax.Array, jax.Array]:
  """The contrastive logits' learned scale and offset (params `log_temperature`, `bias` of
  `module`; call inside its compact method): (exp(t) float32[], b float32[])."""
  log_t = module.param("log_temperature", nn.initializers.constant(temperature_init), ())
  return jnp.exp(log_t), module.param("bias", nn.initializers.constant(bias_init), ())


@MODELS.register("two_towers")
class TwoTowers(nn.Module):
  """Attributes:
    image, text: encoder specs (their `pool_type` gives the pooled vector: "map" as in
      SigLIP, "cls", "gap").
    embed_dim: the shared embedding width (each tower's pooled vector is projected to it).
    image_projection: project the image tower's pooled vector; without it (as SigLIP, whose
      MAP head already gives the embedding) that vector must be embed_dim wide.
    temperature_init, bias_init: the logits are exp(t) * cosine + b, t and b learned; SigLIP
      starts at t = log 10, b = -10; CLIP at t = log(1 / 0.07), b = 0 (its loss has no bias).
    vocab_size: the tokenizer's vocabulary size (filled in from the data config).
    dtype: compute dtype name; parameters stay float32.
  """
  image: Spec
  text: Spec
  embed_dim: int
  vocab_size: int
  temperature_init: float = 2.302585  # log(10)
  bias_init: float = -10.0
  image_projection: bool = True
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    """-> {"image": float32[B, E] (if batch has an image), "text": float32[B, E] (if it has
    text), "temperature": float32[], "bias": float32[]}."""
    dtype = jnp.dtype(self.dtype)
    out = {}
    project = lambda name: nn.Dense(
        self.embed_dim, dtype=dtype, name=f"{name}_projection",
        kernel_init=p.init(nn.initializers.lecun_normal(), "embed", None),
        bias_init=p.init(nn.initializers.zeros, None))
    if "image" in batch:
      features = ENCODERS.build(self.image, dtype=dtype, name="image_encoder")(
          batch["image"], train=train)
      pooled = features.pooled
      if self.image_projection:
        pooled = project("image")(pooled)
      elif pooled.shape[-1] != self.embed_dim:
        raise ValueError(f"Without an image projection the image tower's pooled vector (width "
                         f"{pooled.shape[-1]}) must be embed_dim ({self.embed_dim}) wide.")
      out["image"] = l2_normalize(pooled)
    if "text_tokens" in batch:
      features = ENCODERS.build(self.text, vocab_size=self.vocab_size, dtype=dtype,
                                name="text_encoder")(batch["text_tokens"], batch["text_mask"],
                                                     train=train)
      out["text"] = l2_normalize(project("text")(features.pooled))
    if not out:
      raise ValueError("The two towers need an `image` or `text_tokens` batch key; got "
                       f"{sorted(batch)}.")
    out["temperature"], out["bias"] = temperature_and_bias(self, self.temperature_init,
                                                           self.bias_init)
    return out
