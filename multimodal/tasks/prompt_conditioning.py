"""The conditioning check the text-to-image tasks share: the validation loss with each
example's own prompt, a neighbour's prompt and the empty prompt, on the same batch with the
same randomness (timesteps and noise, or MaskGIT's masks). A model that reads its prompt has
"true" clearly lowest; one that ignores it has all three equal.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from multimodal.tasks.registry import Batch


def conditioning_losses(model: Any, variables: Any, batch: Batch, rng: jax.Array,
                        loss_fn: Callable[[dict[str, jax.Array], Batch], jax.Array]
                        ) -> dict[str, jax.Array]:
  """{"true", "shuffled", "empty"} float32[]: loss_fn(model outputs, batch) with the batch's
  prompts (`text_tokens` int[B, T], `text_mask` bool[B, T]), with the prompts rolled by one
  row (each example gets its neighbour's), and with the text mask all False. Every pass draws
  its "dropout" randomness from the same `rng`."""
  tokens, mask = batch["text_tokens"], batch["text_mask"].astype(bool)

  def loss_with(tokens: jax.Array, mask: jax.Array) -> jax.Array:
    outputs = model.apply(variables, {**batch, "text_tokens": tokens, "text_mask": mask},
                          train=False, rngs={"dropout": rng})
    return loss_fn(outputs, batch)

  roll = lambda x: jnp.roll(x, 1, axis=0)
  return {"true": loss_with(tokens, mask), "shuffled": loss_with(roll(tokens), roll(mask)),
          "empty": loss_with(tokens, jnp.zeros_like(mask))}
