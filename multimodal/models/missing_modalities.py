"""Removing modalities from examples: modality dropout in training, and evaluation with a
modality missing. A removed modality keeps its tokens but all of them are masked out, which
every fusion module treats as absent."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from multimodal.models.features import Features

MISSING_SUFFIX = "_missing"  # batch key `{modality}_missing`: bool[B], remove it there


def remove(features: dict[str, Features], missing: dict[str, jax.Array]) -> dict[str, Features]:
  """Masks out every token of modality m in the examples where missing[m] (bool[B]) is True
  (and zeroes its pooled vector there, if the encoder gave one)."""
  out = dict(features)
  for name, gone in missing.items():
    if name not in features:
      raise KeyError(f"Cannot remove modality {name!r}: the model has {sorted(features)}.")
    f = features[name]
    pooled = None if f.pooled is None else jnp.where(gone[:, None], 0, f.pooled)
    out[name] = f.replace(mask=jnp.logical_and(f.mask.astype(bool), ~gone[:, None]),
                          pooled=pooled)
  return out


def from_batch(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """{modality: bool[B]} from the batch's `{modality}_missing` keys (none: nothing missing)."""
  return {k[:-len(MISSING_SUFFIX)]: v.astype(bool) for k, v in batch.items()
          if k.endswith(MISSING_SUFFIX)}


def remover(modality: str) -> Callable[[dict[str, np.ndarray]], None]:
  """A host-batch edit (for `evaluators.common.predicted_batches`) that removes `modality`
  from every row: sets `{modality}_missing` to True."""
  def edit(batch: dict[str, np.ndarray]) -> None:
    batch[modality + MISSING_SUFFIX] = np.ones(len(batch["_valid"]), bool)

  return edit


def sample_dropped(rng: jax.Array, names: list[str], batch_size: int, rate: float
                   ) -> dict[str, jax.Array]:
  """Modality dropout: with probability `rate` an example loses one of the modalities,
  chosen uniformly (so no example loses all of them). -> {modality: bool[B]}."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"modality_dropout must lie in [0, 1], got {rate}.")
  drop_rng, which_rng = jax.random.split(rng)
  drop = jax.random.bernoulli(drop_rng, rate, (batch_size,))
  which = jax.random.randint(which_rng, (batch_size,), 0, len(names))
  return {name: jnp.logical_and(drop, which == i) for i, name in enumerate(sorted(names))}
