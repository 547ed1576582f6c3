"""Preprocessing ops for audio-visual clips: offset labels as classes over bins."""
from __future__ import annotations

import tensorflow as tf

from multimodal.data.pp.registry import PP_OPS, Example, PpFn


def offset_bins(max_ms: int, bin_ms: int) -> int:
  """How many bins of `bin_ms` cover [-max_ms, max_ms] with one centered on 0 (odd)."""
  if bin_ms <= 0 or max_ms < 0 or max_ms % bin_ms:
    raise ValueError(f"offset bins: need bin_ms > 0 dividing max_ms >= 0; got bin_ms={bin_ms}, "
                     f"max_ms={max_ms}.")
  return 2 * (max_ms // bin_ms) + 1


@PP_OPS.register("offset_bin")
def offset_bin(max_ms: int = 300, bin_ms: int = 20, key: str = "offset_ms",
               out_key: str = "offset_bin") -> PpFn:
  """example[key] (an offset in ms) -> `out_key` int32[]: the bin whose center is nearest,
  bin b centered at (b - max_ms / bin_ms) * bin_ms (a tie goes to the even multiple of
  bin_ms); offsets beyond +-max_ms go to the end bins. `offset_bins(max_ms, bin_ms)` bins
  in all."""
  count = offset_bins(max_ms, bin_ms)

  def apply(example: Example) -> Example:
    ms = tf.cast(example[key], tf.float32)
    b = tf.cast(tf.round(ms / bin_ms), tf.int32) + max_ms // bin_ms
    return {**example, out_key: tf.clip_by_value(b, 0, count - 1)}

  return apply


def bin_center_ms(bins, max_ms: int, bin_ms: int):
  """Inverse of `offset_bin`: bin indices (int array) -> their centers in ms."""
  return (bins - max_ms // bin_ms) * bin_ms
