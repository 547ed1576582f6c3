"""AdamW with warmup + cosine decay, gradient clipping and a weight-decay mask."""
from __future__ import annotations

from typing import Any

import jax
import optax

from multimodal.models import partitioning as p


def learning_rate_schedule(config: Any, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then cosine decay to `end_lr_fraction` of it."""
  warmup = min(int(config.warmup_steps), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=config.learning_rate * config.end_lr_fraction)


def decay_mask(params: Any) -> Any:
  """Weight decay on matrices and kernels only: not on biases, norms' scales, or scalars.

  A scanned stack's params carry a leading `layers` axis that does not count.
  """
  def is_matrix(path: tuple[Any, ...], x: Any) -> bool:
    stacked = any(getattr(key, "key", None) == p.STACKED_BLOCKS for key in path)
    return x.ndim - stacked > 1

  return jax.tree_util.tree_map_with_path(is_matrix, params)


def make_optimizer(config: Any, total_steps: int) -> optax.GradientTransformation:
  """config: learning_rate, warmup_steps, end_lr_fraction, weight_decay, b1, b2, grad_clip_norm."""
  schedule = learning_rate_schedule(config, total_steps)
  parts = []
  if config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=config.b1, b2=config.b2,
                           weight_decay=config.weight_decay, mask=decay_mask))
  return optax.chain(*parts)
