"""`shapes_nlvr`: a statement about a pair of Shapes images, true or false, generated locally.

Statements about one image or both (counts, colors, shapes, sizes, spatial relations,
comparisons across the pair); each true example is followed by a false one that changes one
object of one image (`shapes/nlvr_statements.py`), so labels are balanced per statement and
per template. Splits: train, validation and test on new scenes with the statement kinds of
training; `test_heldout` on new scenes with held-out template-and-color combinations.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from multimodal.data.builders import shapes_common
from multimodal.data.builders.nlvr_features import nlvr_features
from multimodal.data.shapes import nlvr_statements

# Split -> (the split whose seed it draws from, whether its statements are held out).
# test_heldout draws other scenes than test: the held-out flag is part of the stream.
SPLITS = {"train": ("train", False), "validation": ("validation", False),
          "test": ("test", False), "test_heldout": ("test", True)}


@dataclasses.dataclass
class ShapesNlvrConfig(tfds.core.BuilderConfig):
  """Split sizes (in examples, half true), image side in pixels and the base seed."""
  num_train: int = 30_000
  num_validation: int = 2_000
  num_test: int = 2_000
  num_test_heldout: int = 2_000
  image_size: int = 64
  seed: int = 0


class ShapesNlvr(tfds.core.GeneratorBasedBuilder):
  """A statement, a left and a right image of 1-5 coloured shapes, and whether it is true."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ShapesNlvrConfig(name="default", description="30k training examples, 64 px."),
      ShapesNlvrConfig(name="small", description="6k training examples, 64 px.",
                       num_train=6_000, num_validation=500, num_test=500,
                       num_test_heldout=500),
      ShapesNlvrConfig(name="tiny", description="A few dozen examples, for tests.",
                       num_train=64, num_validation=16, num_test=16, num_test_heldout=16),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            **nlvr_features(),
            "template": tfds.features.ClassLabel(names=list(nlvr_statements.TEMPLATES)),
            # "none" for a true example; else the image its false partner changed.
            "changed": tfds.features.ClassLabel(names=["none", "left", "right"]),
            "pair_id": np.int64,
            "example_id": np.int64,
        }),
        disable_shuffling=True,  # Deterministic order; input pipelines shuffle anyway.
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager
                        ) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
    del dl_manager  # Everything is generated locally.
    config = self.builder_config
    return {split: self._generate_examples(shapes_common.split_seed(config.seed, seed_split),
                                           getattr(config, f"num_{split}"), heldout)
            for split, (seed_split, heldout) in SPLITS.items()}

  def _generate_examples(self, seed: int, num_examples: int, heldout: bool
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    for ex in nlvr_statements.iterate_examples(seed, num_examples,
                                               self.builder_config.image_size, heldout):
      yield ex["example_id"], {
          **ex, "left_image": shapes_common.encode_png(ex["left_image"]),
          "right_image": shapes_common.encode_png(ex["right_image"])}
