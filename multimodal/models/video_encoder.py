"""Video transformer (ViViT): tubelet tokens, or per-frame ViT then a temporal transformer."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from multimodal.models.encoder_settings import EncoderSettings
from multimodal.models.features import Features
from multimodal.models.posemb import AddPositionEmbedding, sincos_2d
from multimodal.models.registry import ENCODERS
from multimodal.models.time_padding import local_attention, pad_to_patches, time_mask
from multimodal.models.vit import ViT, encode_tokens, patch_embedding

KINDS = ("tubelet", "factorised")
POSEMBS = ("learn", "sincos")


def sincos_1d(length: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 1-D sin-cos embeddings: float32[length, dim] (dim even)."""
  omega = 1.0 / temperature ** (np.arange(dim // 2) / (dim // 2 - 1 or 1))
  angles = np.arange(length)[:, None] * omega[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def sincos_3d(time: int, height: int, width: int, dim: int) -> np.ndarray:
  """Fixed sin-cos embeddings over a (time, height, width) grid, time-major:
  float32[time * height * width, dim], the 2-D embedding of (h, w) (`posemb.sincos_2d`) plus
  the 1-D embedding of t over all `dim` channels."""
  space = sincos_2d(height, width, dim)
  return (sincos_1d(time, dim)[:, None, :] + space[None, :, :]).reshape(-1, dim)


@ENCODERS.register("video_encoder")
class VideoEncoder(EncoderSettings):
  """Video frames -> Features, as a tubelet or a factorised-encoder ViViT (Arnab et al., 2021).

  Input: float[B, T, H, W, C] frames (sampled by the pipeline), H and W multiples of
  patch_size; optionally bool[B, T], True for real frames. Tokens are in time-major order.

  kind="tubelet" (ViViT's tubelet embedding): non-overlapping tubelet_time x patch_size x
    patch_size tubelets, each linearly embedded (a 3-D convolution), position embeddings over
    (t, h, w), one transformer over all tokens. Tokens: a (Tt, Gh, Gw) grid with
    Tt = ceil(T / tubelet_time), Gh = H / patch_size, Gw = W / patch_size; token
    (t * Gh + h) * Gw + w is tubelet (t, h, w). T need not be a multiple of tubelet_time:
    the video is zero-padded at the end, padded frames are zeroed, and the mask marks
    tubelets with at least one real frame.
  kind="factorised" (ViViT model 2, factorised encoder): a ViT (`depth` blocks, pooled by
    `spatial_pool`) encodes each frame on its own, then a temporal transformer
    (`temporal_depth` blocks, learned position embeddings) runs over the T frame vectors.
    Tokens: one per frame, T of them (the mask is the frames' mask).
  With pool_type "cls" a class token comes first: 1 + Tt * Gh * Gw or 1 + T tokens.

  Attributes:
    variant: a size name from `variants.VARIANTS`; width/depth/mlp_dim/num_heads override it.
    temporal_depth: factorised only: the temporal transformer's blocks (None: `depth`).
    patch_size: a patch's height and width in pixels.
    tubelet_time: tubelet only: a tubelet's extent in frames.
    posemb: "learn" or "sincos" (tubelet: `sincos_3d`; factorised: the ViT's "sincos2d").
    spatial_pool: factorised only: how a frame's tokens become its vector ("cls", "gap",
      "map").
    pool_type: "cls" (adds a class token), "gap" (over real tokens), "map" or "none".
    remat, remat_policy, scan_layers: how the transformer blocks run (see `Encoder`).
  """
  kind: str = "tubelet"
  temporal_depth: int | None = None
  patch_size: int = 16
  tubelet_time: int = 2
  posemb: str = "learn"
  spatial_pool: str = "cls"
  pool_type: str = "gap"

  @nn.compact
  def __call__(self, video: jax.Array, mask: jax.Array | None = None, *,
               train: bool) -> Features:
    """video: float[B, T, H, W, C]; mask: bool[B, T] or None -> Features(tokens float[B, N, D],
    mask bool[B, N], pooled) with N as the class docstring says for each kind."""
    self._check(video)
    size = self.sizes()
    frames = time_mask(video, mask, "video_encoder")
    if self.kind == "tubelet":
      return self._tubelets(video.astype(self.dtype), frames, size, train=train)
    return self._factorised(video.astype(self.dtype), frames, size, train=train)

  def _check(self, video: jax.Array) -> None:
    if self.kind not in KINDS:
      raise ValueError(f"Unknown video_encoder kind {self.kind!r}; use one of {KINDS}.")
    if self.posemb not in POSEMBS:
      raise ValueError(f"Unknown video_encoder posemb {self.posemb!r}; use one of {POSEMBS}.")
    if self.kind == "tubelet" and self.temporal_depth is not None:
      raise ValueError("video_encoder: temporal_depth applies to kind='factorised' only.")
    if self.kind == "factorised" and self.spatial_pool == "none":
      raise ValueError("video_encoder: spatial_pool must pool each frame ('cls', 'gap' or "
                       "'map'), got 'none'.")
    if video.ndim != 5:
      raise ValueError("video_encoder: the video must be float[B, T, H, W, C], got shape "
                       f"{list(video.shape)}.")
    if video.shape[2] % self.patch_size or video.shape[3] % self.patch_size:
      raise ValueError(f"video_encoder: frames of {video.shape[2]}x{video.shape[3]} pixels "
                       f"do not divide into patches of patch_size={self.patch_size}.")
    if self.tubelet_time < 1:
      raise ValueError(f"video_encoder: tubelet_time={self.tubelet_time} must be >= 1.")

  def _tubelets(self, video: jax.Array, frames: jax.Array, size: dict[str, int], *,
                train: bool) -> Features:
    video, tubelets = pad_to_patches(video, frames, self.tubelet_time)
    x = patch_embedding(size["width"], (self.tubelet_time, self.patch_size, self.patch_size),
                        self.dtype, "stem")(video)
    batch, grid_t, grid_h, grid_w, width = x.shape
    x = jnp.reshape(x, (batch, grid_t * grid_h * grid_w, width))  # time-major
    if self.posemb == "learn":
      x = AddPositionEmbedding("learn", name="posemb")(x)
    else:
      x = x + jnp.asarray(sincos_3d(grid_t, grid_h, grid_w, width))[None].astype(x.dtype)
    mask = jnp.repeat(tubelets, grid_h * grid_w, axis=1)
    attention = local_attention(np.repeat(np.arange(grid_t), grid_h * grid_w),
                                self.time_window)
    return encode_tokens(self, x, mask, size, self.pool_type, train=train,
                         attention=attention)

  def _factorised(self, video: jax.Array, frames: jax.Array, size: dict[str, int], *,
                  train: bool) -> Features:
    batch, steps = video.shape[:2]
    spatial = ViT(variant=None, width=size["width"], depth=size["depth"],
                  mlp_dim=size["mlp_dim"], num_heads=size["num_heads"],
                  patch_size=self.patch_size, stem="patch",
                  posemb="learn" if self.posemb == "learn" else "sincos2d",
                  pool_type=self.spatial_pool, dropout=self.dropout, dtype=self.dtype,
                  remat=self.remat, remat_policy=self.remat_policy,
                  scan_layers=self.scan_layers, name="spatial")
    per_frame = spatial(jnp.reshape(video, (batch * steps,) + video.shape[2:]), train=train)
    x = jnp.reshape(per_frame.pooled, (batch, steps, size["width"]))
    x = AddPositionEmbedding("learn", name="temporal_posemb")(x)
    temporal = dict(size, depth=size["depth"] if self.temporal_depth is None
                    else self.temporal_depth)
    return encode_tokens(self, x, frames, temporal, self.pool_type, train=train,
                         prefix="temporal_",
                         attention=local_attention(np.arange(steps), self.time_window))
