"""PaLI (Chen et al. 2022), encoder-decoder: a multimodal encoder reads the ViT's projected
patch tokens and the prompt together (bidirectional, padding masked); a text decoder writes
the answer with causal self-attention, cross-attention to the encoder's output and an MLP.

Both stacks are Gemma-style blocks (`gemma.Block`: RMSNorm, rotary positions, multi-query or
grouped-query attention, gated GELU), so `pali` and `paligemma` differ only in how they split
the sequence: paligemma runs image + prompt + answer through one stack under a prefix-LM mask;
pali runs image + prompt through the encoder and the answer through the decoder. The Gemma
decoder already keeps the explicit key/value cache decoding needs, and rotary positions need
no position table for the prompt. One token embedding serves the encoder's prompt, the
decoder's input and its output (tied), as PaLI's mT5 shares its vocabulary embedding.

Batch keys as paligemma's: image float[B, H, W, 3]; text_tokens int32[B, T] (prompt then
answer); text_mask bool[B, T] (real tokens); prefix_mask bool[B, T] (BOS + prompt). The real
prefix goes to the encoder. The decoder reads the prefix's last real token (its start token)
and then the answer, so its logits at each text position are those of the next token, aligned
as paligemma's: `paligemma.answer_loss` and the image_to_text task apply unchanged. Every
example needs at least one real prefix token (BOS).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import decoding, gemma, paligemma
from multimodal.models.registry import ENCODERS, MODELS

Spec = dict[str, Any]


def encoder_text_mask(batch: dict[str, jax.Array]) -> jax.Array:
  """bool[B, T]: the text tokens the encoder reads, the real prefix."""
  return batch["text_mask"].astype(bool) & batch["prefix_mask"].astype(bool)


def last_prefix_index(batch: dict[str, jax.Array]) -> jax.Array:
  """int32[B]: the position of each example's last real prefix token (the decoder's start)."""
  mask = encoder_text_mask(batch)
  return jnp.argmax(jnp.where(mask, jnp.arange(mask.shape[1]), -1), axis=1).astype(jnp.int32)


def decoder_text_mask(batch: dict[str, jax.Array]) -> jax.Array:
  """bool[B, T]: the text tokens the decoder reads, the start token and the real answer."""
  start = jnp.arange(batch["text_tokens"].shape[1])[None] == last_prefix_index(batch)[:, None]
  return start | (batch["text_mask"].astype(bool) & ~batch["prefix_mask"].astype(bool))


class MultimodalEncoder(nn.Module):
  """Gemma blocks over [image tokens; prompt], every real token seeing every other, then
  RMSNorm."""
  config: gemma.GemmaConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, input_mask: jax.Array, *, train: bool) -> jax.Array:
    """x: float[B, N, D]; input_mask: bool[B, N] real tokens -> float[B, N, D]."""
    positions = gemma.token_positions(input_mask)
    # With every real token in the prefix, the prefix-LM mask is bidirectional.
    mask = gemma.prefix_lm_mask(input_mask, input_mask)
    for i in range(self.config.depth):
      x, _ = gemma.Block(self.config, self.dtype, name=f"block{i}")(x, positions, mask, None, 0,
                                                                    train=train)
    return gemma.RMSNorm(self.config.norm_eps, name="final_norm")(x)


@MODELS.register("pali")
class Pali(nn.Module):
  """Attributes:
    image: the image encoder's spec (`{'type': 'vit', ...}`; its tokens are used, not pooled).
    decoder: `GemmaConfig` fields except vocab_size and cross_attention (width, depth,
      num_heads, num_kv_heads, head_dim, mlp_dim, ...); the encoder's blocks share the sizes.
    encoder_depth: the number of multimodal encoder blocks.
    vocab_size: the tokenizer's vocabulary size (filled in from the data config).
    dtype: compute dtype name; parameters stay float32.
  """
  image: Spec
  decoder: Spec
  encoder_depth: int
  vocab_size: int
  dtype: str = "float32"

  @property
  def decoder_config(self) -> gemma.GemmaConfig:
    return gemma.GemmaConfig(vocab_size=self.vocab_size, cross_attention=True, **self.decoder)

  def free_decoder(self) -> gemma.GemmaDecoder:
    """A decoder outside this module, for params["text_decoder"] (decoding runs it with its
    cache)."""
    return gemma.GemmaDecoder(self.decoder_config, jnp.dtype(self.dtype), parent=None)

  def setup(self):
    dtype, config = jnp.dtype(self.dtype), self.decoder_config
    self.image_encoder = ENCODERS.build(self.image, dtype=dtype)
    self.projector = paligemma.image_projector(config.width, dtype)
    self.encoder = MultimodalEncoder(
        dataclasses.replace(config, depth=self.encoder_depth, cross_attention=False), dtype)
    self.text_decoder = gemma.GemmaDecoder(config, dtype)

  def encode(self, batch: dict[str, jax.Array], *, train: bool = False
             ) -> tuple[jax.Array, jax.Array]:
    """-> (the encoder's output float[B, N + T, D] for N image tokens then the text, its real
    tokens bool[B, N + T]: the image and the prefix)."""
    features = self.image_encoder(batch["image"], train=train)
    text = self.text_decoder.embed_tokens(batch["text_tokens"])
    x, mask = paligemma.prepend_image(self.projector(features.tokens), features.mask, text,
                                      encoder_text_mask(batch))
    return self.encoder(x, mask, train=train), mask

  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> jax.Array:
    """-> float32[B, T, V]: at each position the decoder reads, the logits of the next token;
    0 elsewhere (the prompt before its last token, padding)."""
    context, context_mask = self.encode(batch, train=train)
    reads = decoder_text_mask(batch)
    logits, _ = self.text_decoder(
        self.text_decoder.embed_tokens(batch["text_tokens"]), gemma.token_positions(reads),
        gemma.prefix_lm_mask(reads, jnp.zeros_like(reads)),  # no prefix: causal
        context=context, context_mask=context_mask, train=train)
    return jnp.where(reads[..., None], logits, 0.0)

  def prime(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """-> (the encoder's output and mask as `encode`, the decoder's first input float[B, 1, D]:
    the embedded start token)."""
    start = jnp.take_along_axis(batch["text_tokens"], last_prefix_index(batch)[:, None], axis=1)
    return *self.encode(batch), self.text_decoder.embed_tokens(start)

  @nn.nowrap
  def generate(self, params: Any, batch: dict[str, jax.Array], config: decoding.DecodeConfig,
               rng: jax.Array | None = None) -> jax.Array:
    """`generate` below, as a method (decoding.TextGenerator)."""
    return generate(self, params, batch, config, rng)


def start_decoding(model: Pali, params: Any, batch: dict[str, jax.Array], max_new_tokens: int,
                   copies: int = 1) -> tuple[decoding.StepFn, tuple[Any, ...]]:
  """The encoder run once (its keys and values go into the decoder's cache) and the decoder
  primed with the start token, each example repeated `copies` times -> `gemma.start_decoding`'s
  (step function, the arguments of `decoding.decode` / `decoding.beam_search` after it)."""
  context, context_mask, first = model.apply({"params": params}, batch, method=Pali.prime)
  real = jnp.ones(first.shape[:2], bool)
  return gemma.start_decoding(model.free_decoder(), params["text_decoder"], first, real, real,
                              max_new_tokens, copies, context, context_mask)


def generate(model: Pali, params: Any, batch: dict[str, jax.Array],
             config: decoding.DecodeConfig, rng: jax.Array | None = None) -> jax.Array:
  """Answers int32[B, max_new_tokens] to the prompts (the prefix: `text_tokens` where
  `text_mask` and `prefix_mask`) about the images; `pad_id` after EOS. Beam search when
  config.beam_size > 1."""
  step, start = start_decoding(model, params, batch, config.max_new_tokens, config.beam_size)
  return decoding.generate(step, *start, config, rng)
