"""Captioning: BLEU and CIDEr-D of the captions the model writes, against every reference."""
from __future__ import annotations

from typing import Any

import tensorflow as tf

from multimodal.evaluators import caption_metrics, common
from multimodal.evaluators.registry import EVALUATORS, EvalContext

_SEPARATOR = "\n"  # Joins an image's reference captions (each is one line).


def raw_captions(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """The reference captions, kept beside the model inputs."""
  return {"_captions": tf.strings.reduce_join(example["captions"], separator=_SEPARATOR)}


@EVALUATORS.register("captioning")
class CaptioningEvaluator(common.SplitEvaluator):
  """Reports `bleu_1`..`bleu_4`, `cider` (CIDEr-D, as coco-caption computes them on the
  evaluated images) and `num_examples`, for a task that writes text (`image_to_text`), and
  writes `WORKDIR/predictions/NAME_stepSTEP.jsonl` (caption, references, CIDEr-D).

  Args:
    split: the TFDS split (one example per image, with a `captions` feature).
    pp: preprocessing spec producing the model inputs: the image and the prompt alone
      (`tok_prompt_answer(..., with_answer=False)`).
    batch_size: global evaluation batch size.
    every_steps: how often the trainer runs it (0: only at the end).
    max_examples: evaluate on the first N images only (None: all).
  """

  def __init__(self, context: EvalContext, name: str, split: str, pp: str, batch_size: int,
               every_steps: int = 0, max_examples: int | None = None,
               write_predictions: bool = True):
    super().__init__(context, name, split, pp, batch_size, every_steps, max_examples)
    self.write_predictions = write_predictions

  def run(self, variables: Any, step: int) -> dict[str, float]:
    records = []
    for batch, predictions in common.predicted_batches(
        self.context, variables, split=self.split, pp=self.pp, batch_size=self.batch_size,
        extras=raw_captions):
      for valid, tokens, references in zip(batch["_valid"], predictions["answer_tokens"],
                                           batch["_captions"]):
        if valid:
          records.append({"caption": self.context.task.answer_text(tokens),
                          "references": references.decode().split(_SEPARATOR)})
    records = common.allgather_records(records)
    metrics, per_caption = caption_scores([r["caption"] for r in records],
                                          [r["references"] for r in records])
    if self.write_predictions:
      for record, cider in zip(records, per_caption):
        record["cider"] = cider
      common.write_predictions(self.context.workdir, self.name, step, records)
    return metrics


def caption_scores(captions: list[str], references: list[list[str]]
                   ) -> tuple[dict[str, float], list[float]]:
  """Raw captions and their raw references -> ({"bleu_1".."bleu_4", "cider",
  "num_examples"}, each caption's CIDEr-D)."""
  hypotheses = [caption_metrics.tokenize(c) for c in captions]
  refs = [[caption_metrics.tokenize(r) for r in rs] for rs in references]
  metrics = {f"bleu_{k + 1}": score
             for k, score in enumerate(caption_metrics.bleu(hypotheses, refs))}
  metrics["cider"], per_caption = caption_metrics.cider_d(hypotheses, refs)
  metrics["num_examples"] = float(len(captions))
  return metrics, per_caption
