"""Audio spectrogram transformer (AST / MBT): log-mel patches -> pre-LN transformer."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from multimodal.models.encoder_settings import EncoderSettings
from multimodal.models.features import Features
from multimodal.models.posemb import AddPositionEmbedding
from multimodal.models.registry import ENCODERS
from multimodal.models.time_padding import local_attention, pad_to_patches, time_mask
from multimodal.models.vit import encode_tokens, patch_embedding


@ENCODERS.register("audio_encoder")
class AudioEncoder(EncoderSettings):
  """Log-mel spectrogram -> non-overlapping time x frequency patches -> Features.

  Input: float[B, F, M], F time frames by M mel bins (the `log_mel` pp op's output, batched),
  and optionally bool[B, F], True for real frames (clips of different lengths in a batch).
  Tokens lie on a grid of (Tp, Fp) = (ceil(F / patch_time), M / patch_freq) patches in
  time-major order: token t * Fp + f covers frames [t * patch_time, (t + 1) * patch_time) and
  mel bins [f * patch_freq, (f + 1) * patch_freq); with pool_type "cls" a class token comes
  first. F need not be a multiple of patch_time: the spectrogram is zero-padded at the end,
  padded frames are zeroed, and `Features.mask` marks the patches with at least one real frame
  (nothing depends on the padded frames' values). M must be a multiple of patch_freq.

  Attributes:
    variant: a size name from `variants.VARIANTS`; width/depth/mlp_dim/num_heads override it.
    patch_time, patch_freq: a patch's extent in frames and in mel bins (MBT: 16 x 16).
    posemb: this encoder's own position embeddings: "learn" (a table of Tp * Fp rows, so
      the time length is fixed at init) or "sincos2d" over the (time, frequency) grid.
    pool_type: "cls" (adds a class token), "gap" (over real patches), "map" or "none".
    remat, remat_policy, scan_layers: how the transformer blocks run (see `Encoder`).
  """
  patch_time: int = 16
  patch_freq: int = 16
  posemb: str = "learn"
  pool_type: str = "gap"

  @nn.compact
  def __call__(self, spectrogram: jax.Array, mask: jax.Array | None = None, *,
               train: bool) -> Features:
    """spectrogram: float[B, F, M]; mask: bool[B, F] or None ->
    Features(tokens float[B, (1 +) Tp * Fp, D], mask bool[B, (1 +) Tp * Fp], pooled)."""
    if spectrogram.ndim != 3:
      raise ValueError("audio_encoder: the spectrogram must be float[B, frames, mel_bins], "
                       f"got shape {list(spectrogram.shape)}.")
    if self.patch_time < 1 or self.patch_freq < 1:
      raise ValueError(f"audio_encoder: patch_time={self.patch_time} and "
                       f"patch_freq={self.patch_freq} must be >= 1.")
    mel_bins = spectrogram.shape[2]
    if mel_bins % self.patch_freq:
      raise ValueError(f"audio_encoder: {mel_bins} mel bins are not a multiple of "
                       f"patch_freq={self.patch_freq}.")
    size = self.sizes()
    frames = time_mask(spectrogram, mask, "audio_encoder")
    x, patches = pad_to_patches(spectrogram.astype(self.dtype), frames, self.patch_time)
    x = patch_embedding(size["width"], (self.patch_time, self.patch_freq), self.dtype,
                        "stem")(x[..., None])
    batch, grid_t, grid_f, width = x.shape
    x = jnp.reshape(x, (batch, grid_t * grid_f, width))  # time-major
    x = AddPositionEmbedding(self.posemb, (grid_t, grid_f), name="posemb")(x)
    token_mask = jnp.repeat(patches, grid_f, axis=1)
    attention = local_attention(np.repeat(np.arange(grid_t), grid_f), self.time_window)
    return encode_tokens(self, x, token_mask, size, self.pool_type, train=train,
                         attention=attention)
