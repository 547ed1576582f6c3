"""Vision Transformer image encoder; its patch embedding and transformer tail serve the
audio, video and sensor encoders too."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from multimodal.models import partitioning as p
from multimodal.models import variants
from multimodal.models.features import Features
from multimodal.models.pooling import MapPooling, pool
from multimodal.models.posemb import AddPositionEmbedding
from multimodal.models.registry import ENCODERS
from multimodal.models.transformer import Encoder


class ConvStem(nn.Module):
  """3x3 stride-2 convolutions, then a convolution (at least 3x3) for the remaining stride.

  Small objects fall across several patches of a plain patch embedding; a few convolutions
  first give each token a receptive field that sees whole shapes (Xiao et al., 2021).
  """
  channels: Sequence[int]
  width: int
  patch_size: int
  norm: bool = True  # LayerNorm over channels after each convolution
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """float[B, H, W, C] -> float[B, H / patch_size, W / patch_size, width]."""
    stride = 1
    x = images
    for i, ch in enumerate(self.channels):
      x = nn.Conv(ch, (3, 3), strides=2, padding="SAME", dtype=self.dtype, name=f"conv{i}",
                  kernel_init=p.init(nn.initializers.he_normal(), None, None, "conv_in",
                                     "conv_out"),
                  bias_init=p.init(nn.initializers.zeros, "conv_out"))(x)
      if self.norm:
        x = nn.LayerNorm(dtype=self.dtype, name=f"norm{i}",
                         scale_init=p.init(nn.initializers.ones, "conv_out"),
                         bias_init=p.init(nn.initializers.zeros, "conv_out"))(x)
      x = nn.relu(x)
      stride *= 2
    if self.patch_size % stride:
      raise ValueError(f"patch_size {self.patch_size} is not a multiple of the stem's "
                       f"stride {stride} ({len(self.channels)} stride-2 convolutions).")
    rest = self.patch_size // stride
    # At least 3x3, so that the last layer also widens the receptive field.
    kernel = max(rest, 3)
    return nn.Conv(self.width, (kernel, kernel), strides=rest, padding="SAME", dtype=self.dtype,
                   name="patchify",
                   kernel_init=p.init(nn.initializers.lecun_normal(), None, None, "conv_in",
                                      "embed"),
                   bias_init=p.init(nn.initializers.zeros, "embed"))(x)


def patch_embedding(width: int, patch: Sequence[int], dtype: jnp.dtype = jnp.float32,
                    name: str | None = None) -> nn.Conv:
  """Non-overlapping patches, each linearly embedded: a convolution with kernel = strides =
  `patch` over any number of patch dimensions (2 for images, 3 for video tubelets, ...).

  float[B, *S, C] -> float[B, *(S // patch), width] (a remainder of S is dropped).
  """
  return nn.Conv(width, tuple(patch), strides=tuple(patch), padding="VALID", dtype=dtype,
                 name=name,
                 kernel_init=p.init(nn.initializers.lecun_normal(), *(None,) * len(patch),
                                    "conv_in", "embed"),
                 bias_init=p.init(nn.initializers.zeros, "embed"))


def encode_tokens(module: nn.Module, x: jax.Array, mask: jax.Array, size: dict[str, int],
                  pool_type: str, *, train: bool, key_bias: bool = False, prefix: str = "",
                  attention: np.ndarray | None = None) -> Features:
  """What follows the embedding in every ViT-style encoder: a class token in front (param
  `{prefix}cls`, only for pool_type "cls"), dropout, the `Encoder` (`{prefix}encoder`) and
  pooling (`{prefix}map` for "map").

  Call it inside `module`'s compact method: the params are `module`'s own, and its `dropout`,
  `dtype`, `remat`, `remat_policy` and `scan_layers` fields set the rest. `size`: the
  resolved depth, num_heads and mlp_dim (see `variants.resolve`).
  x: float[B, T, D]; mask: bool[B, T] -> Features over [B, T (+1 for cls), D].
  attention: bool[T, T] or None: which tokens each token may attend to besides padding (e.g.
  `time_padding.local_attention`); a class token attends to and is seen by every token.
  """
  batch, _, width = x.shape
  if pool_type == "cls":
    cls = module.param(f"{prefix}cls", p.init(nn.initializers.zeros, None, None, "embed"),
                       (1, 1, width))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (batch, 1, width)), x], axis=1)
    mask = jnp.concatenate([jnp.ones((batch, 1), bool), mask], axis=1)
    if attention is not None:
      attention = np.pad(attention, ((1, 0), (1, 0)), constant_values=True)
  pairs = mask if attention is None else mask[:, None, :] & jnp.asarray(attention)[None]
  x = nn.Dropout(module.dropout)(x, deterministic=not train)
  x = Encoder(size["depth"], size["num_heads"], size["mlp_dim"], module.dropout, module.dtype,
              remat=module.remat, remat_policy=module.remat_policy,
              scan_layers=module.scan_layers, key_bias=key_bias,
              name=f"{prefix}encoder")(x, pairs, train=train)
  map_pool = (MapPooling(size["num_heads"], size["mlp_dim"], module.dtype, key_bias,
                         name=f"{prefix}map")
              if pool_type == "map" else None)
  return Features(tokens=x, mask=mask, pooled=pool(pool_type, x, mask, map_pool))


@ENCODERS.register("vit")
class ViT(nn.Module):
  """Images -> patch tokens -> pre-LN transformer -> Features.

  Attributes:
    variant: a size name from `variants.VARIANTS`; width/depth/mlp_dim/num_heads override it.
    patch_size: total stride from pixels to tokens.
    stem: "patch" (one strided convolution) or "conv" (`stem_channels` 3x3 stride-2 convs,
      each followed by a LayerNorm over channels when `stem_norm`).
    posemb: "learn" or "sincos2d".
    pool_type: "cls" (adds a class token), "gap", "map" or "none".
    remat, remat_policy, scan_layers: how the transformer blocks run (see `Encoder`).
    key_bias: give the attentions' key projections a bias (SigLIP checkpoints have one).
  """
  variant: str | None = "tiny"
  width: int | None = None
  depth: int | None = None
  mlp_dim: int | None = None
  num_heads: int | None = None
  patch_size: int = 8
  stem: str = "patch"
  stem_channels: Sequence[int] = (32, 64)
  stem_norm: bool = True
  posemb: str = "learn"
  pool_type: str = "gap"
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  scan_layers: bool = False
  key_bias: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> Features:
    """images: float[B, H, W, C] -> Features(tokens float[B, T, D], mask, pooled float[B, D])."""
    size = variants.resolve(self.variant, width=self.width, depth=self.depth,
                            mlp_dim=self.mlp_dim, num_heads=self.num_heads)
    if self.stem == "conv":
      x = ConvStem(self.stem_channels, size["width"], self.patch_size, self.stem_norm,
                   self.dtype, name="stem")(images.astype(self.dtype))
    elif self.stem == "patch":
      x = patch_embedding(size["width"], (self.patch_size,) * 2, self.dtype, "stem")(
          images.astype(self.dtype))
    else:
      raise ValueError(f"Unknown ViT stem {self.stem!r}; use 'patch' or 'conv'.")
    batch, grid_h, grid_w, width = x.shape
    x = jnp.reshape(x, (batch, grid_h * grid_w, width))
    x = AddPositionEmbedding(self.posemb, (grid_h, grid_w), name="posemb")(x)
    return encode_tokens(self, x, jnp.ones((batch, grid_h * grid_w), bool), size,
                         self.pool_type, train=train, key_bias=self.key_bias)
