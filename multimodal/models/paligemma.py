"""PaLI-style generator, PaliGemma layout: a ViT's patch tokens, projected to the decoder's
width, placed before the text; one Gemma-style decoder over both with a prefix-LM mask (the
image and the prompt see each other, the answer is causal).

Batch keys: image float[B, H, W, 3]; text_tokens int32[B, T] (prompt then answer, right-
padded); text_mask bool[B, T] (real tokens); prefix_mask bool[B, T] (the prompt's tokens).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import decoding, gemma
from multimodal.models import partitioning as p
from multimodal.models.registry import ENCODERS, MODELS

Spec = dict[str, Any]


@MODELS.register("paligemma")
class PaliGemma(nn.Module):
  """Attributes:
    image: the image encoder's spec (`{'type': 'vit', ...}`; its tokens are used, not pooled).
    decoder: `GemmaConfig` fields except vocab_size (width, depth, num_heads, num_kv_heads,
      head_dim, mlp_dim, ...).
    vocab_size: the tokenizer's vocabulary size (filled in from the data config).
    dtype: compute dtype name; parameters stay float32.
  """
  image: Spec
  decoder: Spec
  vocab_size: int
  dtype: str = "float32"

  @property
  def decoder_config(self) -> gemma.GemmaConfig:
    return gemma.GemmaConfig(vocab_size=self.vocab_size, **self.decoder)

  def free_decoder(self) -> gemma.GemmaDecoder:
    """A decoder outside this module, for params["text_decoder"] (decoding runs it with its
    cache)."""
    return gemma.GemmaDecoder(self.decoder_config, jnp.dtype(self.dtype), parent=None)

  def setup(self):
    dtype = jnp.dtype(self.dtype)
    self.image_encoder = ENCODERS.build(self.image, dtype=dtype)
    self.projector = image_projector(self.decoder_config.width, dtype)
    self.text_decoder = gemma.GemmaDecoder(self.decoder_config, dtype)

  def embed(self, batch: dict[str, jax.Array], *, train: bool = False
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """-> (embeddings float[B, N + T, D] for N image tokens then the text, input mask
    bool[B, N + T], prefix mask bool[B, N + T])."""
    features = self.image_encoder(batch["image"], train=train)
    text = self.text_decoder.embed_tokens(batch["text_tokens"])
    return prepend_image(self.projector(features.tokens), features.mask, text,
                         batch["text_mask"], batch["prefix_mask"])

  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> jax.Array:
    """-> float32[B, T, V]: at each text position, the logits of the next token."""
    embeds, input_mask, prefix = self.embed(batch, train=train)
    n_text = batch["text_tokens"].shape[1]
    logits, _ = self.text_decoder(embeds, gemma.token_positions(input_mask),
                                  gemma.prefix_lm_mask(input_mask, prefix), train=train)
    return logits[:, -n_text:]

  @nn.nowrap
  def generate(self, params: Any, batch: dict[str, jax.Array], config: decoding.DecodeConfig,
               rng: jax.Array | None = None) -> jax.Array:
    """`generate` below, as a method (decoding.TextGenerator)."""
    return generate(self, params, batch, config, rng)


def image_projector(width: int, dtype: jnp.dtype) -> nn.Dense:
  """The linear map from the image encoder's tokens to the text model's width."""
  return nn.Dense(width, dtype=dtype,
                  kernel_init=p.init(nn.initializers.lecun_normal(), None, "embed"),
                  bias_init=p.init(nn.initializers.zeros, "embed"))


def prepend_image(image: jax.Array, image_mask: jax.Array, text: jax.Array,
                  input_mask: jax.Array, *text_masks: jax.Array) -> tuple[jax.Array, ...]:
  """Image tokens float[B, N, D] (bool[B, N]: the real ones; an encoder that keeps only some,
  as `object_tokens` does, masks the rest) placed before text embeddings float[B, T, D] ->
  (float[B, N + T, D], the real tokens bool[B, N + T] from the image's mask and the text's
  `input_mask` bool[B, T], then each other bool[B, T] mask over the text extended to
  bool[B, N + T], True on the image)."""
  ones = jnp.ones(image.shape[:2], bool)
  return (jnp.concatenate([image.astype(text.dtype), text], axis=1),
          jnp.concatenate([image_mask.astype(bool), input_mask.astype(bool)], axis=1),
          *(jnp.concatenate([ones, m.astype(bool)], axis=1) for m in text_masks))


def answer_loss(logits: jax.Array, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Next-token cross-entropy on the answer tokens only (real and not in the prefix).

  logits float32[B, T, V] from PaliGemma -> (mean loss over answer tokens, per-example
  float32[B] sums of answer-token losses)."""
  targets = batch["text_tokens"][:, 1:]
  weights = (batch["text_mask"][:, 1:] & ~batch["prefix_mask"][:, 1:]).astype(jnp.float32)
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0] * weights
  return jnp.sum(nll) / jnp.maximum(jnp.sum(weights), 1.0), jnp.sum(nll, axis=1)


def generate(model: PaliGemma, params: Any, batch: dict[str, jax.Array],
             config: decoding.DecodeConfig, rng: jax.Array | None = None) -> jax.Array:
  """Answers int32[B, max_new_tokens] to the prompts (the prefix: `text_tokens` where
  `text_mask`, right-padded) about the images; `pad_id` after EOS. Beam search when
  config.beam_size > 1."""
  embeds, input_mask, prefix = model.apply({"params": params}, batch, method=PaliGemma.embed)
  step, start = gemma.start_decoding(model.free_decoder(), params["text_decoder"], embeds,
                                     input_mask, prefix, config.max_new_tokens, config.beam_size)
  return decoding.generate(step, *start, config, rng)
