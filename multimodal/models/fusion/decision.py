"""Decision-level pieces: a head per modality (or group) and the ways to combine their logits."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.features import Fused
from multimodal.models.fusion.base import masked_softmax
from multimodal.models.heads import HEADS

COMBINATIONS = ("mean", "learned", "product")


def check_decision_settings(module: str, combine: str, head: Any, num_classes: int) -> None:
  if combine not in COMBINATIONS:
    raise ValueError(f"{module} fusion: unknown combine {combine!r}; use one of {COMBINATIONS}.")
  if head is None or num_classes <= 0:
    raise ValueError(f"{module} fusion makes its own predictions: the model must pass `head` "
                     f"(a head spec) and `num_classes`; got head={head}, "
                     f"num_classes={num_classes}.")


def heads_logits(inputs: dict[str, Fused], head: Any, num_classes: int, dtype: Any, *,
                 train: bool) -> dict[str, jax.Array]:
  """One head (params `head_{name}`) per entry of `inputs` -> {name: float32[B, C]}.
  Call inside a compact method: the heads' params belong to the caller."""
  return {name: HEADS.build(head, num_classes=num_classes, dtype=dtype, name=f"head_{name}")(
      inputs[name], train=train) for name in sorted(inputs)}


class CombineLogits(nn.Module):
  """Combines per-modality logits over the modalities each example has.

  method:
    mean: the mean of the present modalities' logits.
    learned: a softmax over learned per-modality weights (param `weights` [M], renormalised
      over the present ones) times the logits.
    product: product of experts, sum_m log_softmax(logits_m): its softmax is the normalised
      product of the modalities' class distributions (for softmax-trained heads).
  An example with no modality present gets all-zero logits.
  """
  method: str = "mean"

  @nn.compact
  def __call__(self, logits: dict[str, jax.Array], present: dict[str, jax.Array]) -> jax.Array:
    """logits: {m: float32[B, C]}; present: {m: bool[B]} -> float32[B, C]."""
    names = sorted(logits)
    stacked = jnp.stack([logits[n] for n in names], axis=1).astype(jnp.float32)  # [B, M, C]
    mask = jnp.stack([present[n] for n in names], axis=1)  # [B, M]
    if self.method == "learned":
      scores = self.param("weights", p.init(nn.initializers.zeros, None), (len(names),))
      weights = masked_softmax(jnp.broadcast_to(scores, mask.shape), mask)
    elif self.method == "mean":
      weights = mask / jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1)
    elif self.method == "product":
      stacked = jax.nn.log_softmax(stacked, axis=-1)
      weights = mask.astype(jnp.float32)
    else:
      raise ValueError(f"Unknown combine {self.method!r}; use one of {COMBINATIONS}.")
    return jnp.einsum("bm,bmc->bc", weights.astype(jnp.float32), stacked)
