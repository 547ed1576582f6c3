"""MaskGIT / Muse-style text to image: a bidirectional transformer over [prompt; image tokens],
some image tokens replaced by [MASK], trained to predict the masked ones (Chang et al., 2022;
Muse, Chang et al., 2023).

Training masks a share r = cos(pi/2 * u), u ~ U(0, 1), of each image's N codes (at least one)
and takes the cross-entropy on the masked positions only. Decoding (`generate_images`) starts
from all [MASK] and, in `steps` parallel steps of one `lax.fori_loop`, samples every masked
token, keeps the most confident (their log-probability plus Gumbel noise scaled by a choice
temperature that anneals to 0) and re-masks the rest, N * cos(pi/2 * (t + 1) / steps) of them
after step t (`mask_schedule`), none after the last. Classifier-free guidance runs each prompt
and its empty version as one batch of 2B and mixes the logits with a scale ramped linearly
from 1 to guidance_scale over the steps.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from multimodal.models import decoding
from multimodal.models.image_token_transformer import (Batch, ImageTokenTransformer,
                                                       SamplingConfig, mix_guidance,
                                                       with_empty_prompts)
from multimodal.models.registry import MODELS


def ranks(scores: jax.Array) -> jax.Array:
  """int32[B, N]: each score's rank in its row, 0 for the lowest."""
  return jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1).astype(jnp.int32)


def training_mask(rng: jax.Array, batch: int, num_tokens: int) -> jax.Array:
  """bool[B, N], True where a code is masked: ceil(cos(pi/2 * u) * N) random positions per
  example (u ~ U(0, 1) per example; between 1 and N)."""
  ratio_rng, order_rng = jax.random.split(rng)
  ratio = jnp.cos(jnp.pi / 2 * jax.random.uniform(ratio_rng, (batch,)))
  count = jnp.clip(jnp.ceil(ratio * num_tokens), 1, num_tokens).astype(jnp.int32)
  return ranks(jax.random.uniform(order_rng, (batch, num_tokens))) < count[:, None]


def mask_schedule(num_tokens: int, steps: int) -> np.ndarray:
  """int32[steps]: how many of the N codes are still masked after each decoding step, the
  cosine schedule floor(N * cos(pi/2 * (t + 1) / steps)), kept at least 1 before the last
  step and 0 after it, and below the previous step's (every step decides at least one code
  while any is left)."""
  if steps < 1:
    raise ValueError(f"MaskGIT decoding needs at least 1 step, got {steps}.")
  counts, masked = [], num_tokens
  for t in range(steps):
    last = t == steps - 1
    target = 0 if last else max(1, int(np.floor(num_tokens * np.cos(np.pi / 2 * (t + 1) /
                                                                     steps))))
    masked = max(0, min(target, masked - 1))
    counts.append(masked)
  return np.asarray(counts, np.int32)


# (image tokens int[B, N] with [MASK] ids, step int) -> logits float[B, N, K]
LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]


def decode_step(logits_fn: LogitsFn, tokens: jax.Array, step: jax.Array, rng: jax.Array,
                mask_id: int, schedule: jax.Array, config: SamplingConfig) -> jax.Array:
  """One parallel decoding step: int32[B, N] tokens ([MASK] where unknown) -> the same with
  the masked ones sampled and all but the `schedule[step]` least confident kept."""
  sample_rng, choice_rng = jax.random.split(rng)
  logits = logits_fn(tokens, step).astype(jnp.float32)
  batch, num, codes = logits.shape
  unknown = tokens == mask_id
  sampled = decoding.pick_tokens(logits.reshape(batch * num, codes), sample_rng,
                                 config.decode_config(1)).reshape(batch, num)
  sampled = jnp.where(unknown, sampled, tokens).astype(jnp.int32)
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), sampled[..., None], -1)[..., 0]
  steps = schedule.shape[0]
  noise_scale = config.choice_temperature * (1.0 - (step + 1) / steps)
  confidence = logp + noise_scale * jax.random.gumbel(choice_rng, logp.shape)
  confidence = jnp.where(unknown, confidence, jnp.inf)  # decided codes stay decided
  return jnp.where(ranks(confidence) < schedule[step], mask_id, sampled)


def decode(logits_fn: LogitsFn, batch: int, num_tokens: int, mask_id: int,
           config: SamplingConfig, rng: jax.Array | None = None) -> jax.Array:
  """int32[B, N]: every code decided in config.steps steps of `decode_step` from all [MASK],
  in one `lax.fori_loop`."""
  schedule = jnp.asarray(mask_schedule(num_tokens, config.steps))
  rng = jax.random.key(0) if rng is None else rng

  def body(step: jax.Array, tokens: jax.Array) -> jax.Array:
    return decode_step(logits_fn, tokens, step, jax.random.fold_in(rng, step), mask_id,
                       schedule, config)

  return jax.lax.fori_loop(0, config.steps, body,
                           jnp.full((batch, num_tokens), mask_id, jnp.int32))


def guidance_ramp(scale: float, step: jax.Array, steps: int) -> jax.Array:
  """The guidance scale at a step of `steps`: rising linearly, 1 + (scale - 1) * (step + 1)
  / steps, to `scale` at the last step (early steps, which lay out the image, near the
  conditional model alone)."""
  return 1.0 + (scale - 1.0) * (step + 1) / steps


@MODELS.register("maskgit")
class MaskGit(ImageTokenTransformer):
  """The masked-token model; its settings are `ImageTokenTransformer`'s. Image-token id
  `codebook_size` is [MASK] (an extra row of the code embedding; no logit)."""

  extra_image_ids = 1  # [MASK]

  @property
  def mask_id(self) -> int:
    return self.codebook_size

  def logits(self, text_tokens: jax.Array, text_mask: jax.Array, image_tokens: jax.Array,
             *, train: bool = False) -> jax.Array:
    """float32[B, N, K]: at every image position, the logits of its code given the prompt
    (int[B, T], bool[B, T]) and the image tokens int[B, N] ([MASK] where unknown)."""
    embeds = jnp.concatenate([self.embed_text(text_tokens), self.embed_image(image_tokens)], 1)
    input_mask = jnp.concatenate([text_mask.astype(bool),
                                  jnp.ones(image_tokens.shape, bool)], axis=1)
    logits = self.run(embeds, input_mask, jnp.ones_like(input_mask), train)
    return logits[:, text_tokens.shape[1]:, :self.codebook_size]

  def __call__(self, batch: Batch, *, train: bool) -> dict[str, jax.Array]:
    """-> logits float32[B, N, K], targets int32[B, N] (the image's codes), weights
    float32[B, N] (1 on the masked positions). The masks come from the "dropout" rng (a fixed
    key without one, so that evaluation always masks the same positions)."""
    targets = self.targets(batch)
    rng = self.make_rng("dropout") if self.has_rng("dropout") else jax.random.key(0)
    masked = training_mask(rng, *targets.shape)
    logits = self.logits(batch["text_tokens"], self.prompt_mask(batch["text_mask"], train),
                         jnp.where(masked, self.mask_id, targets), train=train)
    return {"logits": logits, "targets": targets, "weights": masked.astype(jnp.float32)}

  @nn.nowrap
  def sample_tokens(self, variables: Any, text_tokens: jax.Array, text_mask: jax.Array,
                    config: SamplingConfig, rng: jax.Array | None = None) -> jax.Array:
    return sample_tokens(self, variables, text_tokens, text_mask, config, rng)


def sample_tokens(model: MaskGit, variables: Any, text_tokens: jax.Array, text_mask: jax.Array,
                  config: SamplingConfig, rng: jax.Array | None = None) -> jax.Array:
  """int32[B, N]: MaskGIT's parallel decoding (`decode`) for the prompts (int[B, T],
  bool[B, T]), guided when guidance_scale is not 1."""
  guided = config.guidance_scale != 1
  if guided:
    text_tokens, text_mask = with_empty_prompts(text_tokens, text_mask)

  def logits_fn(tokens: jax.Array, step: jax.Array) -> jax.Array:
    if not guided:
      return model.apply(variables, text_tokens, text_mask, tokens, method=MaskGit.logits)
    both = model.apply(variables, text_tokens, text_mask, jnp.concatenate([tokens, tokens]),
                       method=MaskGit.logits)
    return mix_guidance(both, guidance_ramp(config.guidance_scale, step, config.steps))

  batch = text_tokens.shape[0] // (2 if guided else 1)
  return decode(logits_fn, batch, model.num_image_tokens, model.mask_id, config, rng)
