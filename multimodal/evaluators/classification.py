"""Classification accuracy overall and per value of chosen features (NLVR: per statement
template and per true / changed-image example), with the predictions written to the workdir."""
from __future__ import annotations

import collections
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from multimodal.evaluators import common
from multimodal.evaluators.registry import EVALUATORS, EvalContext
from multimodal.models import missing_modalities


def feature_names(builder: tfds.core.DatasetBuilder, key: str) -> Callable[[Any], str]:
  """A raw value of feature `key` -> its name: a ClassLabel's label name, bytes decoded,
  anything else as str."""
  feature = builder.info.features[key]
  if isinstance(feature, tfds.features.ClassLabel):
    return lambda value: feature.int2str(int(value))
  return lambda value: value.decode() if isinstance(value, bytes) else str(np.asarray(value).item())


@EVALUATORS.register("classification")
class ClassificationEvaluator(common.SplitEvaluator):
  """Reports `accuracy`, `accuracy/KEY/VALUE` for each feature KEY of `group_by` and each of
  its values, and `num_examples`; writes `WORKDIR/predictions/NAME_stepSTEP.jsonl` (the text,
  the groups, the label, the prediction).

  Args:
    split, pp, batch_size, every_steps, max_examples: as every split evaluator.
    group_by: raw features to break the accuracy down by (e.g. NLVR's template, label).
    text_key: a raw text feature written beside each prediction (None: none).
    write_predictions: write the predictions file.
    missing_modalities: also evaluate with each of these modalities removed from every
      example (the model must read `{modality}_missing` batch keys, as `fusion_classifier`
      does); reported as `missing_{modality}/accuracy` (and per group).
  """

  def __init__(self, context: EvalContext, name: str, split: str, pp: str, batch_size: int,
               every_steps: int = 0, max_examples: int | None = None,
               group_by: Sequence[str] = (), text_key: str | None = None,
               write_predictions: bool = True, missing_modalities: Sequence[str] = ()):
    super().__init__(context, name, split, pp, batch_size, every_steps, max_examples)
    features = context.builder.info.features
    unknown = [k for k in (*group_by, *([text_key] if text_key else [])) if k not in features]
    if unknown:
      raise KeyError(f"{name}: the dataset has no feature(s) {unknown}; it has "
                     f"{sorted(features)}.")
    self.group_by = tuple(group_by)
    self.text_key = text_key
    self.write_predictions = write_predictions
    self.names = {k: feature_names(context.builder, k) for k in self.group_by}
    self.missing_modalities = tuple(missing_modalities)

  def _extras(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    keys = (*self.group_by, *([self.text_key] if self.text_key else []))
    return {f"_{k}": example[k] for k in keys}

  def run(self, variables: Any, step: int) -> dict[str, float]:
    records = self._records(variables)
    if self.write_predictions:
      common.write_predictions(self.context.workdir, self.name, step, records)
    metrics = accuracy_by_group(records, self.group_by)
    for modality in self.missing_modalities:
      without = accuracy_by_group(self._records(variables, missing=modality), self.group_by)
      metrics.update({f"missing_{modality}/{k}": v for k, v in without.items()
                      if k != "num_examples"})
    return metrics

  def _records(self, variables: Any, missing: str | None = None) -> list[dict[str, Any]]:
    """Every example's groups, label and prediction, from all hosts; with `missing`, that
    modality is removed from every example."""
    records = []
    for batch, predictions in common.predicted_batches(
        self.context, variables, split=self.split, pp=self.pp, batch_size=self.batch_size,
        extras=self._extras, edit=missing_modalities.remover(missing) if missing else None):
      for i in np.flatnonzero(batch["_valid"]):
        record = {k: self.names[k](batch[f"_{k}"][i]) for k in self.group_by}
        if self.text_key:
          record[self.text_key] = batch[f"_{self.text_key}"][i].decode()
        record.update(prediction=int(predictions["prediction"][i]),
                      correct=float(predictions["correct"][i]))
        records.append(record)
    return common.allgather_records(records)


def accuracy_by_group(records: list[dict[str, Any]], group_by: Sequence[str]
                      ) -> dict[str, float]:
  """{"accuracy", "accuracy/KEY/VALUE" for each key of group_by and value seen,
  "num_examples"} from records with "correct" and the group keys."""
  if not records:
    raise ValueError("No examples were evaluated.")
  metrics = {"accuracy": float(np.mean([r["correct"] for r in records])),
             "num_examples": float(len(records))}
  for key in group_by:
    groups = collections.defaultdict(list)
    for record in records:
      groups[record[key]].append(record["correct"])
    metrics.update({f"accuracy/{key}/{value}": float(np.mean(v))
                    for value, v in sorted(groups.items())})
  return metrics
