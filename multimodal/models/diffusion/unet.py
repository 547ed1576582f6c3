"""The denoising UNet (DDPM / ADM layout) with cross-attention to the prompt: model
`diffusion_unet`.

Levels of residual blocks, each conditioned on the timestep-and-prompt vector (added after
its first convolution), go down by strided convolutions and back up by nearest-neighbour
upsampling, with every down block's output concatenated into the mirror up block. At the
`attention_levels` (and in the middle) each block is followed by self-attention over the
positions and cross-attention from the positions to the prompt's tokens; both see fixed 2-D
sin-cos position embeddings added to their queries' input, so that a word such as "left" can
bind to where a position is, not only to what is there.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.attention import MultiHeadAttention
from multimodal.models.diffusion.conditioning import ConditionEmbedding
from multimodal.models.diffusion.model import TextToImageDiffusion
from multimodal.models.features import Features
from multimodal.models.image_autoencoder.blocks import Downsample, Upsample, conv, group_norm
from multimodal.models.posemb import sincos_2d
from multimodal.models.registry import MODELS
from multimodal.models.transformer import dense, layer_norm


class TimeResBlock(nn.Module):
  """x + conv(dropout(swish(GN(conv(swish(GN(x))) + Dense(swish(cond)))))), with a 1x1
  convolution on the skip path when the width changes."""
  channels: int
  groups: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, *, train: bool) -> jax.Array:
    """x: float[B, H, W, C]; cond: float[B, E] -> float[B, H, W, channels]."""
    h = nn.swish(group_norm(self.groups, x.shape[-1], "norm1", self.dtype)(x))
    h = conv(self.channels, name="conv1", dtype=self.dtype)(h)
    h = h + dense(self.channels, "embed", "conv_out", "cond_proj", self.dtype)(
        nn.swish(cond))[:, None, None, :]
    h = nn.swish(group_norm(self.groups, self.channels, "norm2", self.dtype)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv(self.channels, name="conv2", dtype=self.dtype)(h)
    if x.shape[-1] != self.channels:
      x = conv(self.channels, 1, name="skip", dtype=self.dtype)(x)
    return x + h


class SpatialAttention(nn.Module):
  """x + SelfAttention(GN(x) + pos), then x + CrossAttention(LN(x) + pos -> prompt tokens)."""
  num_heads: int
  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, text: Features) -> jax.Array:
    """x: float[B, H, W, C]; text: the prompt's Features -> float[B, H, W, C]."""
    batch, height, width, channels = x.shape
    pos = jnp.asarray(sincos_2d(height, width, channels), self.dtype)[None]
    tokens = x.reshape(batch, height * width, channels)
    h = group_norm(self.groups, channels, "norm", self.dtype)(tokens) + pos
    tokens = tokens + MultiHeadAttention(self.num_heads, self.dtype, name="self_attention")(h)
    h = layer_norm("ln_cross", self.dtype)(tokens) + pos
    tokens = tokens + MultiHeadAttention(self.num_heads, self.dtype, name="cross_attention")(
        h, text.tokens.astype(self.dtype), mask=text.mask[:, None, :])
    return tokens.reshape(x.shape)


class UNet(nn.Module):
  """Attributes:
    channels: the first level's width; level i has channels * channel_multipliers[i].
    channel_multipliers: one per level; the input halves in size at each level after the
      first, so its height and width must divide by 2^(levels - 1).
    blocks_per_level: residual blocks per level going down (one more going up).
    attention_levels: the levels (0 = full resolution) whose blocks attend; the middle always
      does.
    num_heads: attention heads (each level's width must divide by it, and by 4 for the
      position embeddings).
    norm_groups: GroupNorm groups (must divide every level's width).
    dropout: in the residual blocks.
  """
  channels: int = 64
  channel_multipliers: Sequence[int] = (1, 2, 2)
  blocks_per_level: int = 1
  attention_levels: Sequence[int] = (1, 2)
  num_heads: int = 4
  norm_groups: int = 8
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, text: Features, *, train: bool) -> jax.Array:
    """x: float[B, H, W, C] noisy input; t: int32[B]; text: the prompt's Features
    -> float[B, H, W, C]."""
    levels = len(self.channel_multipliers)
    if not levels or any(not 0 <= i < levels for i in self.attention_levels):
      raise ValueError(f"UNet attention_levels {tuple(self.attention_levels)} must index the "
                       f"{levels} levels of channel_multipliers.")
    if x.shape[1] % 2 ** (levels - 1) or x.shape[2] % 2 ** (levels - 1):
      raise ValueError(f"The UNet's {levels} levels halve the input {levels - 1} times: its "
                       f"height and width must divide by {2 ** (levels - 1)}, got "
                       f"{x.shape[1:3]}.")
    cond = ConditionEmbedding(4 * self.channels, self.dtype, name="condition")(
        t, text.pooled.astype(self.dtype))
    block = lambda mult, name: TimeResBlock(self.channels * mult, self.norm_groups,
                                            self.dropout, self.dtype, name=name)
    attention = lambda name: SpatialAttention(self.num_heads, self.norm_groups, self.dtype,
                                              name=name)

    h = conv(self.channels, name="conv_in", dtype=self.dtype)(x.astype(self.dtype))
    skips = [h]
    for level, mult in enumerate(self.channel_multipliers):
      for i in range(self.blocks_per_level):
        h = block(mult, f"down{level}_block{i}")(h, cond, train=train)
        if level in self.attention_levels:
          h = attention(f"down{level}_attention{i}")(h, text)
        skips.append(h)
      if level < levels - 1:
        h = Downsample(self.dtype, name=f"down{level}_downsample")(h)
        skips.append(h)

    h = block(self.channel_multipliers[-1], "mid_block0")(h, cond, train=train)
    h = attention("mid_attention")(h, text)
    h = block(self.channel_multipliers[-1], "mid_block1")(h, cond, train=train)

    for level in reversed(range(levels)):
      mult = self.channel_multipliers[level]
      for i in range(self.blocks_per_level + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = block(mult, f"up{level}_block{i}")(h, cond, train=train)
        if level in self.attention_levels:
          h = attention(f"up{level}_attention{i}")(h, text)
      if level > 0:
        h = Upsample(self.dtype, name=f"up{level}_upsample")(h)

    h = nn.swish(group_norm(self.norm_groups, h.shape[-1], "norm_out", self.dtype)(h))
    return conv(x.shape[-1], name="conv_out", dtype=self.dtype)(h)


@MODELS.register("diffusion_unet")
class DiffusionUNet(TextToImageDiffusion):
  """Text-to-image diffusion with the UNet above (`network`: `UNet`'s settings)."""
  network_class = UNet
