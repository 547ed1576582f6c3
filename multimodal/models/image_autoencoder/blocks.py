"""The convolutional pieces of the image autoencoder: annotated convolutions, GroupNorm,
residual blocks, and the 2x down- and upsampling steps (as in VQGAN / latent diffusion)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p


def conv(features: int, kernel: int = 3, strides: int = 1, name: str | None = None,
         dtype: jnp.dtype = jnp.float32, padding: str | tuple = "SAME") -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=strides, padding=padding, dtype=dtype,
                 name=name,
                 kernel_init=p.init(nn.initializers.lecun_normal(), None, None, "conv_in",
                                    "conv_out"),
                 bias_init=p.init(nn.initializers.zeros, "conv_out"))


def group_norm(groups: int, channels: int, name: str | None = None,
               dtype: jnp.dtype = jnp.float32) -> nn.GroupNorm:
  if groups < 1 or channels % groups:
    raise ValueError(f"norm_groups {groups} does not divide {channels} channels; choose "
                     "norm_groups dividing every level's channels * channel_multipliers[i].")
  return nn.GroupNorm(num_groups=groups, dtype=dtype, name=name,
                      scale_init=p.init(nn.initializers.ones, "conv_out"),
                      bias_init=p.init(nn.initializers.zeros, "conv_out"))


class ResBlock(nn.Module):
  """x + conv(swish(GN(conv(swish(GN(x)))))); a 1x1 convolution on the skip path when the
  width changes."""
  channels: int
  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, H, W, C] -> float[B, H, W, channels]."""
    h = nn.swish(group_norm(self.groups, x.shape[-1], "norm1", self.dtype)(x))
    h = conv(self.channels, name="conv1", dtype=self.dtype)(h)
    h = nn.swish(group_norm(self.groups, self.channels, "norm2", self.dtype)(h))
    h = conv(self.channels, name="conv2", dtype=self.dtype)(h)
    if x.shape[-1] != self.channels:
      x = conv(self.channels, 1, name="skip", dtype=self.dtype)(x)
    return x + h


class Downsample(nn.Module):
  """A 3x3 stride-2 convolution (padded by one on the bottom and right, as VQGAN's)."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, H, W, C] -> float[B, H / 2, W / 2, C]."""
    return conv(x.shape[-1], 3, 2, "conv", self.dtype, padding=((0, 1), (0, 1)))(x)


class Upsample(nn.Module):
  """Nearest-neighbour 2x upsampling, then a 3x3 convolution."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, H, W, C] -> float[B, 2 H, 2 W, C]."""
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return conv(x.shape[-1], name="conv", dtype=self.dtype)(x)
