"""`shapes_av`: short audio-visual clips of moving Shapes whose bounces sound, generated locally.

Event classification (which shapes bounced), counting (how many bounces) and audio-video
offset estimation on one set of clips (`shapes/av_clips.py`). Each split draws its clips from
its own seed; the offset is known exactly, and on the `offset_share` of the clips that are
shifted it is uniform in [-max_offset_ms, max_offset_ms].
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from multimodal.data.builders import shapes_common
from multimodal.data.shapes import av_clips
from multimodal.data.shapes.scenes import COLORS, SHAPES, SIZES


@dataclasses.dataclass
class ShapesAvConfig(tfds.core.BuilderConfig):
  """Split sizes (in clips), the base seed, and how clips are made (`av_clips.ClipSettings`)."""
  num_train: int = 10_000
  num_validation: int = 1_000
  num_test: int = 1_000
  seed: int = 0
  clip: av_clips.ClipSettings = av_clips.ClipSettings()


class ShapesAv(tfds.core.GeneratorBasedBuilder):
  """1-3 moving shapes per clip (16 frames at 32 px, 1 s of 16 kHz audio by default)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "audio_wide: each clip's sound with no offset over a span longer "
                            "by max_offset_ms on each side (any offset's audio is a slice; "
                            "the resample_offset pp op cuts it). The other features are "
                            "unchanged."}
  BUILDER_CONFIGS = [
      ShapesAvConfig(name="default", description="10k training clips of 1 s: 16 frames at "
                     "32 px, 16 kHz audio."),
      ShapesAvConfig(name="small", description="2k training clips, as default.",
                     num_train=2_000, num_validation=500, num_test=500),
      ShapesAvConfig(name="tiny", description="A few dozen short clips, for tests.",
                     num_train=32, num_validation=8, num_test=8,
                     clip=av_clips.ClipSettings(num_frames=8, fps=8.0, sample_rate=8_000)),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    clip = self.builder_config.clip
    label = lambda names: tfds.features.ClassLabel(names=list(names))
    samples = int(round(clip.duration * clip.sample_rate))
    wide_samples = int(round((clip.duration + 2 * clip.max_offset_ms / 1000.0)
                             * clip.sample_rate))
    size = clip.image_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(shape=(clip.num_frames, size, size, 3),
                                          dtype=np.uint8, encoding="zlib"),
            "audio": tfds.features.Tensor(shape=(samples,), dtype=np.int16,
                                          encoding="zlib"),
            "audio_wide": tfds.features.Tensor(shape=(wide_samples,), dtype=np.int16,
                                               encoding="zlib"),
            "event": tfds.features.ClassLabel(num_classes=av_clips.NUM_EVENT_CLASSES),
            "num_bounces": tfds.features.ClassLabel(num_classes=av_clips.MAX_BOUNCES + 1),
            "offset_ms": np.int32,
            "alignment": label(("synced", "shifted")),
            "bounces": tfds.features.Sequence({
                "time": np.float32, "color": label(COLORS), "shape": label(SHAPES),
                "size": label(SIZES)}),
            "clip_id": np.int64,
        }),
        metadata=tfds.core.MetadataDict(
            sample_rate=clip.sample_rate, fps=clip.fps,
            event_bits=list(SHAPES)),  # bit i of `event`: SHAPES[i] bounced
        disable_shuffling=True,  # Deterministic order; input pipelines shuffle anyway.
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager
                        ) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
    del dl_manager  # Everything is generated locally.
    config = self.builder_config
    return {split: self._generate_examples(shapes_common.split_seed(config.seed, split),
                                           getattr(config, f"num_{split}"))
            for split in shapes_common.SPLIT_SEED_OFFSETS}

  def _generate_examples(self, seed: int, num_clips: int
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    for ex in av_clips.iterate_examples(seed, num_clips, self.builder_config.clip):
      bounces = ex["bounces"]
      yield ex["clip_id"], {
          **ex, "alignment": "synced" if ex["offset_ms"] == 0 else "shifted",
          "bounces": {"time": bounces["time"], "color": bounces["color"],
                      "shape": bounces["shape"], "size": bounces["size"]}}
