"""Pure-numpy rasteriser for Shapes scenes, anti-aliased by 4x4 supersampling."""
from __future__ import annotations

import math

import numpy as np

from multimodal.data.shapes.scenes import Object, Scene

# Saturated, well separated hues on a light-grey background.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "cyan": (40, 190, 210),
}
BACKGROUND_RGB = (210, 210, 210)
NOISE_STD = 3.0  # Mild per-pixel noise, in uint8 levels.
_SUPERSAMPLE = 4


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
  """bool[h, w]: which sample points, offset (dx, dy) from the center, lie in the shape."""
  if shape == "circle":
    return dx * dx + dy * dy <= r * r
  if shape == "square":
    return (np.abs(dx) <= r) & (np.abs(dy) <= r)
  if shape == "triangle":  # Apex up, base at the bottom of the bounding box.
    return (dy <= r) & (2 * np.abs(dx) <= dy + r)
  raise ValueError(f"Unknown shape {shape!r}.")


def _coverage(obj: Object, size: int) -> tuple[slice, slice, np.ndarray]:
  """float32[h, w] fraction of each pixel in the object's bounding box that it covers."""
  y0, x0 = max(math.floor(obj.y - obj.radius), 0), max(math.floor(obj.x - obj.radius), 0)
  y1 = min(math.ceil(obj.y + obj.radius), size)
  x1 = min(math.ceil(obj.x + obj.radius), size)
  # Pixel (i, j) spans [j, j + 1) x [i, i + 1); sample at the centers of an s x s sub-grid.
  s = _SUPERSAMPLE
  dy = y0 + (np.arange((y1 - y0) * s, dtype=np.float32) + 0.5) / s - obj.y
  dx = x0 + (np.arange((x1 - x0) * s, dtype=np.float32) + 0.5) / s - obj.x
  inside = _inside(obj.shape, dx[None, :], dy[:, None], obj.radius)
  cover = inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3), dtype=np.float32)
  return slice(y0, y1), slice(x0, x1), cover


def render(scene: Scene, rng: np.random.Generator | None = None) -> np.ndarray:
  """uint8[S, S, 3] image of the scene; adds mild per-pixel noise when `rng` is given."""
  size = scene.image_size
  image = np.empty((size, size, 3), np.float32)
  image[...] = BACKGROUND_RGB
  for obj in scene.objects:
    rows, cols, cover = _coverage(obj, size)
    patch = image[rows, cols]
    # Objects never overlap, so blending each onto the background is exact.
    patch += (np.asarray(COLOR_RGB[obj.color], np.float32) - patch) * cover[..., None]
  if rng is not None:
    image += NOISE_STD * rng.standard_normal(image.shape, dtype=np.float32)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)
