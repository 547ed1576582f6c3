"""What every fusion module shares: its size settings, per-modality streams, and pooling."""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.features import Features, Fused, is_present, masked_mean
from multimodal.models.transformer import EncoderBlock, Stacking, dense, layer_norm, stack_blocks


class FusionModule(nn.Module):
  """Base class of the fusion modules: the settings they all take from the config.

  Attributes:
    width: the fusion width; every modality's tokens are projected to it.
    depth: transformer layers in the module (modality-specific and fusion layers together).
    num_heads, mlp_dim, dropout: sizes of those layers.
    dtype: compute dtype (params stay float32).
    remat, remat_policy, scan_layers: how the layers run (see `transformer.Stacking`).
  Class attribute `decision_level`: the module also takes `head` (a head spec) and
  `num_classes` and returns per-modality logits combined in `Fused.logits`.
  """
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.0
  dtype: Any = jnp.float32
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  scan_layers: bool = False

  decision_level: ClassVar[bool] = False

  def settings(self, **overrides: Any) -> dict[str, Any]:
    """This module's `FusionModule` settings (with overrides), to build another module."""
    names = ("width", "depth", "num_heads", "mlp_dim", "dropout", "dtype", "remat",
             "remat_policy", "scan_layers")
    return {**{n: getattr(self, n) for n in names}, **overrides}

  def block(self, **kwargs: Any) -> functools.partial:
    """An `EncoderBlock` constructor with this module's sizes (call with name=...)."""
    return functools.partial(EncoderBlock, self.num_heads, self.mlp_dim, self.dropout,
                             dtype=self.dtype, **kwargs)

  def streams(self, depth: int) -> functools.partial:
    """A `ModalityStreams` constructor with this module's sizes (call with name=...)."""
    return functools.partial(ModalityStreams, self.width, depth, self.num_heads,
                             self.mlp_dim, self.dropout, self.dtype, Stacking.of(self))

  def final_norm(self) -> functools.partial:
    return functools.partial(PerModalityNorm, self.dtype)


def require(features: dict[str, Features], names: tuple[str, ...] | list[str], module: str,
            at_least: int = 1) -> None:
  """Raises a KeyError naming what is missing unless `features` has `names` (and enough)."""
  missing = [n for n in names if n not in features]
  if missing:
    raise KeyError(f"{module} fusion needs modalities {missing}; got {sorted(features)}.")
  if len(features) < at_least:
    raise ValueError(f"{module} fusion needs at least {at_least} modalities; "
                     f"got {sorted(features)}.")


class ModalityStreams(nn.Module):
  """Each modality's tokens projected to `width`, then `depth` transformer blocks of its own
  (no exchange between modalities). Params: `{name}_proj`, `{name}_block{i}` per modality.
  """
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  stacking: Stacking = Stacking()

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> dict[str, Features]:
    """{m: tokens [B, T_m, D_m]} -> {m: tokens [B, T_m, width]} with the same masks."""
    make_block = functools.partial(EncoderBlock, self.num_heads, self.mlp_dim, self.dropout,
                                   dtype=self.dtype)
    out = {}
    for name in sorted(features):
      f = features[name]
      mask = f.mask.astype(bool)
      x = dense(self.width, None, "embed", f"{name}_proj", self.dtype)(f.tokens)
      x = stack_blocks(make_block, self.depth, x, mask[:, None, :], train=train,
                       stacking=self.stacking, prefix=f"{name}_")
      out[name] = Features(tokens=x, mask=mask)
    return out


class PerModalityNorm(nn.Module):
  """A final LayerNorm per modality (params `{name}`), and each modality's pooled vector
  (the masked mean of its tokens)."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, streams: dict[str, Features]) -> dict[str, Features]:
    out = {}
    for name in sorted(streams):
      f = streams[name]
      x = layer_norm(name, self.dtype)(f.tokens)
      out[name] = Features(tokens=x, mask=f.mask, pooled=masked_mean(x, f.mask))
    return out


def presence(streams: dict[str, Features]) -> jax.Array:
  """bool[B, M]: which modalities (sorted names) each example has."""
  return jnp.stack([is_present(streams[n].mask) for n in sorted(streams)], axis=1)


def masked_softmax(scores: jax.Array, present: jax.Array, axis: int = -1) -> jax.Array:
  """float[..., M, ...] scores, bool present (broadcastable to them) -> float32 softmax over
  the present entries along `axis` (where none is present, all zero)."""
  present = jnp.broadcast_to(present, scores.shape)
  scores = jnp.where(present, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
  return jnp.where(present, jax.nn.softmax(scores, axis=axis), 0.0)


def weighted_pool(streams: dict[str, Features], weights: jax.Array) -> jax.Array:
  """Sum over modalities (sorted names) of weights float[B, M] times pooled float[B, D]."""
  pooled = jnp.stack([streams[n].pooled for n in sorted(streams)], axis=1)
  return jnp.einsum("bm,bmd->bd", weights.astype(pooled.dtype), pooled)


def mean_of_present(streams: dict[str, Features]) -> jax.Array:
  """float[B, D]: the mean of the present modalities' pooled vectors (zeros if none)."""
  present = presence(streams).astype(jnp.float32)
  weights = present / jnp.maximum(jnp.sum(present, axis=1, keepdims=True), 1.0)
  return weighted_pool(streams, weights)


def concat_streams(streams: dict[str, Features]) -> tuple[jax.Array, jax.Array]:
  """The modalities' tokens and masks concatenated in sorted name order:
  -> float[B, sum T_m, D], bool[B, sum T_m]."""
  names = sorted(streams)
  return (jnp.concatenate([streams[n].tokens for n in names], axis=1),
          jnp.concatenate([streams[n].mask for n in names], axis=1))


def pooled_fused(streams: dict[str, Features], pooled: jax.Array,
                 weights: jax.Array | None = None) -> Fused:
  """Fused output of a module that combines pooled vectors: its tokens are the modalities'
  pooled vectors, float[B, M, D], masked by presence."""
  names = sorted(streams)
  return Fused(tokens=jnp.stack([streams[n].pooled for n in names], axis=1),
               mask=presence(streams), pooled=pooled, modality_weights=weights)
