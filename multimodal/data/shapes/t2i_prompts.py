"""The fixed prompt set that text-to-image models are judged on, each prompt with its spec.

Three kinds of prompt, each the caption `captions.py` writes for a scene of that kind (the
scene is sampled, never rendered here; its objects are the spec):
  - `one_object`: one object, with the region of the canvas the captions always name for it
    ("a small red circle in the top left corner");
  - `two_objects`: two different objects, one above (or left of) the other with their extents
    apart, and a caption stating that relation ("a red circle above a blue square", or from
    the other side, "... below ...", "... with ... to its right");
  - `count`: two or three identical objects ("there are two small green triangles").

How the set relates to training: it is deterministic (stream `(seed, kind, k)` per scene, which
no builder draws: the shapes_captions splits use `(split seed, scene)`), so its scenes are new
ones, but most of its *descriptions* are not held out, and nothing here filters them (that
would mean generating the whole train split's scenes at every evaluation). Measured once for
the default seed against shapes_captions/default's train split (its 50k scenes'
`captions.canonical_description`s, 25 s to generate without rendering): of 20 prompts per
kind, all 20 one-object and 19 two-object descriptions occur in training, and 11 count ones;
every two-of-a-kind count description occurs, but only 8 of the 36 three-of-a-kind ones
(three identical objects are 1 in 1296 three-object scenes). So the set mostly measures
whether a model draws what familiar captions say at new positions, not compositional
generalization. Within a kind, prompts have distinct canonical descriptions.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import numpy as np
import tensorflow as tf

from multimodal.data import pp, tokenizer
from multimodal.data.shapes import captions
from multimodal.data.shapes.phrases import ATTRIBUTES, Reference, reference
from multimodal.data.shapes.scenes import Object, Scene, add_object, sample_scene

KINDS = ("one_object", "two_objects", "count")
SCENE_SIZE = 64  # shapes_captions' image size; `scaled` gives the scene at another size.
DEFAULT_SEED = 7_000_007
_MAX_SKIPPED_IN_A_ROW = 10_000  # then the kind's descriptions are as good as used up


@dataclasses.dataclass(frozen=True)
class Spec:
  """What a prompt asks for.

  objects: every object's named attributes (a `phrases.Reference` each; the prompts here name
    size, color and shape).
  region: (one object only) the captions' phrase for the canvas third holding its center
    (`captions.region`), e.g. "in the top left corner"; None: anywhere.
  relation: (first, axis, second): every object matching `first` lies before every object
    matching `second` along `axis` ("y": above, "x": left of) with their extents apart, as
    `captions.relation` defines it; None: no relation asked.
  """
  objects: tuple[Reference, ...]
  region: str | None = None
  relation: tuple[Reference, str, Reference] | None = None

  def __post_init__(self):
    if self.region is not None and len(self.objects) != 1:
      raise ValueError(f"A region places one object; the spec has {len(self.objects)}.")
    if self.relation is not None and self.relation[1] not in ("x", "y"):
      raise ValueError(f"A relation's axis is 'x' or 'y', got {self.relation[1]!r}.")


@dataclasses.dataclass(frozen=True)
class Prompt:
  """kind: one of KINDS; text: the caption; spec: what it asks for; scene: the scene it was
  written from (SCENE_SIZE px), a true picture of it."""
  kind: str
  text: str
  spec: Spec
  scene: Scene


def spec_of(scene: Scene) -> Spec:
  """What every caption of the scene states: its objects, a single object's region, the
  relation between two groups (`captions.relation`)."""
  objects = tuple(reference(o, ATTRIBUTES) for o in scene.objects)
  region = captions.region(scene.objects[0], scene.image_size) if len(objects) == 1 else None
  rel = captions.relation(scene)
  as_reference = lambda group: tuple(zip(ATTRIBUTES, group.kind))  # kind: (size, color, shape)
  relation = None if rel is None else (as_reference(rel.first), rel.axis,
                                       as_reference(rel.second))
  return Spec(objects, region, relation)


def _one_object(rng: np.random.Generator) -> Scene | None:
  return sample_scene(rng, SCENE_SIZE, min_objects=1, max_objects=1)


def _two_objects(rng: np.random.Generator) -> Scene | None:
  scene = sample_scene(rng, SCENE_SIZE, min_objects=2, max_objects=2)
  different = len(captions.groups(scene)) == 2
  return scene if different and captions.relation(scene) is not None else None


def _count(rng: np.random.Generator) -> Scene | None:
  scene = sample_scene(rng, SCENE_SIZE, min_objects=1, max_objects=1)
  first = scene.objects[0]
  for _ in range(int(rng.integers(1, 3))):  # two or three in all
    scene = add_object(scene, rng, first.shape, first.color, first.size)
    if scene is None:
      return None
  return scene


_SAMPLERS = {"one_object": _one_object, "two_objects": _two_objects, "count": _count}


def prompt_set(per_kind: int, seed: int = DEFAULT_SEED) -> list[Prompt]:
  """`per_kind` prompts of each kind, in KINDS order, the same for the same arguments.

  Scene k of kind i draws from `np.random.default_rng((seed, i, k))`; a scene that is not of
  its kind, or whose canonical description an earlier prompt of the kind has, is skipped.
  """
  if per_kind < 1:
    raise ValueError(f"prompts per kind must be at least 1, got {per_kind}.")
  prompts = []
  for i, kind in enumerate(KINDS):
    seen: set[str] = set()
    skipped_in_a_row = 0
    for k in itertools.count():
      if len(seen) == per_kind:
        break
      if skipped_in_a_row == _MAX_SKIPPED_IN_A_ROW:
        raise ValueError(f"Found only {len(seen)} distinct {kind} prompts; asked for "
                         f"{per_kind} per kind.")
      rng = np.random.default_rng((seed, i, k))
      scene = _SAMPLERS[kind](rng)
      if scene is None or captions.canonical_description(scene) in seen:
        skipped_in_a_row += 1
        continue
      skipped_in_a_row = 0
      seen.add(captions.canonical_description(scene))
      text = captions.captions(scene, rng, n=1)[0]  # a relation caption when there is one
      prompts.append(Prompt(kind, text, spec_of(scene), scene))
  return prompts


def scaled(scene: Scene, image_size: int) -> Scene:
  """The same scene on an image_size canvas (positions and extents scaled), to render at the
  resolution a model generates."""
  f = image_size / scene.image_size
  return Scene(tuple(Object(o.shape, o.color, o.size, o.x * f, o.y * f, o.radius * f)
                     for o in scene.objects), image_size)


def tokenize(texts: Sequence[str], max_len: int, model: str = "shapes_vl"
             ) -> tuple[np.ndarray, np.ndarray]:
  """texts -> (text_tokens int32[N, max_len], text_mask bool[N, max_len]), exactly as the
  `tok` preprocessing op writes them ([BOS, pieces..., 0, ...]); a text that does not fit
  is an error, not truncated."""
  op = pp.parse(f"tok(max_len={max_len}, model={model!r}, key='text', out_key='text_tokens', "
                "mask_key='text_mask')")
  out = op({"text": tf.constant(list(texts), tf.string)})
  sp = tokenizer.load(model)
  longest = max((len(sp.encode(t)) + 1, t) for t in texts)
  if longest[0] > max_len:
    raise ValueError(f"The prompt {longest[1]!r} takes {longest[0]} tokens with BOS; "
                     f"max_len is {max_len}.")
  return out["text_tokens"].numpy(), out["text_mask"].numpy()
