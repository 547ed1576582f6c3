"""The convolutional encoder: images -> a feature grid patch_size * 2^(levels - 1) times
smaller."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.image_autoencoder.blocks import Downsample, ResBlock, conv, group_norm


class ConvEncoder(nn.Module):
  """conv_in (a 3x3 convolution, or with patch_size p > 1 a p x p convolution of stride p:
  each p x p patch to one cell, so that no level runs at the full resolution), then per level `blocks_per_level` residual blocks of width channels * mult and
  (except after the last level) a stride-2 convolution; a residual block, GroupNorm, swish and
  a 3x3 convolution to `out_channels` (what the quantizer reads)."""
  channels: int
  channel_multipliers: Sequence[int]
  blocks_per_level: int
  out_channels: int
  norm_groups: int
  patch_size: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """float[B, H, W, 3] -> float32[B, H / f, W / f, out_channels],
    f = patch_size * 2^(levels - 1)."""
    stem = (conv(self.channels, name="conv_in", dtype=self.dtype) if self.patch_size == 1 else
            conv(self.channels, self.patch_size, self.patch_size, "conv_in", self.dtype,
                 padding="VALID"))
    x = stem(images.astype(self.dtype))
    levels = len(self.channel_multipliers)
    for level, mult in enumerate(self.channel_multipliers):
      for i in range(self.blocks_per_level):
        x = ResBlock(self.channels * mult, self.norm_groups, self.dtype,
                     name=f"level{level}_block{i}")(x)
      if level < levels - 1:
        x = Downsample(self.dtype, name=f"level{level}_down")(x)
    x = ResBlock(x.shape[-1], self.norm_groups, self.dtype, name="mid_block")(x)
    x = nn.swish(group_norm(self.norm_groups, x.shape[-1], "norm_out", self.dtype)(x))
    return conv(self.out_channels, name="conv_out", dtype=self.dtype)(x).astype(jnp.float32)
