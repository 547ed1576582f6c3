"""The features every VQA builder yields, so one preprocessing spec serves them all."""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


def vqa_features() -> tfds.features.FeaturesDict:
  """image: encoded PNG/JPEG of any size; answers: one or more annotators' answers;
  question_type: "" where a dataset has no types."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3)),
      "question": tfds.features.Text(),
      "answers": tfds.features.Sequence(tfds.features.Text()),
      "question_type": tfds.features.Text(),
      "question_id": np.int64,
  })
