"""Image to text, PaLI-style: the model writes text after the image and a prompt (a question's
answer, an image's caption). Next-token cross-entropy on the written tokens; decoding on the
device for evaluation. Any model that writes text serves (paligemma, pali): its logits are the
next token's at each text position, and it decodes through its own `generate`
(decoding.TextGenerator)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from multimodal.data import tokenizer as tokenizer_lib
from multimodal.models import decoding, paligemma
from multimodal.tasks.registry import TASKS, Batch


@TASKS.register("image_to_text")
class ImageToTextTask:
  """Generative VQA (evaluator `generative_vqa`) and captioning (evaluator `captioning`).

  Args:
    tokenizer: sentencepiece model (a packaged name such as "shapes" or a path).
    max_answer_tokens: the most tokens decoded per answer or caption (EOS included).
    beam_size: 1 for greedy decoding, more for beam search.
  Batch keys (pp op `tok_prompt_answer`): text_tokens int32[B, T], text_mask and prefix_mask
  bool[B, T]; in evaluation the text is the prompt alone.
  """

  def __init__(self, tokenizer: str, max_answer_tokens: int = 8, beam_size: int = 1):
    self.tokenizer = tokenizer
    sp = tokenizer_lib.load(tokenizer)
    self.decode_config = decoding.DecodeConfig(
        max_new_tokens=max_answer_tokens, eos_id=sp.eos_id(), pad_id=sp.pad_id(),
        beam_size=beam_size)

  def model_kwargs(self) -> dict[str, Any]:
    return dict(vocab_size=tokenizer_lib.load(self.tokenizer).get_piece_size())

  def loss(self, logits: jax.Array, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """logits float32[B, T, V] -> (mean answer-token loss, {"token_accuracy"}: the share of
    answer tokens predicted right given the true ones before them)."""
    loss, _ = paligemma.answer_loss(logits, batch)
    weights = (batch["text_mask"][:, 1:] & ~batch["prefix_mask"][:, 1:]).astype(jnp.float32)
    right = (jnp.argmax(logits[:, :-1], axis=-1) == batch["text_tokens"][:, 1:]) * weights
    return loss, {"token_accuracy": jnp.sum(right) / jnp.maximum(jnp.sum(weights), 1.0)}

  def predict(self, logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
    """-> answer_tokens int32[B, T-1]: the argmax next tokens (teacher forced)."""
    return {"answer_tokens": jnp.argmax(logits[:, :-1], axis=-1).astype(jnp.int32)}

  def generate(self, model: Any, params: Any, batch: Batch) -> dict[str, jax.Array]:
    """-> answer_tokens int32[B, max_answer_tokens], decoded after the prompt."""
    if not isinstance(model, decoding.TextGenerator):
      raise TypeError(f"The image_to_text task decodes with the model's generate(params, batch, "
                      f"config); {type(model).__name__} has none (models that write text: "
                      "paligemma, pali).")
    return {"answer_tokens": model.generate(params, batch, self.decode_config)}

  def answer_text(self, tokens: Any) -> str:
    """int[N] decoded answer tokens (up to EOS) -> the answer string."""
    sp = tokenizer_lib.load(self.tokenizer)
    ids = [int(t) for t in tokens]
    if sp.eos_id() in ids:
      ids = ids[:ids.index(sp.eos_id())]
    return sp.decode([i for i in ids if i != sp.pad_id()])
