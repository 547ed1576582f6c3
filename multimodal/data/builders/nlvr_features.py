"""The features every NLVR builder yields (shapes_nlvr, nlvr2), so one preprocessing spec and
one model serve them all."""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


def nlvr_features() -> tfds.features.FeaturesDict:
  """left_image, right_image: encoded images of any size; statement: the text; label: whether
  it is true of the pair."""
  return tfds.features.FeaturesDict({
      "left_image": tfds.features.Image(shape=(None, None, 3)),
      "right_image": tfds.features.Image(shape=(None, None, 3)),
      "statement": tfds.features.Text(),
      "label": np.bool_,
  })
