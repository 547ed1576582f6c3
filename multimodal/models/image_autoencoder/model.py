"""The image tokenizer both text-to-image families share (model `image_autoencoder`): a
convolutional encoder, a bottleneck chosen by `quantizer`, and a convolutional decoder.

  "vq"      VQ-VAE: nearest code of an EMA codebook, straight-through gradients, commitment
            loss, dead codes restarted (vector_quantizer.py);
  "gumbel"  DALL-E's dVAE: Gumbel-softmax over the codebook, KL to the uniform prior
            (gumbel_quantizer.py);
  "kl"      latent diffusion's continuous autoencoder: a Gaussian per cell, KL to N(0, I)
            (gaussian_latent.py).
Images are float[B, H, W, 3] in [-1, 1]; the latent grid is h = w = image_size / f, with
f = patch_size * 2^(levels - 1).
Tokens are the grid's codes in row-major order.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax

from multimodal.models.fusion_vqa import compute_dtype
from multimodal.models.image_autoencoder.decoder import ConvDecoder
from multimodal.models.image_autoencoder.encoder import ConvEncoder
from multimodal.models.image_autoencoder.gaussian_latent import GaussianLatent
from multimodal.models.image_autoencoder.gumbel_quantizer import GumbelQuantizer
from multimodal.models.image_autoencoder.vector_quantizer import VectorQuantizer
from multimodal.models.registry import MODELS

QUANTIZERS = ("vq", "gumbel", "kl")
DISCRETE = ("vq", "gumbel")
DEFAULT_KL_WEIGHT = {"gumbel": 1e-3, "kl": 1e-4}


@MODELS.register("image_autoencoder")
class ImageAutoencoder(nn.Module):
  """Attributes:
    quantizer: "vq", "gumbel" or "kl".
    image_size: the images' height and width (a multiple of the downsampling factor).
    channels: the first level's width; level i has channels * channel_multipliers[i].
    channel_multipliers: one per level; the grid is patch_size * 2^(levels - 1) times smaller.
    blocks_per_level: residual blocks per level (encoder and decoder).
    patch_size: p > 1: the encoder's first layer maps each p x p patch to one cell and the
      decoder's last layer each cell back to its patch, so that no level runs at the full
      resolution (several times cheaper on a CPU; for flat-coloured synthetic scenes); 1:
      3x3 convolutions at the full resolution, as VQGAN's.
    norm_groups: GroupNorm groups (must divide every level's width).
    codebook_size: K codes (vq, gumbel).
    code_dim: the codes' width (vq, gumbel), or the latent channels C (kl).
    beta: the commitment loss weight (vq).
    ema_decay, restart_threshold, data_init, normalize_codes: the codebook's EMA decay, the
      EMA usage below which a code is restarted, whether the first training step sets every
      code from the data, and l2-normalised codes (vq; see `VectorQuantizer`).
    temperature: the Gumbel-softmax temperature in training (gumbel).
    kl_weight: the KL term's weight (gumbel: to the uniform prior; kl: to N(0, I)); None:
      `DEFAULT_KL_WEIGHT`.
    latent_scale: `encode_latents` gives latents times this (`decode_latents` divides), so a
      diffusion model sees roughly unit variance (about 1 / the `latent_std` statistic).
    dtype: compute dtype of the convolutions; the bottleneck and params stay float32.
  Batch key: image float[B, H, W, 3].
  """
  quantizer: str = "vq"
  image_size: int = 32
  channels: int = 64
  channel_multipliers: Sequence[int] = (1, 2, 2)
  blocks_per_level: int = 1
  patch_size: int = 1
  norm_groups: int = 8
  codebook_size: int = 512
  code_dim: int = 64
  beta: float = 0.25
  ema_decay: float = 0.99
  restart_threshold: float = 1.0
  data_init: bool = True
  normalize_codes: bool = False
  temperature: float = 1.0
  kl_weight: float | None = None
  latent_scale: float = 1.0
  dtype: str = "float32"

  @property
  def downsampling(self) -> int:
    return self.patch_size * 2 ** (len(self.channel_multipliers) - 1)

  @property
  def grid(self) -> int:
    """h = w, the latent grid's side."""
    return self.image_size // self.downsampling

  @property
  def discrete(self) -> bool:
    return self.quantizer in DISCRETE

  def setup(self):
    if self.quantizer not in QUANTIZERS:
      raise ValueError(f"Unknown quantizer {self.quantizer!r} (image_autoencoder setting "
                       f"`quantizer`); use one of {list(QUANTIZERS)}.")
    if not self.channel_multipliers:
      raise ValueError("channel_multipliers needs at least one level.")
    if self.patch_size < 1:
      raise ValueError(f"patch_size must be at least 1, got {self.patch_size}.")
    if self.image_size % self.downsampling:
      raise ValueError(
          f"image_size {self.image_size} is not divisible by the downsampling factor "
          f"{self.downsampling} (patch_size {self.patch_size} * 2^(levels - 1), "
          f"{len(self.channel_multipliers)} channel_multipliers).")
    kl_weight = DEFAULT_KL_WEIGHT.get(self.quantizer) if self.kl_weight is None else self.kl_weight
    if self.quantizer == "vq":
      bottleneck = VectorQuantizer(self.codebook_size, self.code_dim, self.beta, self.ema_decay,
                                   restart_threshold=self.restart_threshold,
                                   data_init=self.data_init, normalize=self.normalize_codes)
    elif self.quantizer == "gumbel":
      bottleneck = GumbelQuantizer(self.codebook_size, self.code_dim, self.temperature,
                                   kl_weight)
    else:
      bottleneck = GaussianLatent(self.code_dim, kl_weight)
    self.bottleneck = bottleneck
    dtype = compute_dtype(self.dtype)
    self.encoder = ConvEncoder(self.channels, tuple(self.channel_multipliers),
                               self.blocks_per_level, bottleneck.input_dim, self.norm_groups,
                               self.patch_size, dtype)
    self.decoder = ConvDecoder(self.channels, tuple(self.channel_multipliers),
                               self.blocks_per_level, self.norm_groups, self.patch_size, dtype)

  def _encode(self, images: jax.Array, *, train: bool) -> dict[str, Any]:
    if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
      raise ValueError(f"image_autoencoder takes images float[B, {self.image_size}, "
                       f"{self.image_size}, 3] (setting image_size); got {images.shape}.")
    return self.bottleneck(self.encoder(images), train=train)

  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, Any]:
    """-> reconstruction float32[B, H, W, 3], losses {name: weighted float32[]} (the
    quantizer's, to add to the reconstruction loss), stats {name: float32[]}, and for vq and
    gumbel codes int32[B, h * w] and code_counts float32[B, K] (each example's histogram)."""
    quantized = self._encode(batch["image"], train=train)
    outputs = {"reconstruction": self.decoder(quantized["latents"]),
               "losses": quantized["losses"], "stats": quantized["stats"]}
    if self.discrete:
      outputs["codes"] = quantized["codes"].reshape(quantized["codes"].shape[0], -1)
      outputs["code_counts"] = quantized["code_counts"]
    return outputs

  def _check_discrete(self, method: str) -> None:
    if not self.discrete:
      raise ValueError(f"{method} needs a discrete quantizer ('vq' or 'gumbel'); quantizer "
                       f"{self.quantizer!r} has continuous latents (use encode_latents).")

  def encode_tokens(self, images: jax.Array) -> jax.Array:
    """float[B, H, W, 3] -> int32[B, h * w], the codes in row-major order."""
    self._check_discrete("encode_tokens")
    codes = self._encode(images, train=False)["codes"]
    return codes.reshape(codes.shape[0], -1)

  def decode_tokens(self, tokens: jax.Array) -> jax.Array:
    """int32[B, h * w] -> float32[B, H, W, 3]."""
    self._check_discrete("decode_tokens")
    if tokens.ndim != 2 or tokens.shape[1] != self.grid ** 2:
      raise ValueError(f"decode_tokens takes int32[B, {self.grid ** 2}] ({self.grid}x"
                       f"{self.grid} grid); got {tokens.shape}.")
    codes = tokens.reshape(tokens.shape[0], self.grid, self.grid)
    return self.decoder(self.bottleneck.lookup(codes))

  def encode_latents(self, images: jax.Array) -> jax.Array:
    """float[B, H, W, 3] -> float32[B, h, w, C]: the eval-mode latents (kl: the mean; vq,
    gumbel: the codes' vectors) times latent_scale."""
    return self._encode(images, train=False)["latents"] * self.latent_scale

  def decode_latents(self, z: jax.Array) -> jax.Array:
    """float[B, h, w, C] (scaled as `encode_latents` gives them) -> float32[B, H, W, 3]."""
    return self.decoder(z / self.latent_scale)
