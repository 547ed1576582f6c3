"""Naming Shapes objects in words: references ("large red", "circle") and their phrases.

A reference fixes some of an object's attributes, e.g. ((size, large), (color, red)); its
phrase is "large red object". The VQA questions and the NLVR statements name objects this
way; an object matches a reference when it has every attribute value the reference fixes.
"""
from __future__ import annotations

import collections
import itertools

from multimodal.data.shapes.scenes import COLORS, SHAPES, SIZES, Object, Scene

ATTRIBUTES = ("size", "color", "shape")  # Also the word order of a phrase.
VALUES = {"size": SIZES, "color": COLORS, "shape": SHAPES}
# A template is the tuple of attributes a phrase mentions; a reference fixes their values.
Template = tuple[str, ...]
Reference = tuple[tuple[str, str], ...]  # ((attribute, value), ...) in ATTRIBUTES order.
ALL_TEMPLATES: tuple[Template, ...] = tuple(
    t for k in range(len(ATTRIBUTES) + 1) for t in itertools.combinations(ATTRIBUTES, k))
# (word, axis, sign): "a <word> b" holds when sign * (b - a) along the axis is positive.
RELATIONS = (("left of", "x", 1), ("right of", "x", -1), ("above", "y", 1), ("below", "y", -1))


def reference(obj: Object, template: Template) -> Reference:
  """The object's values of the template's attributes."""
  return tuple((a, getattr(obj, a)) for a in template)


def references(template: Template) -> list[Reference]:
  """All references of a template, e.g. every (color, shape) pair."""
  return [tuple(zip(template, values))
          for values in itertools.product(*(VALUES[a] for a in template))]


def matches(obj: Object, ref: Reference) -> bool:
  return all(getattr(obj, a) == v for a, v in ref)


def phrase(ref: Reference, plural: bool = False) -> str:
  """((size, large), (color, red)) -> "large red object"; plural adds an "s"."""
  values = dict(ref)
  words = [values[a] for a in ("size", "color") if a in values]
  words.append(values.get("shape", "object") + ("s" if plural else ""))
  return " ".join(words)


def reference_counts(scene: Scene) -> collections.Counter[Reference]:
  """How many objects match each reference that matches at least one object."""
  return collections.Counter(
      reference(obj, t) for obj in scene.objects for t in ALL_TEMPLATES)
