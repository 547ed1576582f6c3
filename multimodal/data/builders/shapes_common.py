"""What the built-in Shapes builders share: per-split seeds and PNG encoding."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Each split draws scenes from its own seed, seed * 3 + offset, so splits never share a scene.
SPLIT_SEED_OFFSETS = {"train": 0, "validation": 1, "test": 2}


def split_seed(seed: int, split: str) -> int:
  """The seed a split's scenes are drawn from."""
  return seed * len(SPLIT_SEED_OFFSETS) + SPLIT_SEED_OFFSETS[split]


def encode_png(image: np.ndarray) -> bytes:
  """uint8[H, W, 3] -> PNG bytes."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()
