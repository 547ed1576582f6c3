"""`shapes_captions`: Shapes scenes with several captions each, generated locally (no download).

Used for captioning, image-text retrieval and text-to-image generation. The validation and
test splits hold scenes with distinct descriptions (`captions.canonical_description`), so in
retrieval every caption has exactly one right image.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from multimodal.data.builders import shapes_common
from multimodal.data.shapes import captions, scenes


@dataclasses.dataclass
class ShapesCaptionsConfig(tfds.core.BuilderConfig):
  """Split sizes (in images), image side in pixels, captions per image, objects per scene
  (1..max_objects) and the base seed."""
  num_train: int = 50_000
  num_validation: int = 1_000
  num_test: int = 1_000
  image_size: int = 64
  captions_per_image: int = captions.CAPTIONS_PER_IMAGE
  max_objects: int = captions.MAX_OBJECTS
  seed: int = 0


class ShapesCaptions(tfds.core.GeneratorBasedBuilder):
  """1-4 coloured shapes per image, each image with 5 captions naming every object (size,
  color, shape, count) in different words and orders, and the layout where it is
  unambiguous (one object's region; the relation between two groups)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ShapesCaptionsConfig(name="default", description="50k training images, 64 px."),
      ShapesCaptionsConfig(name="small", description="10k training images, 64 px.",
                           num_train=10_000, num_validation=500, num_test=500),
      ShapesCaptionsConfig(name="tiny", description="A few hundred images, for tests.",
                           num_train=128, num_validation=32, num_test=32),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    """objects: each object's attributes and its center (x, y) in [0, 1] image coordinates,
    y down: what an attribute classifier is trained on."""
    label = lambda names: tfds.features.ClassLabel(names=list(names))
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "objects": tfds.features.Sequence({
                "shape": label(scenes.SHAPES), "color": label(scenes.COLORS),
                "size": label(scenes.SIZES), "x": np.float32,
                "y": np.float32}),
            "image_id": np.int64,
        }),
        disable_shuffling=True,  # Deterministic order; input pipelines shuffle anyway.
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager
                        ) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
    del dl_manager  # Everything is generated locally.
    config = self.builder_config
    return {split: self._generate_examples(shapes_common.split_seed(config.seed, split),
                                           getattr(config, f"num_{split}"),
                                           unique=split != "train")
            for split in shapes_common.SPLIT_SEED_OFFSETS}

  def _generate_examples(self, seed: int, num_images: int, unique: bool
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    config = self.builder_config
    for ex in captions.iterate_examples(seed, num_images, config.image_size,
                                        config.captions_per_image, config.max_objects,
                                        unique=unique):
      yield ex["image_id"], {**ex, "image": shapes_common.encode_png(ex["image"])}
