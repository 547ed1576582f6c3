"""What the DALL-E and MaskGIT models share: a frozen image tokenizer (an `image_autoencoder`
with a discrete quantizer) that turns images into a grid of codes, and a Gemma-style
transformer over [prompt tokens; image tokens] (dalle.py: image tokens causal; maskgit.py:
bidirectional, some of them masked).

The prompt tokens have their own embedding table; the image codes share theirs with the output
head (the decoder's tied embedding, over the codebook: `GemmaDecoder` with the codebook as its
vocabulary) and get a learned embedding of their grid position (rotary positions alone are
relative, and the prompt's length moves the image's start). Prompt dropout (the prompt removed,
its text mask all False) trains the unconditional model that classifier-free guidance mixes in.

Batch keys: image float32[B, H, W, 3] in [-1, 1] (or image_tokens int32[B, N], its codes);
text_tokens int32[B, T]; text_mask bool[B, T]. Both models return {"logits" float32[B, N, K],
"targets" int32[B, N] (the image's codes), "weights" float32[B, N] (the positions the loss
counts)} for the N = h * w codes of a K-code tokenizer.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import decoding, gemma
from multimodal.models import partitioning as p
from multimodal.models.diffusion.conditioning import drop_prompts
from multimodal.models.registry import MODELS

Spec = dict[str, Any]
Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How images are sampled.

  temperature, top_k, top_p: the token sampler's (`decoding.filter_logits`); temperature 0 is
    greedy; top_k 0 and top_p 1 keep every token.
  guidance_scale: classifier-free guidance, logits uncond + s * (cond - uncond); 1: the
    conditional model alone (half the work). MaskGIT ramps it over its steps.
  steps: MaskGIT's decoding steps (unused by the autoregressive model).
  choice_temperature: MaskGIT's noise on the confidences that pick the tokens to keep,
    annealed linearly to 0 over the steps.
  """
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  guidance_scale: float = 1.0
  steps: int = 12
  choice_temperature: float = 4.5

  def __post_init__(self):
    self.decode_config(1)  # Checks the sampler's settings.
    if self.steps < 1:
      raise ValueError(f"steps (MaskGIT's decoding steps) must be at least 1, got {self.steps}.")
    if self.choice_temperature < 0:
      raise ValueError(f"choice_temperature must be >= 0, got {self.choice_temperature}.")

  def decode_config(self, num_tokens: int) -> decoding.DecodeConfig:
    """The sampler's settings as `decoding` takes them: num_tokens tokens, no EOS."""
    return decoding.DecodeConfig(max_new_tokens=num_tokens, eos_id=-1,
                                 temperature=self.temperature, top_k=self.top_k,
                                 top_p=self.top_p)


def mix_guidance(logits: jax.Array, scale: float | jax.Array) -> jax.Array:
  """float[2B, ...] (the B conditional rows, then the same B without their prompt) ->
  float[B, ...] uncond + scale * (cond - uncond)."""
  cond, uncond = jnp.split(logits, 2, axis=0)
  return uncond + scale * (cond - uncond)


def with_empty_prompts(text_tokens: jax.Array, text_mask: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
  """int[B, T], bool[B, T] -> int[2B, T], bool[2B, T]: the prompts, then the same rows with
  the prompt removed (the unconditional half of classifier-free guidance)."""
  mask = text_mask.astype(bool)
  return (jnp.concatenate([text_tokens, text_tokens]),
          jnp.concatenate([mask, jnp.zeros_like(mask)]))


class ImageTokenTransformer(nn.Module):
  """Attributes:
    autoencoder: the image tokenizer's spec (`{'type': 'image_autoencoder', 'quantizer':
      'vq' | 'gumbel', ...}`); its params (and its codebook collection) live under
      `image_tokenizer`, loaded from the tokenizer's own run and kept frozen.
    decoder: `GemmaConfig` fields except vocab_size (width, depth, num_heads, num_kv_heads,
      head_dim, mlp_dim, ...).
    vocab_size: the prompt tokenizer's vocabulary size (filled in from the task).
    prompt_dropout: in training, the probability that an example's prompt is removed.
    dtype: compute dtype name; parameters stay float32.
  """
  autoencoder: Spec
  decoder: Spec
  vocab_size: int
  prompt_dropout: float = 0.1
  dtype: str = "float32"

  # Image-token ids beyond the codebook's (MaskGIT's [MASK]).
  extra_image_ids = 0

  @property
  def unbound_tokenizer(self) -> nn.Module:
    """The image tokenizer's module outside this one (for its codebook_size and grid)."""
    return MODELS.build(self.autoencoder, parent=None)

  @property
  def codebook_size(self) -> int:
    return self.unbound_tokenizer.codebook_size

  @property
  def num_image_tokens(self) -> int:
    """N = h * w, the codes per image."""
    return self.unbound_tokenizer.grid ** 2

  @property
  def decoder_config(self) -> gemma.GemmaConfig:
    return gemma.GemmaConfig(vocab_size=self.codebook_size + self.extra_image_ids,
                             **self.decoder)

  def free_decoder(self) -> gemma.GemmaDecoder:
    """The transformer outside this module, for params["transformer"] (cached decoding)."""
    return gemma.GemmaDecoder(self.decoder_config, jnp.dtype(self.dtype), parent=None)

  def setup(self):
    if (self.autoencoder.get("type") != "image_autoencoder"
        or not self.unbound_tokenizer.discrete):
      raise ValueError(f"{type(self).__name__} needs a discrete image tokenizer (setting "
                       "`autoencoder`: an image_autoencoder with quantizer 'vq' or 'gumbel'); "
                       f"got type {self.autoencoder.get('type')!r}, quantizer "
                       f"{self.autoencoder.get('quantizer')!r}.")
    if not 0.0 <= self.prompt_dropout <= 1.0:
      raise ValueError(f"prompt_dropout must be in [0, 1], got {self.prompt_dropout}.")
    config = self.decoder_config
    self.image_tokenizer = MODELS.build(self.autoencoder)
    self.text_embedding = self.param(
        "text_embedding", p.init(nn.initializers.normal(stddev=0.02), "vocab", "embed"),
        (self.vocab_size, config.width))
    self.image_position = self.param(
        "image_position", p.init(nn.initializers.normal(stddev=0.02), None, "embed"),
        (self.num_image_tokens, config.width))
    self.transformer = gemma.GemmaDecoder(config, jnp.dtype(self.dtype))

  def image_tokens(self, images: jax.Array) -> jax.Array:
    """float[B, H, W, 3] -> int32[B, N]: the frozen tokenizer's codes (row-major grid)."""
    tokens = self.image_tokenizer.encode_tokens(images)
    if self.is_initializing():
      self.image_tokenizer.decode_tokens(tokens)  # Creates the decoder's params (sampling).
    return tokens

  def targets(self, batch: Batch) -> jax.Array:
    """int32[B, N]: the batch's `image_tokens` when it has them (computed once for several
    passes over the same images), else the codes of its `image`."""
    if "image_tokens" in batch and not self.is_initializing():
      return batch["image_tokens"].astype(jnp.int32)
    return self.image_tokens(batch["image"])

  def decode_image_tokens(self, tokens: jax.Array) -> jax.Array:
    """int32[B, N] -> images float32[B, H, W, 3], clipped to [-1, 1]."""
    return jnp.clip(self.image_tokenizer.decode_tokens(tokens).astype(jnp.float32), -1.0, 1.0)

  def embed_text(self, tokens: jax.Array) -> jax.Array:
    """int[B, T] -> float[B, T, D], scaled by sqrt(D) as the decoder's own embeddings."""
    x = jnp.take(self.text_embedding, tokens, axis=0).astype(jnp.dtype(self.dtype))
    return x * jnp.sqrt(jnp.float32(self.decoder_config.width)).astype(x.dtype)

  def embed_image(self, tokens: jax.Array, first: int | jax.Array = 0) -> jax.Array:
    """int[B, M] image-token ids at grid positions first..first+M-1 -> float[B, M, D]: the
    tied code embedding plus the positions' embeddings (a start past the grid is clamped)."""
    positions = jax.lax.dynamic_slice_in_dim(self.image_position, first, tokens.shape[1])
    return self.transformer.embed_tokens(tokens) + positions.astype(jnp.dtype(self.dtype))

  def prompt_mask(self, text_mask: jax.Array, train: bool) -> jax.Array:
    """bool[B, T]: the text mask, each row dropped to all False with probability
    prompt_dropout in training (rng "dropout")."""
    mask = text_mask.astype(bool)
    if train and self.prompt_dropout > 0:
      mask = drop_prompts(self.make_rng("dropout"), mask, self.prompt_dropout)
    return mask

  def run(self, embeds: jax.Array, input_mask: jax.Array, prefix_mask: jax.Array,
          train: bool) -> jax.Array:
    """The transformer over float[B, S, D] with the prefix-LM mask of bool[B, S] (real
    tokens) and bool[B, S] (the prefix) -> logits float32[B, S, K (+ extra ids)]."""
    logits, _ = self.transformer(embeds, gemma.token_positions(input_mask),
                                 gemma.prefix_lm_mask(input_mask, prefix_mask), train=train)
    return logits

  @nn.nowrap
  def sample_tokens(self, variables: Any, text_tokens: jax.Array, text_mask: jax.Array,
                    config: SamplingConfig, rng: jax.Array | None = None) -> jax.Array:
    """int32[B, N]: image codes sampled for the prompts (int[B, T], bool[B, T])."""
    raise NotImplementedError

  @nn.nowrap
  def generate_images(self, variables: Any, batch: Batch, config: SamplingConfig,
                      rng: jax.Array | None = None) -> jax.Array:
    """Images float32[B, H, W, 3] in [-1, 1] for the prompts (`text_tokens`, `text_mask`)."""
    tokens = self.sample_tokens(variables, batch["text_tokens"], batch["text_mask"], config,
                                rng)
    return self.apply(variables, tokens, method=ImageTokenTransformer.decode_image_tokens)
