"""`shapes_vqa`: VQA on procedurally rendered Shapes scenes, generated locally (no download)."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import tensorflow_datasets as tfds

from multimodal.data.builders import shapes_common
from multimodal.data.builders.vqa_features import vqa_features
from multimodal.data.shapes import vqa_questions


@dataclasses.dataclass
class ShapesVqaConfig(tfds.core.BuilderConfig):
  """Split sizes (in questions), image side in pixels and the base seed."""
  num_train: int = 100_000
  num_validation: int = 10_000
  num_test: int = 10_000
  image_size: int = 64
  seed: int = 0


_SIZE_FIELDS = ("num_train", "num_validation", "num_test", "image_size", "seed")


def _sizes(config: ShapesVqaConfig) -> dict[str, int]:
  return {f: getattr(config, f) for f in _SIZE_FIELDS}


def make_config(**overrides: int) -> ShapesVqaConfig:
  """The `default` config with some fields overridden, named after its values.

  A name derived from the values gives every distinct dataset its own cache directory; values
  equal to a built-in config return that config, which shares its cache.
  """
  unknown = set(overrides) - set(_SIZE_FIELDS)
  if unknown:
    raise TypeError(f"Unknown ShapesVqaConfig fields {sorted(unknown)}; expected some of "
                    f"{_SIZE_FIELDS}.")
  sizes = {**_sizes(ShapesVqa.BUILDER_CONFIGS[0]), **overrides}
  for config in ShapesVqa.BUILDER_CONFIGS:
    if _sizes(config) == sizes:
      return config
  name = ("train{num_train}_validation{num_validation}_test{num_test}"
          "_{image_size}px_seed{seed}").format(**sizes)
  return ShapesVqaConfig(name=name, description=f"Custom sizes: {sizes}.", **sizes)


class ShapesVqa(tfds.core.GeneratorBasedBuilder):
  """Single-word-answer questions (exist, count, color, shape, size, relation, compare_count)
  about 1-6 coloured shapes; answers are balanced so the question text alone scores <= 60%."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ShapesVqaConfig(name="default", description="100k training questions, 64 px."),
      ShapesVqaConfig(name="large", description="700k training questions (100k scenes), "
                      "64 px; validation and test as in default.", num_train=700_000),
      ShapesVqaConfig(name="small", description="20k training questions, 64 px.",
                      num_train=20_000, num_validation=2_000, num_test=2_000),
      ShapesVqaConfig(name="tiny", description="A few hundred questions, for tests.",
                      num_train=256, num_validation=64, num_test=64),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=vqa_features(),
        # Keep generation order (a scene's questions together): deterministic and cheaper to
        # write; input pipelines shuffle anyway.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager
                        ) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
    del dl_manager  # Everything is generated locally.
    config = self.builder_config
    return {split: self._generate_examples(shapes_common.split_seed(config.seed, split),
                                           getattr(config, f"num_{split}"))
            for split in shapes_common.SPLIT_SEED_OFFSETS}

  def _generate_examples(self, seed: int, num_questions: int
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    png, png_scene = b"", -1
    for ex in vqa_questions.iterate_examples(seed, num_questions,
                                             self.builder_config.image_size):
      if ex["scene_id"] != png_scene:  # Encode each scene once for all its questions.
        png, png_scene = shapes_common.encode_png(ex["image"]), ex["scene_id"]
      yield ex["question_id"], {
          "image": png,
          "question": ex["question"],
          "answers": ex["answers"],
          "question_type": ex["question_type"],
          "question_id": ex["question_id"],
      }
