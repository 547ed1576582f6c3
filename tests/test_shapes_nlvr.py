"""shapes_nlvr: statements mean what they say, every true pair has a minimally changed false
partner, labels are balanced, held-out combinations stay out of training; the builder."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from multimodal.data import pipeline
from multimodal.data.builders import shapes_nlvr
from multimodal.data.shapes import nlvr_statements as nlvr
from multimodal.data.shapes import scenes
from multimodal.data.shapes.scenes import Object, Scene


def obj(shape, color, size, x, y):
  return Object(shape, color, size, x, y, scenes.object_radius(size, 64))


# Left: a small red circle top left, a large blue square below it to the right.
LEFT = Scene((obj("circle", "red", "small", 10, 10), obj("square", "blue", "large", 40, 40)), 64)
# Right: a small red circle top right, a small red triangle just below it (extents overlap
# vertically: neither clearly above the other), a large green circle at the bottom.
RIGHT = Scene((obj("circle", "red", "small", 50, 10), obj("triangle", "red", "small", 50, 16),
               obj("circle", "green", "large", 20, 50)), 64)
RED_CIRCLE = (("color", "red"), ("shape", "circle"))
BLUE = (("color", "blue"),)
RED = (("color", "red"),)
CIRCLE = (("shape", "circle"),)
OBJECTS = ()


@pytest.mark.parametrize("statement, text, want", [
    (nlvr.Statement("exist_both", (RED_CIRCLE,)), "both images contain a red circle", True),
    (nlvr.Statement("exist_both", (BLUE,)), "both images contain a blue object", False),
    (nlvr.Statement("exist_one", (BLUE,)), "exactly one image contains a blue object", True),
    (nlvr.Statement("exist_neither", ((("color", "cyan"),),)),
     "neither image contains a cyan object", True),
    (nlvr.Statement("count_side", (RED,), side="right", number=2),
     "the right image has exactly two red objects", True),
    (nlvr.Statement("count_side", (OBJECTS,), side="left", number=1),
     "the left image has exactly one object", False),
    (nlvr.Statement("count_compare", (CIRCLE,), side="left", word="fewer"),
     "the left image has fewer circles than the right image", True),
    (nlvr.Statement("count_compare", (RED_CIRCLE,), side="right", word="more"),
     "the right image has more red circles than the left image", False),
    (nlvr.Statement("count_total", (CIRCLE,), number=3),
     "the two images have three circles in total", True),
    (nlvr.Statement("relation_side", (RED_CIRCLE, BLUE), side="left", word="above"),
     "the left image has a red circle above a blue object", True),
    (nlvr.Statement("relation_side", (RED_CIRCLE, BLUE), side="left", word="right of"),
     "the left image has a red circle right of a blue object", False),
    # Overlapping extents: unclear, never used.
    (nlvr.Statement("relation_side", (RED_CIRCLE, (("shape", "triangle"),)), side="right",
                    word="above"), "the right image has a red circle above a triangle", None),
    # Some red object is clearly above some circle in each image (left: none is; right: the
    # red circle / triangle above the green circle).
    (nlvr.Statement("relation_one", (RED, CIRCLE), word="above"),
     "exactly one image has a red object above a circle", True),
    (nlvr.Statement("relation_both", (RED, CIRCLE), word="above"),
     "both images have a red object above a circle", False),
    (nlvr.Statement("relation_both", (CIRCLE, OBJECTS), word="above"),
     "both images have a circle above an object", True),
])
def test_statements_read_and_evaluate_as_worked_out_by_hand(statement, text, want):
  assert statement.text() == text
  assert nlvr.truth(statement, LEFT, RIGHT) is want


def one_object_apart(a: Scene, b: Scene) -> bool:
  """b is a with one object recoloured or reshaped (in place), removed, or added."""
  if len(b.objects) == len(a.objects):
    diffs = [(x, y) for x, y in zip(a.objects, b.objects) if x != y]
    return len(diffs) == 1 and sum(
        getattr(diffs[0][0], f) != getattr(diffs[0][1], f)
        for f in ("shape", "color", "size", "x", "y")) == 1
  bigger, smaller = (b, a) if len(b.objects) > len(a.objects) else (a, b)
  return (len(bigger.objects) == len(smaller.objects) + 1
          and set(smaller.objects) < set(bigger.objects))


@pytest.mark.parametrize("heldout", [False, True])
def test_each_true_pair_has_a_false_partner_one_object_apart(heldout):
  sides = collections.Counter()
  for k in range(4 * len(nlvr.TEMPLATES)):
    template = nlvr.TEMPLATES[k % len(nlvr.TEMPLATES)]
    rng = np.random.default_rng((123, k))
    statement, left, right, side, edited = nlvr.sample_pair(rng, template, heldout)
    assert statement.template == template
    assert statement.heldout() == heldout
    assert nlvr.truth(statement, left, right) is True, statement.text()
    false_pair = (edited, right) if side == "left" else (left, edited)
    assert nlvr.truth(statement, *false_pair) is False, statement.text()
    assert one_object_apart(left if side == "left" else right, edited)
    if statement.template in ("count_side", "relation_side"):
      assert side == statement.side  # The other image cannot make it false.
    sides[side] += 1
  assert min(sides.values()) >= 8, sides


def test_examples_come_in_true_false_pairs_balanced_per_statement_and_template():
  examples = list(nlvr.iterate_examples(seed=4, num_examples=2 * 3 * len(nlvr.TEMPLATES)))
  by_statement = collections.defaultdict(collections.Counter)
  for ex in examples:
    by_statement[ex["statement"]][ex["label"]] += 1
  assert all(c[True] == c[False] for c in by_statement.values())
  assert collections.Counter(ex["template"] for ex in examples) == {
      t: 6 for t in nlvr.TEMPLATES}
  for true, false in zip(examples[::2], examples[1::2]):
    assert true["label"] and not false["label"] and true["changed"] == "none"
    assert true["statement"] == false["statement"] and true["pair_id"] == false["pair_id"]
    side = false["changed"]
    kept = "right" if side == "left" else "left"
    np.testing.assert_array_equal(true[f"{kept}_image"], false[f"{kept}_image"])
    assert np.any(true[f"{side}_image"] != false[f"{side}_image"])
  again = list(nlvr.iterate_examples(seed=4, num_examples=7))
  assert [e["statement"] for e in again] == [e["statement"] for e in examples[:7]]


def test_heldout_colors_appear_only_in_the_heldout_split():
  for heldout in (False, True):
    for ex in nlvr.iterate_examples(seed=1, num_examples=2 * len(nlvr.TEMPLATES),
                                    heldout=heldout):
      mentioned = nlvr.HELDOUT_COLORS[ex["template"]] in ex["statement"].split()
      assert mentioned == heldout, ex["statement"]


def test_builder_writes_the_splits_with_pairs_of_images(tmp_path):
  builder = tfds.builder("shapes_nlvr/tiny", data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert set(builder.info.splits) == set(shapes_nlvr.SPLITS)
  statements = {}
  for split, n in (("train", 64), ("validation", 16), ("test", 16), ("test_heldout", 16)):
    examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
    assert len(examples) == n
    assert sum(ex["label"] for ex in examples) == n // 2
    assert examples[0]["left_image"].shape == examples[0]["right_image"].shape == (64, 64, 3)
    statements[split] = {ex["statement"] for ex in examples}
  # New scenes in every split: the seeds differ, so the statements do too.
  assert statements["test"] != statements["test_heldout"]

  # data.where names a ClassLabel's values (the template) by name.
  kept = pipeline.make_dataset(builder, split="train", pp="keep('template')", batch_size=64,
                               train=False, where={"template": ["exist_both", "count_side"]})
  templates = {builder.info.features["template"].int2str(t)
               for b in kept.as_numpy_iterator() for t in b["template"]}
  assert templates == {"exist_both", "count_side"}
  with pytest.raises(ValueError, match="not among its labels"):
    pipeline.make_dataset(builder, split="train", pp="keep('template')", batch_size=8,
                          train=False, where={"template": ["exists_both"]})


def _one_image_feature(statement: nlvr.Statement, scene: Scene, side: str) -> tuple:
  """What one image tells about a statement: its count of the named objects (capped at 3)
  or whether it has the relation, with the statement's template, side, word and number."""
  if statement.template.startswith("relation_"):
    value = nlvr.has_relation(scene, statement.refs, statement.word)
  else:
    value = min(nlvr.count(scene, statement.refs[0]), 3)
  return (statement.template, statement.side == side, statement.word, statement.number, value)


def _labelled_pairs(seed: int, num_pairs: int) -> list[tuple[nlvr.Statement, Scene, Scene, bool]]:
  out = []
  for k in range(num_pairs):
    rng = np.random.default_rng((seed, k))
    statement, left, right, side, edited = nlvr.sample_pair(
        rng, nlvr.TEMPLATES[k % len(nlvr.TEMPLATES)], heldout=False)
    out.append((statement, left, right, True))
    out.append((statement, *((edited, right) if side == "left" else (left, edited)), False))
  return out


def test_one_image_is_not_enough():
  """The best label per (statement kind, what one image shows), fit on 1,200 pairs, scores
  below 0.8 on others (measured 0.67 left, 0.70 right on 3,000 / 1,000 pairs): the pair's
  other image decides the rest."""
  train, test = _labelled_pairs(31, 1200), _labelled_pairs(32, 400)
  for index, side in ((1, "left"), (2, "right")):
    table = collections.defaultdict(collections.Counter)
    for example in train:
      table[_one_image_feature(example[0], example[index], side)][example[3]] += 1
    guesses = [table[_one_image_feature(ex[0], ex[index], side)] for ex in test]
    # Unseen in training: guess true.
    right = [(g.most_common(1)[0][0] if g else True) == ex[3] for g, ex in zip(guesses, test)]
    assert 0.55 < np.mean(right) < 0.8, (side, np.mean(right))
