"""DALL-E-style text to image: an autoregressive transformer over [prompt; image tokens] (the
prompt a bidirectional prefix, the image's codes causal, in row-major order), trained with
cross-entropy on the image tokens only.

The sequence is [prompt (T); start; code_0 .. code_{N-2}]: a learned start-of-image token
(every sequence has one, even with the prompt removed) predicts code_0, and code_i predicts
code_{i+1}. Sampling runs on the device (`generate_images`): the prompt and the start token
fill a key/value cache (`gemma.prefill`), then `decoding.decode`'s compiled loop draws the N
codes one by one (temperature, top-k, top-p), with classifier-free guidance ("super
conditioning") over 2B rows (each prompt, then the same row without it) whose logits are
mixed before each draw; the frozen tokenizer decodes the codes to the image.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import decoding, gemma
from multimodal.models import partitioning as p
from multimodal.models.image_token_transformer import (Batch, ImageTokenTransformer,
                                                       SamplingConfig, mix_guidance,
                                                       with_empty_prompts)
from multimodal.models.registry import MODELS


@MODELS.register("dalle")
class DallE(ImageTokenTransformer):
  """The autoregressive model; its settings are `ImageTokenTransformer`'s."""

  def setup(self):
    super().setup()
    self.image_start = self.param(
        "image_start", p.init(nn.initializers.normal(stddev=0.02), "embed"),
        (self.decoder_config.width,))

  def embed(self, text_tokens: jax.Array, text_mask: jax.Array, image_inputs: jax.Array
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """int[B, T] prompt, bool[B, T] its real tokens, int[B, M] the first M (< N) codes ->
    (embeddings float[B, T + 1 + M, D] of [prompt; start; codes], real tokens bool, prefix
    bool: the prompt)."""
    batch, length = text_tokens.shape
    start = jnp.broadcast_to(self.image_start.astype(jnp.dtype(self.dtype)),
                             (batch, 1, self.decoder_config.width))
    start = start * jnp.sqrt(jnp.float32(self.decoder_config.width)).astype(start.dtype)
    image = jnp.concatenate([start + self.image_position[:1].astype(start.dtype),
                             self.embed_image(image_inputs, 1)], axis=1)
    image_mask = jnp.ones(image.shape[:2], bool)
    return (jnp.concatenate([self.embed_text(text_tokens), image], axis=1),
            jnp.concatenate([text_mask.astype(bool), image_mask], axis=1),
            jnp.concatenate([jnp.ones((batch, length), bool), ~image_mask], axis=1))

  def logits(self, text_tokens: jax.Array, text_mask: jax.Array, image_tokens: jax.Array,
             *, train: bool = False) -> jax.Array:
    """float32[B, N, K]: at image position i, the logits of code i given the prompt and the
    codes before it (int[B, N]; the last is not read)."""
    embeds, input_mask, prefix = self.embed(text_tokens, text_mask, image_tokens[:, :-1])
    return self.run(embeds, input_mask, prefix, train)[:, text_tokens.shape[1]:]

  def __call__(self, batch: Batch, *, train: bool) -> dict[str, jax.Array]:
    """-> logits float32[B, N, K], targets int32[B, N] (the image's codes), weights
    float32[B, N] (all ones: every image token is predicted)."""
    targets = self.targets(batch)
    logits = self.logits(batch["text_tokens"], self.prompt_mask(batch["text_mask"], train),
                         targets, train=train)
    return {"logits": logits, "targets": targets,
            "weights": jnp.ones(targets.shape, jnp.float32)}

  @nn.nowrap
  def sample_tokens(self, variables: Any, text_tokens: jax.Array, text_mask: jax.Array,
                    config: SamplingConfig, rng: jax.Array | None = None) -> jax.Array:
    return sample_tokens(self, variables, text_tokens, text_mask, config, rng)


def sample_tokens(model: DallE, variables: Any, text_tokens: jax.Array, text_mask: jax.Array,
                  config: SamplingConfig, rng: jax.Array | None = None,
                  guided: bool | None = None) -> jax.Array:
  """int32[B, N]: codes drawn one by one after each prompt (int[B, T], bool[B, T]), through
  the key/value cache, in `decoding.decode`'s compiled loop.

  guided: run the unconditional rows and mix the logits (default: when guidance_scale is
  not 1; with scale 1 the mix is the conditional logits, up to rounding).
  """
  guided = config.guidance_scale != 1 if guided is None else guided
  length = text_tokens.shape[1]
  num = model.num_image_tokens
  if guided:
    text_tokens, text_mask = with_empty_prompts(text_tokens, text_mask)
  rows = text_tokens.shape[0]
  embeds, input_mask, prefix = model.apply(variables, text_tokens, text_mask,
                                           jnp.zeros((rows, 0), jnp.int32),
                                           method=DallE.embed)
  decoder, params = model.free_decoder(), variables["params"]["transformer"]
  # [prompt; start] then N codes fed back (the last one's step is never read).
  logits, cache, key_mask, positions = gemma.prefill(decoder, params, embeds, input_mask,
                                                     prefix, length + 1 + num)

  def embed(tokens: jax.Array, slot: jax.Array) -> jax.Array:
    """The code drawn for grid position slot - length - 1, fed at grid position + 1."""
    tokens = jnp.concatenate([tokens, tokens]) if guided else tokens
    return model.apply(variables, tokens[:, None], slot - length,
                       method=DallE.embed_image)

  step = gemma.step_fn(decoder, params, embed=embed)
  mix = (lambda x: mix_guidance(x, config.guidance_scale)) if guided else (lambda x: x)

  def mixed_step(tokens, positions, cache, slot, key_mask):
    logits, cache = step(tokens, positions, cache, slot, key_mask)
    return mix(logits), cache

  return decoding.decode(mixed_step, mix(logits), cache, key_mask, length + 1, positions,
                         config.decode_config(num), rng)
