"""The Diffusion Transformer (Peebles & Xie, 2023) with cross-attention to the prompt: model
`dit`.

The noisy input is cut into patches (a strided convolution), given 2-D sin-cos or learned
position embeddings, and run through transformer blocks conditioned by adaLN-Zero: the
timestep-and-prompt vector regresses, per block, a shift, scale and gate for each of the
block's branches (self-attention, cross-attention to the prompt's tokens, MLP), with the
regression initialised to zero, so every block starts as the identity; the final layer
(adaLN, then a linear map back to patches) starts at zero too, so the initial output is 0
whatever the input.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.attention import MultiHeadAttention
from multimodal.models.diffusion.conditioning import ConditionEmbedding
from multimodal.models.diffusion.model import TextToImageDiffusion
from multimodal.models.features import Features
from multimodal.models.posemb import AddPositionEmbedding
from multimodal.models.registry import MODELS
from multimodal.models.transformer import Mlp, stack_layers


def zero_dense(features: int, name: str, dtype: jnp.dtype) -> nn.Dense:
  """A Dense layer initialised to zero (adaLN-Zero's modulation and DiT's output layer)."""
  return nn.Dense(features, dtype=dtype, name=name,
                  kernel_init=p.init(nn.initializers.zeros, "embed", None),
                  bias_init=p.init(nn.initializers.zeros, None))


def modulations(cond: jax.Array, count: int, width: int, name: str, dtype: jnp.dtype
                ) -> list[jax.Array]:
  """float[B, E] -> `count` float[B, 1, width] vectors regressed from swish(cond), all zero
  at initialisation."""
  out = zero_dense(count * width, name, dtype)(nn.swish(cond))
  return [m[:, None, :] for m in jnp.split(out, count, axis=-1)]


def modulated_norm(x: jax.Array, shift: jax.Array, scale: jax.Array, name: str,
                   dtype: jnp.dtype) -> jax.Array:
  """LayerNorm without its own affine params, then x * (1 + scale) + shift."""
  h = nn.LayerNorm(use_scale=False, use_bias=False, dtype=dtype, name=name)(x)
  return h * (1.0 + scale) + shift


class DiTBlock(nn.Module):
  """x + gate * Branch(LN(x) * (1 + scale) + shift) for the branches self-attention,
  cross-attention to the prompt and MLP, each with its own shift, scale and gate."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, text: Features, *, train: bool
               ) -> jax.Array:
    """x: float[B, N, D]; cond: float[B, E]; text: the prompt's Features -> float[B, N, D]."""
    mods = modulations(cond, 9, x.shape[-1], "adaLN_modulation", self.dtype)
    drop = lambda h: nn.Dropout(self.dropout)(h, deterministic=not train)
    attention = lambda name: MultiHeadAttention(self.num_heads, self.dtype, name=name)
    h = modulated_norm(x, mods[0], mods[1], "ln_self", self.dtype)
    x = x + mods[2] * drop(attention("self_attention")(h))
    h = modulated_norm(x, mods[3], mods[4], "ln_cross", self.dtype)
    x = x + mods[5] * drop(attention("cross_attention")(
        h, text.tokens.astype(self.dtype), mask=text.mask[:, None, :]))
    h = modulated_norm(x, mods[6], mods[7], "ln_mlp", self.dtype)
    return x + mods[8] * drop(Mlp(self.mlp_dim, self.dropout, self.dtype, name="mlp")(
        h, train=train))


class DiT(nn.Module):
  """Attributes:
    patch_size: the side of the square patches (the input's height and width must divide by
      it).
    width, depth, num_heads, mlp_dim (None: 4 * width): the transformer's sizes.
    posemb: "sincos2d" (fixed) or "learn".
    dropout: in the blocks' branches.
  """
  patch_size: int = 2
  width: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int | None = None
  posemb: str = "sincos2d"
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, text: Features, *, train: bool) -> jax.Array:
    """x: float[B, H, W, C] noisy input; t: int32[B]; text: the prompt's Features
    -> float[B, H, W, C]."""
    batch, height, width, channels = x.shape
    patch = self.patch_size
    if height % patch or width % patch:
      raise ValueError(f"DiT patch_size {patch} does not divide the input's {height}x{width}.")
    grid = (height // patch, width // patch)
    tokens = nn.Conv(self.width, (patch, patch), strides=patch, padding="VALID",
                     dtype=self.dtype, name="patch_embedding",
                     kernel_init=p.init(nn.initializers.xavier_uniform(), None, None,
                                        "conv_in", "embed"),
                     bias_init=p.init(nn.initializers.zeros, "embed"))(x.astype(self.dtype))
    tokens = tokens.reshape(batch, grid[0] * grid[1], self.width)
    tokens = AddPositionEmbedding(self.posemb, grid=grid, name="posemb")(tokens)
    cond = ConditionEmbedding(self.width, self.dtype, name="condition")(
        t, text.pooled.astype(self.dtype))
    make_block = functools.partial(DiTBlock, self.num_heads, self.mlp_dim or 4 * self.width,
                                   self.dropout, self.dtype)
    tokens = stack_layers(make_block, self.depth, tokens, cond, text, train=train)

    shift, scale = modulations(cond, 2, self.width, "final_modulation", self.dtype)
    tokens = modulated_norm(tokens, shift, scale, "ln_final", self.dtype)
    out = zero_dense(patch * patch * channels, "to_patches", self.dtype)(tokens)
    out = out.reshape(batch, *grid, patch, patch, channels)
    return out.transpose(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


@MODELS.register("dit")
class DiffusionTransformer(TextToImageDiffusion):
  """Text-to-image diffusion with the DiT above (`network`: `DiT`'s settings)."""
  network_class = DiT
