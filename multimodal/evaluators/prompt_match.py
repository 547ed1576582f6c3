"""Does a picture show what its prompt asks for? Judged from the objects a reader (the
attribute classifier) found in it: pure functions on host data.

A picture matches its prompt's `Spec` when the reader found exactly as many objects as the
spec names, they can be paired one to one with the spec's objects with every attribute the
spec names equal, and the spec's region and relation hold for the found centers by the rules
the captions use (`captions.region`: the canvas third of the center; `captions.relation`:
every object of one group before every object of the other, extents apart).
"""
from __future__ import annotations

import collections
import itertools
from typing import Any, Mapping, Sequence

import numpy as np

from multimodal.data.shapes import captions
from multimodal.data.shapes.phrases import Reference
from multimodal.data.shapes.scenes import Object, object_radius
from multimodal.data.shapes.t2i_prompts import Spec

Found = Mapping[str, Any]  # shape, color, size (names), x, y (pixels, y down)


def _as_object(found: Found, image_size: int) -> Object:
  return Object(found["shape"], found["color"], found["size"], float(found["x"]),
                float(found["y"]), object_radius(found["size"], image_size))


def _fits(obj: Object, ref: Reference) -> bool:
  return all(getattr(obj, attribute) == value for attribute, value in ref)


def _pairable(refs: Sequence[Reference], objects: Sequence[Object]) -> bool:
  """Whether some one-to-one pairing gives every reference an object that fits it."""
  return any(all(_fits(objects[j], ref) for ref, j in zip(refs, order))
             for order in itertools.permutations(range(len(objects))))


def _relation_holds(relation: tuple[Reference, str, Reference], objects: Sequence[Object]
                    ) -> bool:
  first, axis, second = relation
  a = [o for o in objects if _fits(o, first)]
  b = [o for o in objects if _fits(o, second)]
  return bool(a and b) and captions.ahead(a, b, axis)  # captions.relation's rule


def matches(spec: Spec, found: Sequence[Found], image_size: int) -> bool:
  """Whether the objects found on an image_size x image_size picture are what `spec` asks."""
  objects = [_as_object(f, image_size) for f in found]
  if len(objects) != len(spec.objects) or not _pairable(spec.objects, objects):
    return False
  if spec.region is not None and captions.region(objects[0], image_size) != spec.region:
    return False
  return spec.relation is None or _relation_holds(spec.relation, objects)


def accuracy(kinds: Sequence[str], matched: Sequence[bool], name: str = "prompt_match"
             ) -> dict[str, float]:
  """{name: fraction matched, f"{name}/{kind}": fraction matched of each kind}."""
  if len(kinds) != len(matched) or not len(kinds):
    raise ValueError(f"{name}: need as many (and some) kinds as results; got {len(kinds)} "
                     f"kinds, {len(matched)} results.")
  by_kind = collections.defaultdict(list)
  for kind, ok in zip(kinds, matched):
    by_kind[kind].append(bool(ok))
  return {name: float(np.mean(np.asarray(matched, bool))),
          **{f"{name}/{kind}": float(np.mean(v)) for kind, v in by_kind.items()}}
