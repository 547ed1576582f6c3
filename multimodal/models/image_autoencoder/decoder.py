"""The convolutional decoder: a latent grid -> images patch_size * 2^(levels - 1) times
larger."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.image_autoencoder.blocks import ResBlock, Upsample, conv, group_norm


class ConvDecoder(nn.Module):
  """The encoder's mirror: conv_in to the last level's width and a residual block, then per
  level from the last `blocks_per_level` residual blocks and (except after the first level)
  a nearest 2x upsampling and convolution; GroupNorm, swish and a 3x3 convolution to RGB
  (with patch_size p > 1: to p x p x 3 values per cell, rearranged into each cell's patch)."""
  channels: int
  channel_multipliers: Sequence[int]
  blocks_per_level: int
  norm_groups: int
  patch_size: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """float[B, h, w, C] -> float32[B, h f, w f, 3], f = patch_size * 2^(levels - 1)."""
    x = conv(self.channels * self.channel_multipliers[-1], name="conv_in",
             dtype=self.dtype)(z.astype(self.dtype))
    x = ResBlock(x.shape[-1], self.norm_groups, self.dtype, name="mid_block")(x)
    for level in reversed(range(len(self.channel_multipliers))):
      for i in range(self.blocks_per_level):
        x = ResBlock(self.channels * self.channel_multipliers[level], self.norm_groups,
                     self.dtype, name=f"level{level}_block{i}")(x)
      if level > 0:
        x = Upsample(self.dtype, name=f"level{level}_up")(x)
    x = nn.swish(group_norm(self.norm_groups, x.shape[-1], "norm_out", self.dtype)(x))
    p = self.patch_size
    x = conv(3 * p * p, name="conv_out", dtype=self.dtype)(x).astype(jnp.float32)
    if p == 1:
      return x
    b, h, w, _ = x.shape  # Each cell's p * p * 3 values -> its p x p patch.
    x = x.reshape(b, h, w, p, p, 3).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * p, w * p, 3)
