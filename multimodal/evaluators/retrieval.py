"""Image-text retrieval: recall at k in both directions, from the embeddings of a two-towers
model, over every image of a split and all of its captions."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from multimodal.data import pipeline
from multimodal.evaluators import common, retrieval_metrics
from multimodal.evaluators.registry import EVALUATORS, EvalContext


@EVALUATORS.register("retrieval")
class RetrievalEvaluator(common.SplitEvaluator):
  """Reports `image_to_text/R@k` and `text_to_image/R@k` for each k (see
  `retrieval_metrics.recall_at_k`), `num_images` and `num_texts`, for a task that predicts
  `image_embedding` and `text_embedding` (task `contrastive`).

  Args:
    split: the TFDS split; each example is an image with its captions.
    pp: preprocessing spec producing `image` and every caption of the image as
      `text_tokens` int32[K, T] and `text_mask` bool[K, T] (`tok(..., key='captions',
      out_key='text_tokens', mask_key='text_mask')`), K the same for every image.
    batch_size: global evaluation batch size in images (the text batches hold K times more).
    every_steps: how often the trainer runs it (0: only at the end).
    max_examples: evaluate on the first N images only (None: all).
    ks: the k of R@k.
  """

  def __init__(self, context: EvalContext, name: str, split: str, pp: str, batch_size: int,
               every_steps: int = 0, max_examples: int | None = None,
               ks: Sequence[int] = (1, 5, 10)):
    super().__init__(context, name, split, pp, batch_size, every_steps, max_examples)
    self.ks = tuple(ks)

  def embeddings(self, variables: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image float32[I, E], text float32[I * K, E], text_image int[I * K]: each text's
    image), over the whole split and every host."""
    local_batch = pipeline.host_batch_size(self.batch_size)
    ds = pipeline.make_dataset(self.context.builder, split=self.split, pp=self.pp,
                               batch_size=local_batch, train=False)
    images, texts = [], []
    for batch in common.padded_batches(ds.as_numpy_iterator(), local_batch):
      if batch["text_tokens"].ndim != 3:
        raise ValueError("The retrieval pp must give each image all of its captions: "
                         f"text_tokens [K, T] per image, got {batch['text_tokens'].shape[1:]}.")
      valid = batch["_valid"]
      image = common.predict_host_rows(self.context, variables, {"image": batch["image"]})
      images.append(image["image_embedding"][valid])
      tokens, mask = batch["text_tokens"], batch["text_mask"]
      per_image = tokens.shape[1]
      text = common.predict_host_rows(self.context, variables, {
          "text_tokens": tokens.reshape(-1, tokens.shape[-1]),
          "text_mask": mask.reshape(-1, mask.shape[-1])})
      texts.append(text["text_embedding"].reshape(len(valid), per_image, -1)[valid])
    image = common.allgather_rows(np.concatenate(images))
    text = common.allgather_rows(np.concatenate(texts))  # [I, K, E]
    text_image = np.repeat(np.arange(len(image)), text.shape[1])
    return image, text.reshape(-1, text.shape[-1]), text_image

  def run(self, variables: Any, step: int) -> dict[str, float]:
    del step
    image, text, text_image = self.embeddings(variables)
    metrics = retrieval_metrics.recall_at_k(image, text, text_image, self.ks)
    metrics.update(num_images=float(len(image)), num_texts=float(len(text)))
    return metrics
