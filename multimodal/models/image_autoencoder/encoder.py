"""The convolutional encoder: images -> a feature grid 2^(levels - 1) times smaller."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.image_autoencoder.blocks import Downsample, ResBlock, conv, group_norm


class ConvEncoder(nn.Module):
  """conv_in, then per level `blocks_per_level` residual blocks of width channels * mult and
  (except after the last level) a stride-2 convolution; a residual block, GroupNorm, swish and
  a 3x3 convolution to `out_channels` (what the quantizer reads)."""
  channels: int
  channel_multipliers: Sequence[int]
  blocks_per_level: int
  out_channels: int
  norm_groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """float[B, H, W, 3] -> float32[B, H / f, W / f, out_channels], f = 2^(levels - 1)."""
    x = conv(self.channels, name="conv_in", dtype=self.dtype)(images.astype(self.dtype))
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
