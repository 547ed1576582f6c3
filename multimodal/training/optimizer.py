"""AdamW with warmup + cosine decay, gradient clipping, a weight-decay mask, optional
layer-wise learning-rate decay and optionally frozen params."""
from __future__ import annotations

import re
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


# A param in the n-th block of a stack (`block3/...`, `vl_block0/...` after the plain ones);
# in an embedding (`image_embed/...`, `text_embed/...`, `embedding/...`).
_BLOCK = re.compile(r"(?:^|/)(vl_)?block(\d+)/")
_EMBEDDING = re.compile(r"(?:^|/)(?:\w+_)?embed(?:ding)?(?:/|$)")


def layer_ids(paths: list[str]) -> dict[str, int]:
  """Each param path's layer for layer-wise decay, as BEiT's fine-tuning counts them:
  embeddings 0, block i of the stack i + 1 (a `vl_` stack after the plain one), everything
  else (final norms, heads) one above the last block."""
  blocks = [_BLOCK.search(path) for path in paths]
  plain = 1 + max((int(m.group(2)) for m in blocks if m and not m.group(1)), default=-1)
  depth = plain + 1 + max((int(m.group(2)) for m in blocks if m and m.group(1)), default=-1)
  ids = {}
  for path, block in zip(paths, blocks):
    if block:
      ids[path] = 1 + int(block.group(2)) + (plain if block.group(1) else 0)
    elif _EMBEDDING.search(path):
      ids[path] = 0
    else:
      ids[path] = depth + 1
  return ids


def path_name(path: tuple[Any, ...]) -> str:
  """A pytree key path as "/"-joined names: ("params", "block0", "mlp") -> "params/block0/mlp"."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def layer_decay_scale(decay: float) -> optax.GradientTransformation:
  """Scales each update by decay ** (top - layer) (`layer_ids`; top: the heads' layer), so
  that the learning rate (and the decoupled weight decay with it) shrinks geometrically
  from the head down to the embeddings. Stacks run with scan_layers share one rate."""
  def scales(updates: Any) -> Any:
    leaves = jax.tree_util.tree_flatten_with_path(updates)[0]
    ids = layer_ids([path_name(path) for path, _ in leaves])
    top = max(ids.values())
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u * decay ** (top - ids[path_name(path)]), updates)

  return optax.GradientTransformation(
      init=lambda params: optax.EmptyState(),
      update=lambda updates, state, params=None: (scales(updates), state))


def frozen_labels(params: Any, frozen: tuple[str, ...]) -> Any:
  """"frozen" for each param under one of the `frozen` path prefixes ("image_encoder",
  "encoder/block0"), else "trained"."""
  prefixes = [prefix.strip("/") for prefix in frozen]
  def label(path: tuple[Any, ...], _: Any) -> str:
    name = path_name(path)
    return "frozen" if any(name == q or name.startswith(q + "/") for q in prefixes) else "trained"
  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(config: Any, total_steps: int) -> optax.GradientTransformation:
  """config: learning_rate, warmup_steps, end_lr_fraction, weight_decay, b1, b2,
  grad_clip_norm, optionally layer_decay (None or 1: off) and frozen (path prefixes whose
  params never change: no update, no weight decay, no optimizer state; pass the same
  prefixes to `make_train_step`, which stops their gradients so no backward pass runs
  through them)."""
  schedule = learning_rate_schedule(config, total_steps)
  parts = []
  if config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=config.b1, b2=config.b2,
                           weight_decay=config.weight_decay, mask=decay_mask))
  layer_decay = config.get("layer_decay") if hasattr(config, "get") else None
  if layer_decay not in (None, 1, 1.0):
    if not 0.0 < layer_decay < 1.0:
      raise ValueError(f"optimizer.layer_decay must lie in (0, 1]; got {layer_decay}.")
    parts.append(layer_decay_scale(float(layer_decay)))
  frozen = tuple(config.get("frozen", ()) if hasattr(config, "get") else ())
  if not frozen:
    return optax.chain(*parts)
  def labels(params: Any) -> Any:
    tree = frozen_labels(params, frozen)
    if "frozen" not in jax.tree.leaves(tree):
      raise ValueError(f"optimizer.frozen: no params under {list(frozen)}.")
    return tree
  return optax.multi_transform({"trained": optax.chain(*parts), "frozen": optax.set_to_zero()},
                               labels)
