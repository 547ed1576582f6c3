"""shapes_captions: every caption is true of its image and names all of it; the builder."""
from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from multimodal.data import pipeline, tokenizer
from multimodal.data import pp as pp_lib
from multimodal.data.builders import shapes_captions
from multimodal.data.shapes import captions, scenes, vqa_questions

_REPO = Path(__file__).resolve().parents[1]
_COUNTS = {"a": 1, "two": 2, "three": 3, "four": 4}
_GROUP = re.compile(r"\b(a|two|three|four) (small|large) ({}) ({})s?\b".format(
    "|".join(scenes.COLORS), "|".join(scenes.SHAPES)))


def mentions(caption: str) -> list[tuple[tuple[str, str, str], int]]:
  """The (kind, count) groups a caption names, in order."""
  return [((size, color, shape), _COUNTS[count])
          for count, size, color, shape in _GROUP.findall(caption)]


def scene_groups(objects) -> collections.Counter:
  return collections.Counter((o.size, o.color, o.shape) for o in objects)


@pytest.fixture(scope="module")
def captioned():
  """(scene, captions) for 600 scenes of a seed no builder uses."""
  out = []
  for k in range(600):
    rng = np.random.default_rng((77, k))
    scene = scenes.sample_scene(rng, 64, max_objects=captions.MAX_OBJECTS)
    out.append((scene, captions.captions(scene, rng)))
  return out


def test_every_caption_names_every_object_once(captioned):
  for scene, texts in captioned:
    assert len(texts) == captions.CAPTIONS_PER_IMAGE == len(set(texts))
    for text in texts:
      named = mentions(text)
      assert collections.Counter(dict(named)) == scene_groups(scene.objects), text
      assert len(named) == len(set(k for k, _ in named)), text  # No group named twice.


def _holds(first, second, word: str) -> bool:
  """Every object of `first` is `word` of every object of `second`, extents apart."""
  axis, sign = {"above": ("y", 1), "below": ("y", -1), "left": ("x", 1), "right": ("x", -1)}[word]
  return all(sign * (getattr(b, axis) - getattr(a, axis)) >= a.radius + b.radius
             for a in first for b in second)


def _stated_relation(text: str) -> tuple[int, int, str] | None:
  """(index of the subject group, of the other group, word) that a relation caption states."""
  for pattern, word, subject_first in (
      (r" above ", "above", True), (r" below ", "below", True),
      (r" with .* over (it|them)$", "below", True), (r" with .* under (it|them)$", "above", True),
      (r" to the left of ", "left", True), (r" to the right of ", "right", True),
      (r" with .* to (its|their) right$", "left", True),
      (r" with .* to (its|their) left$", "right", True)):
    if re.search(pattern, text):
      return (0, 1, word) if subject_first else (1, 0, word)
  return None


def test_relations_and_regions_are_true(captioned):
  seen = collections.Counter()
  for scene, texts in captioned:
    for text in texts:
      if len(scene.objects) == 1:
        obj = scene.objects[0]
        row = 0 if " top" in text else 2 if " bottom" in text else 1
        col = 0 if " left" in text else 2 if " right" in text else 1
        assert (min(int(3 * obj.y / 64), 2), min(int(3 * obj.x / 64), 2)) == (row, col), text
        seen["region"] += 1
        continue
      stated = _stated_relation(text)
      if stated is None:
        continue
      named = mentions(text)
      assert len(named) == 2, text
      subject, other, word = stated
      members = [[o for o in scene.objects if (o.size, o.color, o.shape) == kind]
                 for kind, _ in named]
      assert _holds(members[subject], members[other], word), text
      seen[word] += 1
  assert min(seen.values()) >= 20 and len(seen) == 5, seen  # Every kind was checked.


def test_captions_differ_in_words_and_order(captioned):
  orders = 0
  for scene, texts in captioned:
    if len(scene_groups(scene.objects)) >= 3:
      orders += len({tuple(k for k, _ in mentions(t)) for t in texts}) > 1
  assert orders > 100


def test_iterate_examples_is_deterministic_and_unique_descriptions_are_distinct():
  first = list(captions.iterate_examples(seed=5, num_images=40, unique=True))
  again = list(captions.iterate_examples(seed=5, num_images=40, unique=True))
  assert [e["captions"] for e in first] == [e["captions"] for e in again]
  assert [e["image_id"] for e in first] == list(range(40))
  # Rebuild each scene from the stored objects: distinct canonical descriptions.
  rebuilt = [scenes.Scene(tuple(scenes.Object(
      o["shape"], o["color"], o["size"], o["x"] * 64, o["y"] * 64,
      scenes.object_radius(o["size"], 64)) for o in e["objects"]), 64) for e in first]
  descriptions = [captions.canonical_description(s) for s in rebuilt]
  assert len(set(descriptions)) == 40


def test_unique_descriptions_run_out_with_a_clear_error():
  # One object: 2 sizes x 6 colors x 3 shapes x 9 regions = 324 distinct descriptions.
  with pytest.raises(ValueError, match="distinct descriptions"):
    list(captions.iterate_examples(seed=0, num_images=325, image_size=16, max_objects=1,
                                   unique=True))


def test_bad_caption_counts_are_errors():
  scene = scenes.sample_scene(np.random.default_rng(0), 64)
  with pytest.raises(ValueError, match="at least one caption"):
    captions.captions(scene, np.random.default_rng(0), n=0)


def test_packaged_text_tokenizer_covers_captions_and_questions():
  sp = tokenizer.load("shapes_text")
  lengths = {"caption": 0, "question": 0}
  for ex in captions.iterate_examples(seed=9, num_images=300):
    for text in ex["captions"]:
      ids = sp.encode(text)
      assert tokenizer.UNK_ID not in ids and sp.decode(ids) == text
      lengths["caption"] = max(lengths["caption"], len(ids))
  for ex in vqa_questions.iterate_examples(seed=9, num_questions=500):
    ids = sp.encode(ex["question"])
    assert tokenizer.UNK_ID not in ids and sp.decode(ids) == ex["question"]
    lengths["question"] = max(lengths["question"], len(ids))
  assert lengths["caption"] <= 23 and lengths["question"] <= 12, lengths


@pytest.fixture(scope="module")
def tiny_builder(tmp_path_factory):
  builder = shapes_captions.ShapesCaptions(config="tiny",
                                           data_dir=tmp_path_factory.mktemp("tfds"))
  builder.download_and_prepare()
  return builder


def test_builder_splits_features_and_examples(tiny_builder):
  splits = tiny_builder.info.splits
  assert {name: splits[name].num_examples for name in splits} == {
      "train": 128, "validation": 32, "test": 32}
  features = tiny_builder.info.features["objects"]
  images = {}
  for split in ("train", "validation"):
    examples = list(tfds.as_numpy(tiny_builder.as_dataset(split=split)))
    images[split] = {e["image"].tobytes() for e in examples}
    for e in examples:
      assert e["image"].shape == (64, 64, 3) and len(e["captions"]) == 5
      objects = e["objects"]
      stored = collections.Counter(
          (features["size"].int2str(s), features["color"].int2str(c),
           features["shape"].int2str(h))
          for s, c, h in zip(objects["size"], objects["color"], objects["shape"]))
      for text in e["captions"]:
        assert collections.Counter(dict(mentions(text.decode()))) == stored
      assert np.all((objects["x"] > 0) & (objects["x"] < 1))
  assert not images["train"] & images["validation"]

  # The validation split is iterate_examples' unique stream of its seed, in order.
  expected = captions.iterate_examples(seed=1, num_images=32, unique=True)
  for got, want in zip(tfds.as_numpy(tiny_builder.as_dataset(split="validation")), expected):
    assert [c.decode() for c in got["captions"]] == want["captions"]
    np.testing.assert_array_equal(got["image"], want["image"])


def test_tokenizer_command_trains_on_captions(tiny_builder, tmp_path):
  output = tmp_path / "sp.model"
  subprocess.run(
      [sys.executable, "-m", "multimodal.data.tokenizer", "--captions_from=shapes_captions/tiny", f"--data_dir={tiny_builder.data_dir_root}",
       f"--output={output}", "--vocab_size=60", "--model_type=bpe"],
      cwd=_REPO, check=True, capture_output=True, timeout=120)
  sp = tokenizer.load(str(output))
  assert tokenizer.UNK_ID not in sp.encode("two small red circles above a large blue square")


def test_training_draws_a_caption_per_visit_the_same_when_resumed(tiny_builder):
  """Each visit of an image draws one of its captions; a resumed stream draws the same."""
  pp = "choice('captions', out_key='caption')|keep('caption', 'image_id')"

  def batches(skip_batches, n):
    ds = pipeline.make_dataset(tiny_builder, split="train", pp=pp, batch_size=16, train=True,
                               seed=3, skip_batches=skip_batches)
    stream = ds.as_numpy_iterator()
    return [next(stream) for _ in range(n)]

  full = batches(0, 40)  # 640 draws: each of the 128 images about 5 times.
  assert all(pp_lib.RNG_KEY not in b for b in full)  # The seed stays on the host.
  resumed = batches(30, 10)
  for got, want in zip(resumed, full[30:]):
    assert got["caption"].tolist() == want["caption"].tolist()
    assert got["image_id"].tolist() == want["image_id"].tolist()
  drawn = collections.defaultdict(set)
  for batch in full:
    for image_id, caption in zip(batch["image_id"], batch["caption"]):
      drawn[image_id].add(caption)
  assert np.mean([len(c) > 1 for c in drawn.values()]) > 0.8
