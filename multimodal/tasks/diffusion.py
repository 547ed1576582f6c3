"""Text-to-image diffusion (models `diffusion_unet`, `dit`): the denoising loss, sampling with
classifier-free guidance, and the conditioning check without sampling.

The model noises the batch itself (models/diffusion/model.py) and returns its prediction and
the target (eps, x0 or v); the loss is their mean squared error.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from multimodal.data import tokenizer as tokenizer_lib
from multimodal.models.diffusion import samplers, schedules
from multimodal.tasks import prompt_conditioning
from multimodal.tasks.registry import TASKS, Batch


def per_example_mse(outputs: dict[str, jax.Array]) -> jax.Array:
  """float32[B]: each example's mean squared error between prediction and target."""
  error = jnp.square(outputs["prediction"].astype(jnp.float32) - outputs["target"])
  return jnp.mean(error.reshape(error.shape[0], -1), axis=1)


@TASKS.register("diffusion")
class DiffusionTask:
  """Args:
    tokenizer: the prompts' sentencepiece model (a packaged name or a path).
    sampler: "ddim" (deterministic, eta = 0) or "ddpm" (ancestral).
    sample_steps: the denoising steps a sample takes (evenly spaced over the model's T).
    guidance_scale: classifier-free guidance, eps_uncond + s (eps_cond - eps_uncond); 1: the
      conditional model alone (half the work), 0: the unconditional one.
  Batch keys: image float32[B, H, W, 3] in [-1, 1] (training and losses), text_tokens
  int32[B, T], text_mask bool[B, T].
  """

  def __init__(self, tokenizer: str, sampler: str = "ddim", sample_steps: int = 50,
               guidance_scale: float = 3.0):
    if sampler not in samplers.SAMPLERS:
      raise ValueError(f"Unknown sampler {sampler!r} (task setting `sampler`); use one of "
                       f"{list(samplers.SAMPLERS)}.")
    if sample_steps < 1:
      raise ValueError(f"sample_steps must be at least 1, got {sample_steps}.")
    self.tokenizer = tokenizer
    self.sampler = sampler
    self.sample_steps = sample_steps
    self.guidance_scale = float(guidance_scale)

  def model_kwargs(self) -> dict[str, Any]:
    return dict(vocab_size=tokenizer_lib.load(self.tokenizer).get_piece_size())

  def loss(self, outputs: dict[str, jax.Array], batch: Batch
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-> (the mean squared error, {"relative_mse": it over the target's mean square, 1 for
    a network that predicts zeros})."""
    loss = jnp.mean(per_example_mse(outputs))
    return loss, {"relative_mse": loss / jnp.mean(jnp.square(outputs["target"]))}

  def predict(self, outputs: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
    """-> loss float32[B], each example's denoising error (at the noise the model drew)."""
    return {"loss": per_example_mse(outputs)}

  def generate_images(self, model: Any, params: Any, batch: Batch, rng: jax.Array,
                      model_state: dict[str, Any] | None = None) -> jax.Array:
    """Samples for the prompts (`text_tokens`, `text_mask`) -> float32[B, H, W, 3] in
    [-1, 1], H = W = the model's image_size; the prompts are encoded once, the sampler's loop
    runs on the device. model_state: the model's other variable collections, if it has any
    (the trainer passes them so)."""
    variables = {"params": params, **(model_state or {})}
    tokens, mask = batch["text_tokens"], batch["text_mask"].astype(bool)
    encode = lambda m: model.apply(variables, tokens, m, method="encode_text")
    cond = encode(mask)
    uncond = encode(jnp.zeros_like(mask)) if self.guidance_scale != 1 else None
    alphas_cumprod = model.alphas_cumprod

    def denoise(x_t: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
      apply = lambda x, t, text: model.apply(variables, x, t, text, method="denoise")
      out = samplers.classifier_free_guidance(apply, x_t, t, cond, uncond,
                                              self.guidance_scale)
      return schedules.x0_and_eps(model.prediction, out, x_t, alphas_cumprod[t])

    size = model.image_size
    shape = jax.eval_shape(lambda images: model.apply(variables, images, method="to_space"),
                           jax.ShapeDtypeStruct((tokens.shape[0], size, size, 3),
                                                jnp.float32)).shape
    noise_rng, sample_rng = jax.random.split(rng)
    x0 = samplers.sample(self.sampler, denoise, jax.random.normal(noise_rng, shape),
                         alphas_cumprod, self.sample_steps, sample_rng,
                         clip_x0=not model.latent)
    images = model.apply(variables, x0, method="to_images")
    return jnp.clip(images, -1.0, 1.0)

  def conditioning_losses(self, model: Any, params: Any, batch: Batch, rng: jax.Array,
                          model_state: dict[str, Any] | None = None) -> dict[str, jax.Array]:
    """The loss with the true prompts, the prompts rolled by one row (each image gets its
    neighbour's), and the empty prompt (text mask all False), at the same timesteps and
    noise (drawn from `rng`): {"true", "shuffled", "empty"} float32[]. A model that uses its
    prompt has "true" clearly lowest."""
    variables = {"params": params, **(model_state or {})}
    return prompt_conditioning.conditioning_losses(
        model, variables, batch, rng, lambda outputs, batch: self.loss(outputs, batch)[0])
