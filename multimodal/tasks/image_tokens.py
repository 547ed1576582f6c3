"""Text to image over a frozen image tokenizer's codes (models `dalle` and `maskgit`):
cross-entropy on the image tokens the model predicts, sampling through the model's own
`generate_images`, and the conditioning check without sampling.

The model returns {"logits" float32[B, N, K], "targets" int32[B, N], "weights" float32[B, N]}
(models/image_token_transformer.py): the autoregressive model weighs every image token, MaskGIT
the masked ones.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from multimodal.data import tokenizer as tokenizer_lib
from multimodal.models.image_token_transformer import SamplingConfig
from multimodal.tasks import prompt_conditioning
from multimodal.tasks.registry import TASKS, Batch


def token_nll(outputs: dict[str, jax.Array]) -> jax.Array:
  """float32[B, N]: each image token's cross-entropy, times its weight."""
  logp = jax.nn.log_softmax(outputs["logits"].astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, outputs["targets"][..., None], axis=-1)[..., 0]
  return nll * outputs["weights"]


def weighted_mean(values: jax.Array, weights: jax.Array, axis: int | None = None) -> jax.Array:
  return jnp.sum(values, axis=axis) / jnp.maximum(jnp.sum(weights, axis=axis), 1.0)


@TASKS.register("text_to_image_tokens")
class TextToImageTokensTask:
  """Args:
    tokenizer: the prompts' sentencepiece model (a packaged name or a path).
    temperature, top_k, top_p: the sampler's (temperature 0: greedy).
    guidance_scale: classifier-free guidance (1: none); MaskGIT ramps it over its steps.
    steps: MaskGIT's decoding steps.
    choice_temperature: MaskGIT's confidence noise, annealed to 0 over the steps.
  Batch keys: image float32[B, H, W, 3] in [-1, 1] (training and losses), text_tokens
  int32[B, T], text_mask bool[B, T].
  """

  def __init__(self, tokenizer: str, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, guidance_scale: float = 3.0, steps: int = 12,
               choice_temperature: float = 4.5):
    self.tokenizer = tokenizer
    self.sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                                   guidance_scale=guidance_scale, steps=steps,
                                   choice_temperature=choice_temperature)

  def model_kwargs(self) -> dict[str, Any]:
    return dict(vocab_size=tokenizer_lib.load(self.tokenizer).get_piece_size())

  def loss(self, outputs: dict[str, jax.Array], batch: Batch
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-> (the mean cross-entropy over the weighted image tokens, {"token_accuracy": the
    share of them whose argmax is the true code})."""
    weights = outputs["weights"]
    right = (jnp.argmax(outputs["logits"], axis=-1) == outputs["targets"]) * weights
    return (weighted_mean(token_nll(outputs), weights),
            {"token_accuracy": weighted_mean(right, weights)})

  def predict(self, outputs: dict[str, jax.Array], batch: Batch) -> dict[str, jax.Array]:
    """-> loss float32[B]: each example's mean cross-entropy over its weighted tokens."""
    return {"loss": weighted_mean(token_nll(outputs), outputs["weights"], axis=1)}

  def generate_images(self, model: Any, params: Any, batch: Batch, rng: jax.Array,
                      model_state: dict[str, Any] | None = None) -> jax.Array:
    """Samples for the prompts (`text_tokens`, `text_mask`) -> float32[B, H, W, 3] in
    [-1, 1], through the model's own `generate_images` (on the device)."""
    if not hasattr(model, "generate_images"):
      raise TypeError(f"The text_to_image_tokens task samples with the model's "
                      f"generate_images(variables, batch, config, rng); "
                      f"{type(model).__name__} has none (models: dalle, maskgit).")
    variables = {"params": params, **(model_state or {})}
    return model.generate_images(variables, batch, self.sampling, rng)

  def conditioning_losses(self, model: Any, params: Any, batch: Batch, rng: jax.Array,
                          model_state: dict[str, Any] | None = None) -> dict[str, jax.Array]:
    """The loss with the true prompts, the prompts rolled by one row (each image gets its
    neighbour's) and the empty prompt (text mask all False), with the same masks (MaskGIT's,
    drawn from `rng`): {"true", "shuffled", "empty"} float32[]."""
    variables = {"params": params, **(model_state or {})}
    # The images' codes once, for the three passes.
    batch = {**batch, "image_tokens": model.apply(variables, batch["image"],
                                                  method="image_tokens")}
    return prompt_conditioning.conditioning_losses(
        model, variables, batch, rng, lambda outputs, batch: self.loss(outputs, batch)[0])
