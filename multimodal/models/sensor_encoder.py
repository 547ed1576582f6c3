"""Sensor / time-series encoder: strided 1-D convolutions, or a transformer over 1-D patches."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import numpy as np

from multimodal.models import partitioning as p
from multimodal.models.encoder_settings import EncoderSettings
from multimodal.models.features import Features
from multimodal.models.pooling import MapPooling, pool
from multimodal.models.posemb import AddPositionEmbedding
from multimodal.models.registry import ENCODERS
from multimodal.models.time_padding import (local_attention, pad_to_patches, time_mask,
                                            zero_padding)
from multimodal.models.transformer import dense
from multimodal.models.vit import encode_tokens, patch_embedding

KINDS = ("conv", "transformer")


@ENCODERS.register("sensor_encoder")
class SensorEncoder(EncoderSettings):
  """A multichannel signal float[B, T, C] -> Features, tokens in time order.

  Optionally bool[B, T], True for real time steps; padded steps are zeroed first, so nothing
  depends on their values, and `Features.mask` marks the tokens that cover real steps.

  kind="conv": `conv_channels` 1-D convolutions (kernel `conv_kernel`, stride `conv_stride`,
    SAME padding, each followed by GELU; padded steps are zeroed before each), then a Dense
    to `width`. Token i stands for step i * s of the signal, s = conv_stride ** len(
    conv_channels): N = ceil(T / s) tokens, real where that step is. No transformer; the
    size settings other than width only matter for pool_type "map".
  kind="transformer": non-overlapping patches of `patch_time` steps, each linearly embedded,
    learned position embeddings, pre-LN transformer. N = ceil(T / patch_time) tokens (the
    signal is zero-padded at the end), real where a patch holds a real step; with pool_type
    "cls" a class token comes first.

  Attributes:
    variant: a size name from `variants.VARIANTS`; width/depth/mlp_dim/num_heads override it.
    pool_type: "gap" (over real tokens), "map", "none", or "cls" (transformer only).
    remat, remat_policy, scan_layers: how the transformer blocks run (see `Encoder`).
  """
  kind: str = "transformer"
  conv_channels: Sequence[int] = (64, 128)
  conv_kernel: int = 5
  conv_stride: int = 2
  patch_time: int = 16
  pool_type: str = "gap"

  @nn.compact
  def __call__(self, signal: jax.Array, mask: jax.Array | None = None, *,
               train: bool) -> Features:
    """signal: float[B, T, C]; mask: bool[B, T] or None -> Features(tokens float[B, N, D],
    mask bool[B, N], pooled float[B, D] or None), N as the class docstring says."""
    if self.kind not in KINDS:
      raise ValueError(f"Unknown sensor_encoder kind {self.kind!r}; use one of {KINDS}.")
    if signal.ndim != 3:
      raise ValueError("sensor_encoder: the signal must be float[B, T, channels], got shape "
                       f"{list(signal.shape)}.")
    size = self.sizes()
    steps = time_mask(signal, mask, "sensor_encoder")
    signal = signal.astype(self.dtype)
    if self.kind == "conv":
      if self.time_window is not None:
        raise ValueError("sensor_encoder: time_window applies to kind='transformer' (a "
                         "convolution's context is its kernels).")
      return self._conv(signal, steps, size)
    if self.patch_time < 1:
      raise ValueError(f"sensor_encoder: patch_time={self.patch_time} must be >= 1.")
    x, patches = pad_to_patches(signal, steps, self.patch_time)
    x = patch_embedding(size["width"], (self.patch_time,), self.dtype, "stem")(x)
    x = AddPositionEmbedding("learn", name="posemb")(x)
    return encode_tokens(self, x, patches, size, self.pool_type, train=train,
                         attention=local_attention(np.arange(x.shape[1]), self.time_window))

  def _conv(self, x: jax.Array, mask: jax.Array, size: dict[str, int]) -> Features:
    if self.pool_type == "cls":
      raise ValueError("sensor_encoder: kind='conv' has no class token; use pool_type "
                       "'gap', 'map' or 'none'.")
    if self.conv_kernel < 1 or self.conv_stride < 1:
      raise ValueError(f"sensor_encoder: conv_kernel={self.conv_kernel} and "
                       f"conv_stride={self.conv_stride} must be >= 1.")
    for i, channels in enumerate(self.conv_channels):
      x = nn.Conv(channels, (self.conv_kernel,), strides=self.conv_stride, padding="SAME",
                  dtype=self.dtype, name=f"conv{i}",
                  kernel_init=p.init(nn.initializers.he_normal(), None, "conv_in", "conv_out"),
                  bias_init=p.init(nn.initializers.zeros, "conv_out"))(zero_padding(x, mask))
      x = nn.gelu(x)
      mask = mask[:, ::self.conv_stride]
    x = dense(size["width"], "conv_out", "embed", "proj", self.dtype)(x)
    map_pool = (MapPooling(size["num_heads"], size["mlp_dim"], self.dtype, name="map")
                if self.pool_type == "map" else None)
    return Features(tokens=x, mask=mask, pooled=pool(self.pool_type, x, mask, map_pool))
