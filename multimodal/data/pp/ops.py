"""Image and generic preprocessing ops, each working on one unbatched tf.data example."""
from __future__ import annotations

import zlib
from typing import Sequence

import tensorflow as tf

from multimodal.data.pp.registry import PP_OPS, RNG_KEY, Example, PpFn


def op_seed(example: Example, op: str) -> tf.Tensor | None:
  """int64[2] seed for one random op on this example (the example's seed folded with the
  op's name, so that two ops draw independently); None in evaluation (no seed)."""
  if RNG_KEY not in example:
    return None
  return tf.random.experimental.stateless_fold_in(example[RNG_KEY], zlib.crc32(op.encode()))


@PP_OPS.register("decode")
def decode(key: str = "image", channels: int = 3) -> PpFn:
  """Encoded PNG/JPEG/GIF/BMP bytes (tf.string[]) -> uint8[H, W, channels].

  Gray and RGBA images are converted to `channels`; an animated GIF keeps its first frame.
  """

  def apply(example: Example) -> Example:
    image = tf.io.decode_image(example[key], channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])  # decode_image leaves the channels unknown.
    return {**example, key: image}

  return apply


@PP_OPS.register("resize")
def resize(size: int | Sequence[int], key: str = "image", method: str = "bilinear") -> PpFn:
  """[H, W, C] -> [h, w, C] with `size` an int (square) or (h, w).

  The output is float32 (values still in the input's range) except for method="nearest",
  which keeps the input's dtype.
  """
  hw = (size, size) if isinstance(size, int) else tuple(size)

  def apply(example: Example) -> Example:
    image = tf.image.resize(example[key], hw, method=method)
    if method == "nearest":
      image = tf.cast(image, example[key].dtype)
    return {**example, key: image}

  return apply


@PP_OPS.register("value_range")
def value_range(vmin: float, vmax: float, key: str = "image", in_min: float = 0.0,
                in_max: float = 255.0) -> PpFn:
  """Linearly maps [in_min, in_max] to [vmin, vmax]; any dtype -> float32."""

  def apply(example: Example) -> Example:
    unit = (tf.cast(example[key], tf.float32) - in_min) / (in_max - in_min)
    return {**example, key: vmin + unit * (vmax - vmin)}

  return apply


def _check_keys(op: str, example: Example, keys: Sequence[str]) -> None:
  missing = [k for k in keys if k not in example]
  if missing:
    raise KeyError(f"{op}: no key(s) {missing} in the example; it has {sorted(example)}.")


@PP_OPS.register("keep")
def keep(*keys: str) -> PpFn:
  """Keeps only `keys` (each must be present), and the random ops' seed (`RNG_KEY`)."""

  def apply(example: Example) -> Example:
    _check_keys("keep", example, keys)
    return {k: example[k] for k in (*keys, RNG_KEY) if k in example}

  return apply


@PP_OPS.register("drop")
def drop(*keys: str) -> PpFn:
  """Removes `keys` (each must be present, so that a typo does not pass silently)."""

  def apply(example: Example) -> Example:
    _check_keys("drop", example, keys)
    return {k: v for k, v in example.items() if k not in keys}

  return apply


@PP_OPS.register("choice")
def choice(key: str, out_key: str | None = None) -> PpFn:
  """One element of the list feature `key` (e.g. one of an image's captions) -> `out_key`
  (default: `key`): uniform at random in training, the first one in evaluation."""

  def apply(example: Example) -> Example:
    _check_keys("choice", example, [key])
    values = example[key]
    tf.debugging.assert_positive(tf.shape(values)[0], message=f"choice: {key!r} is empty.")
    seed = op_seed(example, f"choice:{key}")
    index = 0 if seed is None else tf.random.stateless_uniform(
        [], seed=seed, maxval=tf.shape(values)[0], dtype=tf.int32)
    return {**example, out_key or key: values[index]}

  return apply


@PP_OPS.register("take")
def take(key: str, n: int) -> PpFn:
  """The first `n` elements of the list feature `key` (e.g. 5 of a COCO image's 5-7
  captions, so that every example has as many); an example with fewer is an error."""
  if n < 1:
    raise ValueError(f"take: n must be >= 1, got {n}.")

  def apply(example: Example) -> Example:
    _check_keys("take", example, [key])
    values = example[key]
    tf.debugging.assert_greater_equal(tf.shape(values)[0], n,
                                      message=f"take: {key!r} has fewer than {n} elements.")
    taken = values[:n]
    taken.set_shape([n] + values.shape[1:].as_list())
    return {**example, key: taken}

  return apply
