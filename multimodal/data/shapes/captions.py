"""Captions of a Shapes scene: several descriptions of all its objects in different words and
orders ("two small red circles above a large blue square", "a large blue square with two small
red circles over it").

Every caption names every object by size, color and shape, grouped by identical objects with
a count. Beyond the objects, a caption may say where things are, and only where that is
unambiguous:
  - one object: its region of the canvas ("in the top left corner", "in the center");
  - exactly two groups of identical objects, all of one group above (or left of) all of the
    other with their extents apart along that axis: the relation between the groups.
So a caption determines the objects' attributes and counts, and for scenes of those two kinds
the layout too: what text-to-image prompts and retrieval queries need.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
from typing import Iterator, Sequence

import numpy as np

from multimodal.data.shapes.render import render
from multimodal.data.shapes.scenes import COLORS, SHAPES, SIZES, Object, Scene, sample_scene

CAPTIONS_PER_IMAGE = 5
MAX_OBJECTS = 4
_MAX_SKIPPED_IN_A_ROW = 10_000  # unique=True: then the scenes' descriptions are used up.
_COUNT_WORDS = ("no", "a", "two", "three", "four", "five", "six")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
# Canvas thirds (row, column) -> the phrase that places a single object there.
_REGIONS = {
    (0, 0): "in the top left corner", (0, 1): "at the top", (0, 2): "in the top right corner",
    (1, 0): "on the left", (1, 1): "in the center", (1, 2): "on the right",
    (2, 0): "in the bottom left corner", (2, 1): "at the bottom",
    (2, 2): "in the bottom right corner",
}

Kind = tuple[str, str, str]  # (size, color, shape): what makes two objects identical.


@dataclasses.dataclass(frozen=True)
class Group:
  """`count` identical objects."""
  kind: Kind
  count: int

  def phrase(self) -> str:
    """"a small red circle", "two large blue squares"."""
    size, color, shape = self.kind
    return f"{_COUNT_WORDS[self.count]} {size} {color} {shape}{'s' if self.count > 1 else ''}"


@dataclasses.dataclass(frozen=True)
class Relation:
  """Every object of `first` is `word` ("above" or "left of") every object of `second`."""
  first: Group
  second: Group
  axis: str  # "y": above / below; "x": left of / right of.


def kinds() -> list[Kind]:
  """Every kind of object, (size, color, shape) in that nesting order: kind index
  (size_index * len(COLORS) + color_index) * len(SHAPES) + shape_index."""
  return list(itertools.product(SIZES, COLORS, SHAPES))


def kind_phrases() -> list[str]:
  """"a small red circle", ... for every kind, in the order of `kinds()`: zero-shot
  classification's class texts."""
  return [Group(kind, 1).phrase() for kind in kinds()]


def groups(scene: Scene) -> list[Group]:
  """Identical objects grouped, in a fixed order (by kind)."""
  counts = collections.Counter(_kind(o) for o in scene.objects)
  return [Group(kind, n) for kind, n in sorted(counts.items())]


def _kind(obj: Object) -> Kind:
  return (obj.size, obj.color, obj.shape)


def region(obj: Object, image_size: int) -> str:
  """The phrase for the third of the canvas (row and column) holding the object's center."""
  third = lambda v: min(int(3 * v / image_size), 2)
  return _REGIONS[(third(obj.y), third(obj.x))]


def relation(scene: Scene) -> Relation | None:
  """The relation between the scene's two groups, if it has two and one is clearly above
  (first choice) or left of the other; None otherwise."""
  two = groups(scene)
  if len(two) != 2:
    return None
  members = [[o for o in scene.objects if _kind(o) == g.kind] for g in two]
  for axis in "yx":
    for (a, ga), (b, gb) in itertools.permutations(zip(members, two)):
      if ahead(a, b, axis):
        return Relation(ga, gb, axis)
  return None


def ahead(first: Sequence[Object], second: Sequence[Object], axis: str) -> bool:
  """Whether every object of `first` is before (above for axis "y", left of for "x") every
  object of `second`, their extents apart."""
  return all(getattr(y, axis) - getattr(x, axis) >= x.radius + y.radius
             for x in first for y in second)


def canonical_description(scene: Scene) -> str:
  """What every caption of the scene conveys, in one fixed wording: two scenes with the
  same canonical description cannot be told apart by their captions."""
  parts = [g.phrase() for g in groups(scene)]
  if len(scene.objects) == 1:
    parts.append(region(scene.objects[0], scene.image_size))
  if (rel := relation(scene)) is not None:
    parts.append(f"{rel.first.phrase()} {'above' if rel.axis == 'y' else 'left of'}")
  return "; ".join(parts)


def _join(phrases: list[str]) -> str:
  """["a", "b", "c"] -> "a, b and c"."""
  return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


# Listing captions; {objects} is the groups in a random order (and a single object's region).
_LISTINGS = ("{objects}", "there {be} {objects}", "an image of {objects}",
             "a picture of {objects}", "{objects} on a grey background")


def _listings(scene: Scene, rng: np.random.Generator) -> list[str]:
  """Captions that list the groups, each caption in its own random order."""
  n = len(scene.objects)
  where = region(scene.objects[0], scene.image_size) if n == 1 else ""
  captions = []
  for template in _LISTINGS + (f"{where} there is {{listed}}" if n == 1 else
                               f"{_NUMBER_WORDS[n]} shapes: {{listed}}",):
    listed = _join([g.phrase() for g in rng.permutation(groups(scene))])
    objects = f"{listed} {where}" if where else listed
    be = "is" if listed.startswith("a ") else "are"
    captions.append(template.format(objects=objects, listed=listed, be=be))
  return captions


def _pronoun(group: Group) -> str:
  return "it" if group.count == 1 else "them"


def _relations(rel: Relation) -> list[str]:
  """Captions that state the relation, from either group's side."""
  a, b = rel.first.phrase(), rel.second.phrase()
  if rel.axis == "y":
    return [f"{a} above {b}", f"{b} below {a}", f"{b} with {a} over {_pronoun(rel.second)}",
            f"{a} with {b} under {_pronoun(rel.first)}"]
  return [f"{a} to the left of {b}", f"{b} to the right of {a}",
          f"{a} with {b} to {'its' if rel.first.count == 1 else 'their'} right",
          f"{b} with {a} to {'its' if rel.second.count == 1 else 'their'} left"]


def captions(scene: Scene, rng: np.random.Generator, n: int = CAPTIONS_PER_IMAGE
             ) -> list[str]:
  """n distinct captions of the scene (fewer only if it has fewer distinct ones), those
  stating a relation first when there is one, in random order within each kind."""
  if n < 1:
    raise ValueError(f"Need at least one caption per image, got n={n}.")
  if len(scene.objects) > len(_COUNT_WORDS) - 1:
    raise ValueError(f"Captions count up to {len(_COUNT_WORDS) - 1} objects, the scene has "
                     f"{len(scene.objects)}.")
  rel = relation(scene)
  stated = list(rng.permutation(_relations(rel))) if rel is not None else []
  # Relations go first so that a scene which has one states it in most of its captions.
  pool = [*stated[:max(n - 1, 1)], *rng.permutation(_listings(scene, rng))]
  return [str(c) for c in dict.fromkeys(pool)][:n]


def iterate_examples(seed: int, num_images: int, image_size: int = 64,
                     captions_per_image: int = CAPTIONS_PER_IMAGE,
                     max_objects: int = MAX_OBJECTS, unique: bool = False
                     ) -> Iterator[dict]:
  """Yields captioned images, deterministically from the seed.

  Scene k draws from its own stream `(seed, k)`. With unique=True a scene whose
  `canonical_description` an earlier scene already had is skipped, so that each image is the
  only right answer to its captions (evaluation splits for retrieval). Each example: image
  uint8[S, S, 3], captions [str], objects (shape, color, size, x, y with x, y the center in
  [0, 1]), image_id int (0, 1, ...).
  """
  seen: set[str] = set()
  image_id, skipped_in_a_row = 0, 0
  for scene_id in itertools.count():
    if image_id == num_images:
      return
    rng = np.random.default_rng((seed, scene_id))
    scene = sample_scene(rng, image_size, max_objects=max_objects)
    if unique:
      description = canonical_description(scene)
      if description in seen:
        skipped_in_a_row += 1
        if skipped_in_a_row == _MAX_SKIPPED_IN_A_ROW:
          raise ValueError(f"Found only {image_id} scenes with distinct descriptions (up to "
                           f"{max_objects} objects); asked for {num_images}.")
        continue
      seen.add(description)
      skipped_in_a_row = 0
    yield {"image": render(scene), "captions": captions(scene, rng, captions_per_image),
           "objects": [dict(shape=o.shape, color=o.color, size=o.size, x=o.x / image_size,
                            y=o.y / image_size) for o in scene.objects],
           "image_id": image_id}
    image_id += 1
