"""NLVR statements about a pair of Shapes scenes, each true pair next to a minimally changed
false one.

A statement speaks of the left image, the right image or both: counts, colors, shapes, sizes,
spatial relations and comparisons across the pair ("the left image has more circles than the
right image", "both images contain a red square", "exactly one image has a blue object above
a green object"). Objects are named by references (`phrases.py`) with existential meaning: "a
blue object above a green object" holds when some blue object lies above some green one with
their extents apart along the axis; it is false when no blue object lies above any green one
at all, and a statement that is neither (only overlapping extents) is never used.

Labels: every true example (statement, left, right) comes with a false partner, the same
statement with one image changed minimally (one object recoloured, reshaped, removed, or one
object added) so that it no longer holds. Each statement string is therefore as often true as
false, and so is each template: the text alone tells nothing. An edited image differs from
the original in one object only, so the model has to look at the object the statement names.

Held-out combinations: each template has one held-out color (`HELDOUT_COLORS`); statements of
the train, validation and test splits never mention their template's held-out color, those of
`test_heldout` always do (the same templates and colors, seen only in other combinations).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator

import numpy as np

from multimodal.data.shapes import phrases
from multimodal.data.shapes.phrases import RELATIONS, Reference
from multimodal.data.shapes.render import render
from multimodal.data.shapes.scenes import (
  COLORS,
  SHAPES,
  SIZES,
  Object,
  Scene,
  add_object,
  sample_scene,
)

TEMPLATES = ("exist_both", "exist_one", "exist_neither", "count_side", "count_compare",
             "count_total", "relation_side", "relation_one", "relation_both")
HELDOUT_COLORS: dict[str, str] = {t: COLORS[i % len(COLORS)] for i, t in enumerate(TEMPLATES)}
SIDES = ("left", "right")
MAX_OBJECTS = 5
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                 "nine", "ten")
_RELATION_WORDS = tuple(word for word, _, _ in RELATIONS)
_PROPOSALS_PER_PAIR = 200  # Random statements tried on a pair of scenes before new scenes.
_MAX_PAIRS_PER_EXAMPLE = 1_000


@dataclasses.dataclass(frozen=True)
class Statement:
  """A statement of one template. `refs`: the object references it names (one, or two for
  relations); `side`: the image it speaks of (count_side, relation_side) or the one said to
  have more or fewer (count_compare); `number`: count_side's and count_total's count; `word`:
  "more" / "fewer" (count_compare) or the relation ("left of", "above", ...)."""
  template: str
  refs: tuple[Reference, ...]
  side: str = ""
  number: int = 0
  word: str = ""

  def text(self) -> str:
    t, refs, side = self.template, self.refs, self.side
    other = "right" if side == "left" else "left"
    if t.startswith("exist_"):
      lead = {"exist_both": "both images contain", "exist_one": "exactly one image contains",
              "exist_neither": "neither image contains"}[t]
      return f"{lead} {_a(phrases.phrase(refs[0]))}"
    if t == "count_side":
      return (f"the {side} image has exactly {_NUMBER_WORDS[self.number]} "
              f"{phrases.phrase(refs[0], plural=self.number != 1)}")
    if t == "count_compare":
      return (f"the {side} image has {self.word} {phrases.phrase(refs[0], plural=True)} than "
              f"the {other} image")
    if t == "count_total":
      return (f"the two images have {_NUMBER_WORDS[self.number]} "
              f"{phrases.phrase(refs[0], plural=self.number != 1)} in total")
    lead = {"relation_side": f"the {side} image has", "relation_one": "exactly one image has",
            "relation_both": "both images have"}[t]
    return (f"{lead} {_a(phrases.phrase(refs[0]))} {self.word} "
            f"{_a(phrases.phrase(refs[1]))}")

  def colors(self) -> set[str]:
    return {value for ref in self.refs for attribute, value in ref if attribute == "color"}

  def heldout(self) -> bool:
    """Whether it mentions its template's held-out color."""
    return HELDOUT_COLORS[self.template] in self.colors()


def _a(phrase: str) -> str:
  return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def count(scene: Scene, ref: Reference) -> int:
  return sum(phrases.matches(obj, ref) for obj in scene.objects)


def has_relation(scene: Scene, refs: tuple[Reference, Reference], word: str) -> bool | None:
  """Whether some object matching refs[0] is `word` some other matching refs[1]: True when a
  pair's extents are apart along the axis, False when no pair is even loosely so, None (an
  unclear case) otherwise."""
  _, axis, sign = next(r for r in RELATIONS if r[0] == word)
  gaps = [(sign * (getattr(b, axis) - getattr(a, axis)), a.radius + b.radius)
          for a in scene.objects if phrases.matches(a, refs[0])
          for b in scene.objects if b is not a and phrases.matches(b, refs[1])]
  if any(gap >= reach for gap, reach in gaps):
    return True
  if any(gap > 0 for gap, _ in gaps):
    return None
  return False


def truth(statement: Statement, left: Scene, right: Scene) -> bool | None:
  """Whether the statement holds of the pair; None where a relation in it is unclear."""
  t, refs = statement.template, statement.refs
  scenes = {"left": left, "right": right}
  if t.startswith("exist_"):
    present = sum(count(s, refs[0]) > 0 for s in (left, right))
    return present == {"exist_both": 2, "exist_one": 1, "exist_neither": 0}[t]
  if t == "count_side":
    return count(scenes[statement.side], refs[0]) == statement.number
  if t == "count_compare":
    other = "right" if statement.side == "left" else "left"
    difference = count(scenes[statement.side], refs[0]) - count(scenes[other], refs[0])
    return difference > 0 if statement.word == "more" else difference < 0
  if t == "count_total":
    return count(left, refs[0]) + count(right, refs[0]) == statement.number
  if t == "relation_side":
    return has_relation(scenes[statement.side], refs, statement.word)
  held = [has_relation(s, refs, statement.word) for s in (left, right)]
  if None in held:
    return None
  return sum(held) == (1 if t == "relation_one" else 2)


def _random_reference(rng: np.random.Generator, scene_objects: list[Object],
                      allow_empty: bool) -> Reference:
  """A reference to one of the objects (or, one time in four, to any values): those that
  occur make true statements likely; the others, false ones to be rejected."""
  templates = phrases.ALL_TEMPLATES if allow_empty else phrases.ALL_TEMPLATES[1:]
  template = templates[rng.integers(len(templates))]
  if scene_objects and rng.random() < 0.75:
    return phrases.reference(scene_objects[rng.integers(len(scene_objects))], template)
  options = phrases.references(template)
  return options[rng.integers(len(options))]


def propose(template: str, rng: np.random.Generator, left: Scene, right: Scene) -> Statement:
  """A random statement of the template, its references drawn mostly from the pair's objects
  and its numbers near the pair's counts (true or not: the caller checks)."""
  objects = list(left.objects + right.objects)
  side = SIDES[rng.integers(2)]
  if template.startswith("relation_"):
    scene = left if side == "left" else right
    pool = list(scene.objects)
    a, b = (rng.choice(len(pool), 2, replace=False) if len(pool) > 1 else (0, 0))
    refs = (_random_reference(rng, [pool[a]], False), _random_reference(rng, [pool[b]], False))
    return Statement(template, refs, side=side if template == "relation_side" else "",
                     word=_RELATION_WORDS[rng.integers(len(_RELATION_WORDS))])
  ref = _random_reference(rng, objects, allow_empty=not template.startswith("exist_"))
  if template == "count_side":
    actual = count(left if side == "left" else right, ref)
    number = actual if rng.random() < 0.5 else int(rng.integers(1, MAX_OBJECTS + 1))
    return Statement(template, (ref,), side=side, number=max(number, 1))
  if template == "count_total":
    actual = count(left, ref) + count(right, ref)
    number = actual if rng.random() < 0.5 else int(rng.integers(1, 2 * MAX_OBJECTS + 1))
    return Statement(template, (ref,), number=max(number, 1))
  if template == "count_compare":
    return Statement(template, (ref,), side=side, word=("more", "fewer")[rng.integers(2)])
  return Statement(template, (ref,))


def edits(scene: Scene, rng: np.random.Generator) -> list[Scene]:
  """The scene changed in one object, in random order: each object recoloured or reshaped to
  every other value, each object removed (while one stays), and some objects added."""
  objects = scene.objects
  out = []
  for i, obj in enumerate(objects):
    for attribute, values in (("color", COLORS), ("shape", SHAPES)):
      for value in values:
        if value != getattr(obj, attribute):
          changed = dataclasses.replace(obj, **{attribute: value})
          out.append(Scene(objects[:i] + (changed,) + objects[i + 1:], scene.image_size))
    if len(objects) > 1:
      out.append(Scene(objects[:i] + objects[i + 1:], scene.image_size))
  if len(objects) < MAX_OBJECTS:
    for shape, color, size in itertools.product(SHAPES, COLORS, SIZES):
      if rng.random() < 0.25 and (added := add_object(scene, rng, shape, color, size)):
        out.append(added)
  return [out[i] for i in rng.permutation(len(out))]


def false_partner(statement: Statement, left: Scene, right: Scene, rng: np.random.Generator
                  ) -> tuple[str, Scene] | None:
  """(side, edited scene): one image changed in one object so that the statement is false
  (and clear), trying a random side first; None if no such edit exists."""
  for side in (SIDES if rng.random() < 0.5 else SIDES[::-1]):
    original = left if side == "left" else right
    for edited in edits(original, rng):
      pair = (edited, right) if side == "left" else (left, edited)
      if truth(statement, *pair) is False:
        return side, edited
  return None


def sample_pair(rng: np.random.Generator, template: str, heldout: bool, image_size: int = 64
                ) -> tuple[Statement, Scene, Scene, str, Scene]:
  """(statement, left, right, edited side, edited scene): a true statement of the template
  about two new scenes, mentioning its held-out color exactly when `heldout`, and the false
  partner's edit."""
  for _ in range(_MAX_PAIRS_PER_EXAMPLE):
    left = sample_scene(rng, image_size, max_objects=MAX_OBJECTS)
    right = sample_scene(rng, image_size, max_objects=MAX_OBJECTS)
    for _ in range(_PROPOSALS_PER_PAIR):
      statement = propose(template, rng, left, right)
      if statement.heldout() != heldout or truth(statement, left, right) is not True:
        continue
      if (partner := false_partner(statement, left, right, rng)) is not None:
        return (statement, left, right, *partner)
  raise ValueError(f"No true {template} statement (heldout={heldout}) found in "
                   f"{_MAX_PAIRS_PER_EXAMPLE} pairs of scenes.")


def iterate_examples(seed: int, num_examples: int, image_size: int = 64, heldout: bool = False
                     ) -> Iterator[dict]:
  """Yields NLVR examples, deterministically from the seed, in true / false pairs.

  Pair k draws from its own stream `(seed, heldout, k)` and has template TEMPLATES[k % 9], so
  templates are balanced and a pair does not depend on num_examples. Each example: statement
  str, left_image and right_image uint8[S, S, 3], label bool, template str, changed ("none"
  for the true example, else the side the false partner changed), pair_id, example_id.
  """
  for example_id in range(0, num_examples, 2):
    pair_id = example_id // 2
    rng = np.random.default_rng((seed, int(heldout), pair_id))
    template = TEMPLATES[pair_id % len(TEMPLATES)]
    statement, left, right, side, edited = sample_pair(rng, template, heldout, image_size)
    images = {"left": render(left), "right": render(right)}
    common = {"statement": statement.text(), "template": template, "pair_id": pair_id}
    yield {**common, "left_image": images["left"], "right_image": images["right"],
           "label": True, "changed": "none", "example_id": example_id}
    if example_id + 1 == num_examples:
      return
    images[side] = render(edited)
    yield {**common, "left_image": images["left"], "right_image": images["right"],
           "label": False, "changed": side, "example_id": example_id + 1}
