"""`coco_karpathy`: COCO captions in Karpathy's splits, from files downloaded into TFDS's
manual_dir.

Its name is not `coco_captions` because TFDS ships a builder of that name (one that downloads
COCO itself); two builders of one name cannot both be registered.

Build it with `tfds.builder("coco_karpathy", data_dir=...).download_and_prepare(
download_config=tfds.download.DownloadConfig(manual_dir=DIR))`, or name it in a config's data
(`name="coco_karpathy", manual_dir=DIR`); MANUAL_DOWNLOAD_INSTRUCTIONS says what DIR holds.

Splits, as Karpathy's split is used in practice: train (his "train" and "restval": 113,287
images), validation ("val": 5,000) and test ("test": 5,000), all from COCO 2014.
Features: image (the JPEG as released: any size, some grayscale; `decode` makes them RGB),
captions (each sentence's `raw` text, stripped of surrounding whitespace; 5 to 7 per image) and
image_id (COCO's id, `cocoid`). The same pp ops serve it as `shapes_captions`, which has these
features and `objects`. An image that is missing, unreadable, empty or does not decode is
skipped and counted per reason, in the log and in `builder.info.metadata` as
"skipped/SPLIT/REASON" (and "skipped/SPLIT/total"). Config `coco_karpathy/smoke`: the first
1,000 images of each split.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from multimodal.data.builders import manual_data

KARPATHY_FILE = "dataset_coco.json"
# Our split -> the Karpathy splits it holds.
_SPLITS = {"train": ("train", "restval"), "validation": ("val",), "test": ("test",)}

_INSTRUCTIONS = f"""\
Download Karpathy's splits (caption_datasets.zip from
https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip) and the COCO 2014
images (http://images.cocodataset.org/zips/train2014.zip, 13 GB, and val2014.zip, 6 GB), and
unzip them into the manual_dir, which then holds:
  {KARPATHY_FILE}
  train2014/COCO_train2014_000000000009.jpg ...
  val2014/COCO_val2014_000000000042.jpg ...
An image that is missing or does not decode is skipped and counted (in the log and in
builder.info.metadata).
"""


def read_karpathy_split(path: epath.Path) -> dict[str, list[tuple[str, dict[str, Any]]]]:
  """Our split -> its images as (image file relative to the manual_dir, {captions,
  image_id}), in the file's order."""
  split_of = {karpathy: ours for ours, theirs in _SPLITS.items() for karpathy in theirs}
  images = manual_data.load_json(path, ["images"])["images"]
  splits = {split: [] for split in _SPLITS}
  for i, image in enumerate(images):
    where = f"{path}: images[{i}]"
    folder, filename, karpathy_split, sentences, image_id = manual_data.fields(
        image, ["filepath", "filename", "split", "sentences", "cocoid"], where)
    if karpathy_split not in split_of:
      raise ValueError(f"{where}: split {karpathy_split!r} is none of {sorted(split_of)}.")
    captions = [manual_data.fields(s, ["raw"], f"{where}.sentences")[0].strip()
                for s in sentences]
    splits[split_of[karpathy_split]].append(
        (f"{folder}/{filename}", {"captions": captions, "image_id": image_id}))
  return splits


class CocoKarpathy(tfds.core.GeneratorBasedBuilder):
  """COCO captions in Karpathy's splits; see MANUAL_DOWNLOAD_INSTRUCTIONS and the module doc."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  BUILDER_CONFIGS = manual_data.configs()

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "image_id": np.int64,
        }),
        homepage="https://cocodataset.org", metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = dl_manager.manual_dir
    path = manual_dir / KARPATHY_FILE
    if not path.exists():
      raise FileNotFoundError(
          f"coco_karpathy: {KARPATHY_FILE} not found in the manual_dir {manual_dir}.\n"
          + _INSTRUCTIONS)
    splits = read_karpathy_split(path)
    folders = sorted({file.split("/")[0] for images in splits.values() for file, _ in images})
    missing = [f"{folder}/" for folder in folders if not (manual_dir / folder).exists()]
    if missing:
      raise FileNotFoundError(
          f"coco_karpathy: {missing} not found in the manual_dir {manual_dir}.\n"
          + _INSTRUCTIONS)
    return {split: self._generate_examples(manual_dir, split, images)
            for split, images in splits.items()}

  def _generate_examples(self, manual_dir: epath.Path, split: str,
                         images: list[tuple[str, dict[str, Any]]]):
    records = ((f"cocoid {ex['image_id']}", manual_dir / file, ex) for file, ex in images)
    skipped = manual_data.SkippedRecords(f"coco_karpathy: {split}", manual_data.IMAGE_REASONS)
    for example in manual_data.examples_with_images(
        records, skipped, max_examples=self.builder_config.max_examples):
      yield example["image_id"], example
    self.info.metadata.update(skipped.metadata(split))
