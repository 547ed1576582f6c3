"""Masked data modeling for BEiT-3 on image-text pairs: some text tokens replaced by the mask
token and predicted (masked language modeling), some image patches replaced by the encoder's
mask token and reconstructed (masked image modeling with pixel targets), both in one pass
over the joint sequence, so that each modality's blanks are filled from the other as well.

BEiT-3 masks 50% of the text of image-text pairs and 40% of the patches (block-wise, with
discrete visual-token targets from a separate tokenizer); here the patches are drawn one by
one and the targets are the patch's pixels, normalised per patch (MAE's norm_pix_loss).

The masks are drawn in the model from the "dropout" RNG in training; in evaluation from a
fixed key, so that two evaluations of the same params agree.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models.beit3 import Beit3Encoder
from multimodal.models.beit3_models import encoder_config, linear, text_padding
from multimodal.models.fusion_vqa import compute_dtype
from multimodal.models.registry import MODELS

Spec = dict[str, Any]


def patch_pixels(image: jax.Array, patch_size: int) -> jax.Array:
  """float[B, H, W, C] -> float[B, (H / p) * (W / p), p * p * C], patches in row-major order
  (the encoder's), each patch's pixels row by row."""
  b, h, w, c = image.shape
  p = patch_size
  x = image.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def normalize_patches(pixels: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Each patch's pixels float[..., F] to zero mean and unit variance (MAE's targets)."""
  mean = jnp.mean(pixels, axis=-1, keepdims=True)
  var = jnp.var(pixels, axis=-1, keepdims=True)
  return (pixels - mean) / jnp.sqrt(var + eps)


def draw_text_mask(rng: jax.Array, text_mask: jax.Array, rate: float) -> jax.Array:
  """bool[B, T]: real tokens after the first (BOS, the language CLS) chosen with probability
  `rate`; at least one per example that has one."""
  candidates = jnp.asarray(text_mask, bool).at[:, 0].set(False)
  scores = jax.random.uniform(rng, text_mask.shape)
  chosen = (scores < rate) & candidates
  # The candidate with the lowest score is always chosen, so no example goes unmasked.
  lowest = jnp.argmin(jnp.where(candidates, scores, 2.0), axis=1)
  forced = jax.nn.one_hot(lowest, text_mask.shape[1], dtype=bool) & candidates
  return chosen | forced


def draw_patch_mask(rng: jax.Array, batch: int, num_patches: int, rate: float) -> jax.Array:
  """bool[B, P]: exactly round(rate * P) patches per example, chosen uniformly."""
  count = max(1, int(round(rate * num_patches)))
  order = jnp.argsort(jax.random.uniform(rng, (batch, num_patches)), axis=1)
  return jnp.argsort(order, axis=1) < count  # each patch's rank among its example's


@MODELS.register("beit3_mdm")
class Beit3MaskedDataModeling(nn.Module):
  """Attributes:
    encoder: `Beit3Config` fields except vocab_size (see beit3_models).
    vocab_size, mask_id: the tokenizer's size and its mask piece (from the task).
    text_mask_rate: the share of text tokens (after BOS) masked.
    image_mask_rate: the share of patches masked.
    dtype: compute dtype name; parameters stay float32.
  Batch keys: image float[B, H, W, 3]; text_tokens int32[B, T]; text_mask bool[B, T].
  """
  encoder: Spec
  vocab_size: int
  mask_id: int
  text_mask_rate: float = 0.5
  image_mask_rate: float = 0.4
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    """-> text_logits float32[B, T, V], text_targets int32[B, T], text_weights float32[B, T]
    (1 at masked tokens); image_predictions and image_targets float32[B, P, p * p * 3],
    image_weights float32[B, P] (1 at masked patches)."""
    dtype = compute_dtype(self.dtype)
    config = encoder_config(self.encoder, self.vocab_size)
    rng = self.make_rng("dropout") if train else jax.random.key(0)
    text_rng, image_rng = jax.random.split(rng)
    tokens, image = batch["text_tokens"], batch["image"]
    masked_text = draw_text_mask(text_rng, batch["text_mask"], self.text_mask_rate)
    masked_patches = draw_patch_mask(image_rng, image.shape[0], config.num_patches,
                                     self.image_mask_rate)
    out = Beit3Encoder(config, dtype, name="beit3")(
        image, jnp.where(masked_text, self.mask_id, tokens), text_padding(batch),
        image_mask=masked_patches, train=train)
    split = out.split_position
    text_logits = linear(self.vocab_size, "mlm_head", "embed", "vocab", dtype)(
        out.hidden[:, split:])
    pixels = patch_pixels(image.astype(jnp.float32), config.patch_size)
    predictions = linear(pixels.shape[-1], "mim_head", "embed", None, dtype)(
        out.hidden[:, 1:split])
    return {"text_logits": text_logits.astype(jnp.float32), "text_targets": tokens,
            "text_weights": masked_text.astype(jnp.float32),
            "image_predictions": predictions.astype(jnp.float32),
            "image_targets": normalize_patches(pixels),
            "image_weights": masked_patches.astype(jnp.float32)}
