"""VQA accuracy overall and per question type, with the predictions written to the workdir."""
from __future__ import annotations

import collections
from typing import Any

import numpy as np
import tensorflow as tf

from multimodal.evaluators import common, vqa_accuracy
from multimodal.models import missing_modalities
from multimodal.evaluators.registry import EVALUATORS, EvalContext


def raw_text(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """The strings kept beside the model inputs for reporting (answers joined by '|')."""
  return {"_question": example["question"], "_question_type": example["question_type"],
          "_answers": tf.strings.reduce_join(example["answers"], separator="|")}


@EVALUATORS.register("vqa")
class VqaEvaluator(common.SplitEvaluator):
  """Reports `accuracy` and `accuracy/TYPE` (VQA accuracy: min(1, annotators agreeing / 3),
  exact match for single-answer data) and writes `WORKDIR/predictions/NAME_STEP.jsonl`.

  Args:
    split: the TFDS split to evaluate on.
    pp: preprocessing spec producing the model inputs and `answer_scores`.
    batch_size: global evaluation batch size.
    every_steps: how often the trainer runs it (0: only at the end).
    max_examples: evaluate on the first N examples only (None: all).
    missing_modalities: also evaluate with each of these modalities removed from every
      example (the model must accept `{modality}_missing` batch keys, as `fusion_vqa` does);
      reported as `missing_{modality}/accuracy` and `missing_{modality}/accuracy/TYPE`.
    where: evaluate only the examples whose features take these values (as `data.where`).
  """

  def __init__(self, context: EvalContext, name: str, split: str, pp: str, batch_size: int,
               every_steps: int = 0, max_examples: int | None = None,
               write_predictions: bool = True, missing_modalities: tuple[str, ...] = (),
               where: dict[str, tuple[str, ...]] | None = None):
    super().__init__(context, name, split, pp, batch_size, every_steps, max_examples)
    self.write_predictions = write_predictions
    self.missing_modalities = tuple(missing_modalities)
    self.where = where

  def run(self, variables: Any, step: int) -> dict[str, float]:
    records = self._records(variables)
    if self.write_predictions:
      common.write_predictions(self.context.workdir, self.name, step, records)
    metrics = accuracy_by_type(records)
    for modality in self.missing_modalities:
      without = accuracy_by_type(self._records(variables, missing=modality))
      metrics.update({f"missing_{modality}/{k}": v for k, v in without.items()
                      if k != "num_examples"})
    return metrics

  def _records(self, variables: Any, missing: str | None = None) -> list[dict[str, Any]]:
    """Every example's prediction and score, from all hosts; with `missing`, that modality
    is removed from every example."""
    records = []
    for batch, predictions in common.predicted_batches(
        self.context, variables, split=self.split, pp=self.pp, batch_size=self.batch_size,
        extras=raw_text, where=self.where, edit=missing_modalities.remover(missing) if missing else None):
      for i, (prediction, score) in enumerate(self._scored_answers(predictions, batch)):
        if batch["_valid"][i]:
          records.append({"question": batch["_question"][i].decode(),
                          "question_type": batch["_question_type"][i].decode(),
                          "answers": batch["_answers"][i].decode().split("|"),
                          "prediction": prediction, "score": score})
    return common.allgather_records(records)

  def _scored_answers(self, predictions: dict[str, np.ndarray], batch: common.HostBatch
                      ) -> list[tuple[str, float]]:
    """(answer text, score) for each row of this host's batch: the classifier's answer and
    its soft score."""
    answers = self.context.task.answers
    return [(answers[p], float(s)) for p, s in zip(predictions["answer"], predictions["score"])]


def accuracy_by_type(records: list[dict[str, Any]]) -> dict[str, float]:
  """{"accuracy": mean score, "accuracy/TYPE": mean score of that type, "num_examples": N}."""
  if not records:
    raise ValueError("No examples were evaluated.")
  by_type = collections.defaultdict(list)
  for record in records:
    if record["question_type"]:
      by_type[record["question_type"]].append(record["score"])
  metrics = {"accuracy": sum(r["score"] for r in records) / len(records),
             "num_examples": float(len(records))}
  metrics.update({f"accuracy/{t}": sum(s) / len(s) for t, s in sorted(by_type.items())})
  return metrics


@EVALUATORS.register("generative_vqa")
class GenerativeVqaEvaluator(VqaEvaluator):
  """`VqaEvaluator` for answers the model writes (task `image_to_text`): the decoded text
  scored against the annotators' answers by `metric`, "vqa" (GT-Vision-Lab's vqaEval.py, for
  ten annotators as in VQAv2) or "soft" (min(1, matches / min(3, N)): the score classifiers
  get, and exact match for one-answer data such as Shapes VQA). Other arguments as
  `VqaEvaluator`.
  """

  def __init__(self, context: EvalContext, name: str, *args: Any, metric: str = "vqa",
               **kwargs: Any):
    if metric not in vqa_accuracy.METRICS:
      raise ValueError(f"Unknown VQA metric {metric!r}; use one of {sorted(vqa_accuracy.METRICS)}.")
    super().__init__(context, name, *args, **kwargs)
    self.metric = vqa_accuracy.METRICS[metric]

  def _scored_answers(self, predictions: dict[str, np.ndarray], batch: common.HostBatch
                      ) -> list[tuple[str, float]]:
    texts = [self.context.task.answer_text(row) for row in predictions["answer_tokens"]]
    return [(text, self.metric(text, answers.decode().split("|")))
            for text, answers in zip(texts, batch["_answers"])]
