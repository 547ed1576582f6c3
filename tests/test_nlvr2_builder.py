"""The nlvr2 builder on a tiny copy of the NLVR2 release's layout: JSON Lines files, image pairs
of different sizes (train's in numbered subfolders), bad records skipped and counted per
reason, missing files named, and a batch through the pp ops that serve shapes_nlvr."""
from __future__ import annotations

import io
import json
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from multimodal.data import pp
from multimodal.data.builders import manual_data, nlvr2

_EXTRA = {  # Fields of the release that the builder ignores.
    "validation": {"77": "True"}, "left_url": "https://example.com/a.jpg", "writer": "103",
    "right_url": "https://example.com/b.jpg", "extra_validations": {"56": "True"}}

# Per split: (JSON record, {image file relative to the manual_dir: (shape, format); format None:
# not a decodable image}). Records of one image pair share its files; a file is written once.
_RECORDS: dict[str, list[tuple[dict, dict[str, tuple[tuple[int, ...], str | None]]]]] = {
    "train": [
        ({"identifier": "train-10171-0-0", "directory": 37, "label": "True",
          "sentence": "An image shows one leather pencil case.", "synset": "pencil case",
          "query": "leather pencil case12", **_EXTRA},
         {"images/train/37/train-10171-0-img0.png": ((6, 9, 3), "PNG"),
          "images/train/37/train-10171-0-img1.png": ((11, 4, 3), "PNG")}),
        ({"identifier": "train-10171-0-1", "directory": 37, "label": "False",
          "sentence": "  Both images contain pens. "}, {}),  # The same pair; text kept as is.
        ({"identifier": "train-20-1-0", "directory": "0", "label": "True",
          "sentence": "Exactly one image has a dog."},
         {"images/train/0/train-20-1-img0.png": ((5, 5, 3), "PNG"),
          "images/train/0/train-20-1-img1.png": ((3, 8, 3), "PNG")}),
        ({"identifier": "train-20-1-1", "directory": 0, "label": "true",  # bad_label
          "sentence": "A lowercase label."}, {}),
        ({"identifier": "train-30-2-0", "directory": 1, "label": "False",  # missing_image
          "sentence": "Its right image is missing."},
         {"images/train/1/train-30-2-img0.png": ((4, 4, 3), "PNG")}),
        ({"identifier": "train-31-0-0", "label": "True",  # missing_field: no directory
          "sentence": "Where are my images?"}, {}),
    ],
    "validation": [
        ({"identifier": "dev-850-0-0", "label": "False", "sentence": "Two dogs in total.",
          "synset": "dog", "query": "two dogs3", **_EXTRA},
         {"dev/dev-850-0-img0.png": ((7, 5, 3), "PNG"),
          "dev/dev-850-0-img1.png": ((4, 10, 3), "PNG")}),
        ({"identifier": "dev-850-0-1", "label": "True", "sentence": "犬がいる。"}, {}),
        ({"identifier": "dev-850-0-0", "label": "True", "sentence": "A repeat."}, {}),
        ({"identifier": "dev850", "label": "True", "sentence": "A bad identifier."}, {}),
        ({"identifier": "dev-851-0-0", "label": "True", "sentence": None}, {}),  # wrong_type
    ],
    "test": [
        ({"identifier": "test1-261-0-0", "label": "True", "sentence": "A JPEG named .png."},
         {"test1/test1-261-0-img0.png": ((9, 6, 3), "JPEG"),
          "test1/test1-261-0-img1.png": ((6, 6, 3), "PNG")}),
        ({"identifier": "test1-262-0-0", "label": "False", "sentence": "A corrupt image."},
         {"test1/test1-262-0-img0.png": ((1,), None),
          "test1/test1-262-0-img1.png": ((5, 7, 3), "PNG")}),
    ],
}
_GOOD = {"train": ["train-10171-0-0", "train-10171-0-1", "train-20-1-0"],
         "validation": ["dev-850-0-0", "dev-850-0-1"], "test": ["test1-261-0-0"]}
_SKIPPED = {
    "skipped/train/bad_label": 1, "skipped/train/missing_image": 1,
    "skipped/train/missing_field": 1, "skipped/train/total": 3,
    "skipped/validation/duplicate_identifier": 1, "skipped/validation/bad_identifier": 1,
    "skipped/validation/wrong_type": 1, "skipped/validation/total": 3,
    "skipped/test/corrupt_image": 1, "skipped/test/total": 1}


def _pixels(shape: tuple[int, ...]) -> np.ndarray:
  """A distinct uint8 image per shape."""
  return np.random.default_rng(shape).integers(0, 256, shape, np.uint8)


def _encoded(shape: tuple[int, ...], fmt: str | None) -> bytes:
  if fmt is None:
    return b"\x89PNG\r\n\x1a\n not an image"
  if fmt == "PNG":
    return tf.io.encode_png(_pixels(shape)).numpy()
  buf = io.BytesIO()
  Image.fromarray(_pixels(shape)).save(buf, fmt)
  return buf.getvalue()


def _write_nlvr2(root: pathlib.Path, records: dict[str, list] = _RECORDS) -> None:
  """The JSON Lines files where the lil-lab/nlvr clone has them, and the images they name."""
  data = root / nlvr2.DATA_DIR
  data.mkdir(parents=True)
  for split, (json_file, folder) in nlvr2.SPLITS.items():
    (root / folder).mkdir(parents=True)
    lines = [json.dumps(record) for record, _ in records[split]]
    (data / json_file).write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    for record, images in records[split]:
      for file, (shape, fmt) in images.items():
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        (root / file).write_bytes(_encoded(shape, fmt))


def _images_of(identifier: str) -> tuple[str, str]:
  """The (left, right) files the test wrote for this identifier's pair."""
  stem = identifier.rsplit("-", 1)[0]
  files = [f for split in _RECORDS.values() for _, images in split for f in images]
  return tuple(next(f for f in files if f.endswith(f"/{stem}-img{i}.png")) for i in (0, 1))


def _shape_of(file: str) -> tuple[int, ...]:
  return next(images[file][0] for split in _RECORDS.values() for _, images in split
              if file in images)


def _build(manual_dir: pathlib.Path, **kwargs) -> tfds.core.DatasetBuilder:
  builder = tfds.builder("nlvr2", data_dir=manual_dir.parent / "tfds", **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False))
  return builder


def _examples(builder: tfds.core.DatasetBuilder, split: str, **kwargs) -> dict[str, dict]:
  return {ex["identifier"].decode(): ex
          for ex in tfds.as_numpy(builder.as_dataset(split, **kwargs))}


@pytest.fixture(scope="module")
def nlvr2_dir(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("nlvr2") / "manual"
  _write_nlvr2(root)
  return root


@pytest.fixture(scope="module")
def builder(nlvr2_dir) -> tfds.core.DatasetBuilder:
  return _build(nlvr2_dir)


def test_splits_features_and_skipped_records(builder):
  splits = builder.info.splits
  assert {s: splits[s].num_examples for s in splits} == {s: len(ids) for s, ids in _GOOD.items()}
  assert set(builder.info.features) == {
      "left_image", "right_image", "statement", "label", "identifier", "synset", "query"}
  assert dict(builder.info.metadata) == _SKIPPED


def test_features_shared_with_shapes_nlvr_are_the_same(builder, tmp_path):
  shapes = tfds.builder("shapes_nlvr/tiny", data_dir=tmp_path).info.features  # Not built.
  for name in ("left_image", "right_image", "statement", "label"):
    ours, theirs = builder.info.features[name], shapes[name]
    assert (type(ours), ours.shape, ours.dtype) == (type(theirs), theirs.shape, theirs.dtype)


def test_examples_have_the_records_fields_and_their_pairs_pixels(builder):
  records = {}  # identifier -> its first record (a later repeat is skipped).
  for split in _RECORDS.values():
    for record, _ in split:
      records.setdefault(record["identifier"], record)
  for split, ids in _GOOD.items():
    examples = _examples(builder, split)
    assert sorted(examples) == sorted(ids)
    for identifier, ex in examples.items():
      record = records[identifier]
      assert ex["statement"].decode() == record["sentence"]  # Exactly, spaces and all.
      assert ex["label"].dtype == np.bool_ and ex["label"] == (record["label"] == "True")
      assert ex["synset"].decode() == record.get("synset", "")
      assert ex["query"].decode() == record.get("query", "")
      left, right = _images_of(identifier)
      for key, file in (("left_image", left), ("right_image", right)):
        if file.endswith("test1-261-0-img0.png"):  # JPEG: lossy, so the shape only.
          assert ex[key].shape == _shape_of(file)
        else:
          np.testing.assert_array_equal(ex[key], _pixels(_shape_of(file)), err_msg=file)
  assert _examples(builder, "validation")["dev-850-0-1"]["statement"].decode() == "犬がいる。"


def test_images_are_stored_as_released_and_batch_through_the_pp_ops(builder, nlvr2_dir):
  skip = {"left_image": tfds.decode.SkipDecoding(), "right_image": tfds.decode.SkipDecoding()}
  for split, ids in _GOOD.items():
    for identifier, ex in _examples(builder, split, decoders=skip).items():
      left, right = _images_of(identifier)
      assert ex["left_image"] == (nlvr2_dir / left).read_bytes()
      assert ex["right_image"] == (nlvr2_dir / right).read_bytes()

  pp_fn = pp.parse("decode(key='left_image')|decode(key='right_image')|"
                   "resize(8, key='left_image')|resize(8, key='right_image')|"
                   "keep('left_image', 'right_image', 'label')")
  ds = builder.as_dataset("test", decoders=skip).map(pp_fn).batch(2)
  (batch,) = list(tfds.as_numpy(ds))  # The JPEG named .png decodes like a PNG.
  assert batch["left_image"].shape == batch["right_image"].shape == (1, 8, 8, 3)
  assert batch["label"].tolist() == [True]


def test_max_examples_keeps_the_first_records(nlvr2_dir):
  assert [(c.name, c.max_examples) for c in nlvr2.Nlvr2.BUILDER_CONFIGS] == [
      ("default", None), ("smoke", manual_data.SMOKE_EXAMPLES)]
  builder = _build(nlvr2_dir, config=manual_data.ManualDataConfig(name="first2",
                                                                  max_examples=2))
  splits = builder.info.splits
  assert {s: splits[s].num_examples for s in splits} == {"train": 2, "validation": 2, "test": 1}
  assert sorted(_examples(builder, "train")) == ["train-10171-0-0", "train-10171-0-1"]
  # Train stops before its bad records; validation's come after its two examples too.
  assert dict(builder.info.metadata) == {
      "skipped/train/total": 0, "skipped/validation/total": 0,
      "skipped/test/corrupt_image": 1, "skipped/test/total": 1}


def test_missing_json_and_image_folder_are_named(tmp_path):
  root = tmp_path / "manual"
  _write_nlvr2(root)
  (root / nlvr2.DATA_DIR / "dev.json").unlink()
  shutil.rmtree(root / "test1")
  with pytest.raises(FileNotFoundError,
                     match=r"nlvr2: \['nlvr/nlvr2/data/dev\.json', 'test1/'\] not found in "
                     r"the manual_dir .*manual\.\n(.|\n)*github\.com/lil-lab/nlvr"):
    _build(root)


def test_a_line_that_is_not_json_is_an_error_naming_the_file_and_line(tmp_path):
  _write_nlvr2(tmp_path)
  path = tmp_path / nlvr2.DATA_DIR / "train.json"
  lines = path.read_text().splitlines()
  path.write_text("\n".join([lines[0], lines[1][:40], *lines[2:]]))  # A truncated line 2.
  skipped = nlvr2.skipped_records("train")
  with pytest.raises(ValueError, match=r"train\.json:2 is not valid JSON .*download complete"):
    list(nlvr2.read_examples(epath.Path(tmp_path), "train", skipped))
  path.write_text('["not", "an object"]\n')
  with pytest.raises(ValueError, match=r"train\.json:1: expected a JSON object, got list"):
    list(nlvr2.read_examples(epath.Path(tmp_path), "train", skipped))
