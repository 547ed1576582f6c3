"""Shapes scenes: a few coloured circles, squares and triangles on a plain canvas.

A `Scene` is a structured description only; rendering (`render.py`) and the tasks built on
it (VQA questions, and later NLVR statements, captions, text-to-image prompts) read it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow", "purple", "cyan")
SIZES = ("small", "large")

# Geometry at the reference size of 64 px; everything scales with image_size / 64.
_REFERENCE_SIZE = 64
_RADIUS = {"small": 4.75, "large": 7.25}  # Half the extent: 9.5 and 14.5 px across.
_EDGE_MARGIN = 2.0  # Keeps every object fully inside the canvas.
_GAP = 3.0  # Minimum space between the bounding boxes of two objects.
_TRIES_PER_OBJECT = 100
_MAX_RESTARTS = 100


@dataclasses.dataclass(frozen=True)
class Object:
  """One shape; (x, y) is its bounding-box center in pixels, radius half its extent."""
  shape: str
  color: str
  size: str
  x: float
  y: float
  radius: float


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[Object, ...]
  image_size: int


def object_radius(size: str, image_size: int) -> float:
  """Half the side of an object's bounding box, in pixels."""
  return _RADIUS[size] * image_size / _REFERENCE_SIZE


def _separated(a: tuple[float, float, float], b: tuple[float, float, float], gap: float
               ) -> bool:
  """True if two (x, y, radius) bounding boxes are at least `gap` apart along some axis."""
  reach = a[2] + b[2] + gap
  return abs(a[0] - b[0]) >= reach or abs(a[1] - b[1]) >= reach


def _free_position(rng: np.random.Generator, r: float, placed: list[tuple[float, float, float]],
                   image_size: int) -> tuple[float, float, float] | None:
  """Rejection-samples (x, y, r) clear of the `placed` boxes; None if no try fits."""
  scale = image_size / _REFERENCE_SIZE
  margin, gap = _EDGE_MARGIN * scale, _GAP * scale
  for _ in range(_TRIES_PER_OBJECT):
    x, y = rng.uniform(margin + r, image_size - margin - r, size=2)
    if all(_separated((x, y, r), other, gap) for other in placed):
      return float(x), float(y), r
  return None


def _place(rng: np.random.Generator, radii: list[float], image_size: int
           ) -> list[tuple[float, float, float]] | None:
  """Places the radii in order at non-overlapping (x, y, radius); None if one does not fit."""
  placed: list[tuple[float, float, float]] = []
  for r in radii:
    position = _free_position(rng, r, placed, image_size)
    if position is None:
      return None
    placed.append(position)
  return placed


def sample_scene(rng: np.random.Generator, image_size: int = 64, min_objects: int = 1,
                 max_objects: int = 6) -> Scene:
  """Samples min..max objects with i.i.d. uniform attributes at non-overlapping positions.

  Attributes are drawn before positions and never resampled, so they stay independent and
  uniform (question balancing relies on this symmetry); only positions are rejected.
  """
  if not 1 <= min_objects <= max_objects:
    raise ValueError(f"Need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}.")
  n = int(rng.integers(min_objects, max_objects + 1))
  shapes = rng.choice(SHAPES, n)
  colors = rng.choice(COLORS, n)
  sizes = rng.choice(SIZES, n)
  radii = [object_radius(s, image_size) for s in sizes]
  for _ in range(_MAX_RESTARTS):
    placed = _place(rng, radii, image_size)
    if placed is not None:
      objects = tuple(
          Object(str(shape), str(color), str(size), x, y, r)
          for shape, color, size, (x, y, r) in zip(shapes, colors, sizes, placed))
      return Scene(objects, image_size)
  raise ValueError(f"Could not place {n} objects on a {image_size}x{image_size} canvas.")


def add_object(scene: Scene, rng: np.random.Generator, shape: str, color: str, size: str
               ) -> Scene | None:
  """The scene with one more object, placed clear of the others; None if it does not fit."""
  placed = [(o.x, o.y, o.radius) for o in scene.objects]
  position = _free_position(rng, object_radius(size, scene.image_size), placed,
                            scene.image_size)
  if position is None:
    return None
  return Scene(scene.objects + (Object(shape, color, size, *position),), scene.image_size)
