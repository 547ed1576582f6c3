"""Auxiliary losses: terms a model adds to its task's loss from inside any module.

A module calls `add_aux_loss(self, "name", value)` with a float32 scalar already weighted; the
train step applies the model with the `aux_loss` collection mutable, adds the sum of every term
to the task loss, and reports the sum as the `aux_loss` metric. Outside training (the
collection not mutable) the call does nothing, so evaluation computes no extra terms.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

COLLECTION = "aux_loss"


def add_aux_loss(module: nn.Module, name: str, value: jax.Array) -> None:
  """Adds the scalar `value` (already weighted) to the training loss under `name`."""
  if jnp.ndim(value) != 0:
    raise ValueError(f"Auxiliary loss {name!r} must be a scalar, got shape {jnp.shape(value)}.")
  module.sow(COLLECTION, name, jnp.asarray(value, jnp.float32))


def total(collections: dict[str, Any]) -> jax.Array | None:
  """The sum of every auxiliary loss sown in `collections` (from `apply(mutable=...)`), or
  None when no module added one."""
  leaves = jax.tree.leaves(collections.get(COLLECTION, {}))
  if not leaves:
    return None
  return sum(jnp.sum(leaf) for leaf in leaves)
