"""Preprocessing ops for audio-visual clips: offset labels as classes over bins, and a
training augmentation that gives a clip a new offset."""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from multimodal.data.pp.ops import op_seed
from multimodal.data.pp.registry import PP_OPS, Example, PpFn

_PCM16_FULL_SCALE = 32767.0


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


def tolerance_window(tolerance_ms: float, bin_ms: int) -> tuple[float, ...]:
  """Weights over a predicted bin's neighbours for `ClassificationTask.decode_window`: weight
  k (k bins away) is the share of that bin's span [k - 1/2, k + 1/2] * bin_ms within
  +-tolerance_ms of the predicted bin's center, i.e. how likely an offset spread evenly over
  that bin counts as right. (40 ms over 20 ms bins: 0.5, 1, 1, 1, 0.5.)"""
  if tolerance_ms < 0 or bin_ms <= 0:
    raise ValueError(f"tolerance_window: need tolerance_ms >= 0 and bin_ms > 0; got "
                     f"{tolerance_ms}, {bin_ms}.")
  if tolerance_ms == 0:
    return (1.0,)  # the bin itself: the argmax
  reach = math.ceil(tolerance_ms / bin_ms + 0.5)
  k = np.arange(-reach, reach + 1)
  low = np.maximum((k - 0.5) * bin_ms, -tolerance_ms)
  high = np.minimum((k + 0.5) * bin_ms, tolerance_ms)
  weights = np.clip(high - low, 0.0, None) / bin_ms
  while weights[0] == 0 and len(weights) > 1:  # zero at both ends alike
    weights = weights[1:-1]
  return tuple(float(w) for w in weights)


@PP_OPS.register("resample_offset")
def resample_offset(sample_rate: int, max_ms: int = 300, share: float = 0.5,
                    noise_std: float = 0.02, key: str = "audio",
                    offset_key: str = "offset_ms", wide_key: str | None = "audio_wide"
                    ) -> PpFn:
  """Training augmentation for offset estimation: a new offset for the clip, drawn as
  `shapes_av` draws one (0, or on `share` of the clips a whole number of ms uniform in
  [-max_ms, max_ms] without 0), and its audio at that offset. Each clip then shows up under
  many offsets over the epochs, which a model cannot learn by heart. Without a seed
  (evaluation) the example passes unchanged.

  example[key]: int16[N] PCM audio whose offset is example[offset_key] (ms; positive: the
  audio lags). Where the audio at the new offset comes from:
    wide_key (default, `shapes_av` >= 1.1.0): example[wide_key], int16[N + 2 * max_ms *
      sample_rate / 1000], the clip's sound with no offset over a span longer by max_ms on
      each side; the new audio is its N samples from (max_ms - new) ms: exactly the clip
      recorded at the new offset, with sounds from outside the stored audio's span.
    wide_key=None: the stored audio moved later by (new - old) ms, whole samples; the span
      it leaves uncovered gets white noise of std `noise_std` (full-scale units, the
      builder's `audio_noise`). That span never holds a sound, which a model can learn to
      read (a silent stretch at one end says how far the audio was moved).
  """
  if sample_rate <= 0 or max_ms < 1 or not 0.0 <= share <= 1.0 or noise_std < 0:
    raise ValueError(f"resample_offset: need sample_rate > 0, max_ms >= 1, share in [0, 1] "
                     f"and noise_std >= 0; got {sample_rate}, {max_ms}, {share}, {noise_std}.")
  if wide_key is not None and (max_ms * sample_rate) % 1000:
    raise ValueError(f"resample_offset: max_ms={max_ms} is not a whole number of samples at "
                     f"{sample_rate} Hz.")

  def apply(example: Example) -> Example:
    seed = op_seed(example, "resample_offset")
    if seed is None:
      return example
    audio = example[key]
    if audio.dtype != tf.int16 or audio.shape.rank != 1:
      raise ValueError(f"resample_offset: {key!r} must be int16 PCM [N] (before log_mel), "
                       f"got {audio.dtype.name}{audio.shape}.")
    seeds = tf.random.experimental.stateless_split(seed, 4)
    shifted = tf.random.stateless_uniform([], seeds[0]) < share
    magnitude = tf.random.stateless_uniform([], seeds[1], minval=1, maxval=max_ms + 1,
                                            dtype=tf.int32)
    sign = 2 * tf.random.stateless_uniform([], seeds[2], maxval=2, dtype=tf.int32) - 1
    new_ms = tf.where(shifted, sign * magnitude, 0)
    if wide_key is not None:
      moved = _slice_wide(example, wide_key, audio, new_ms, max_ms, sample_rate)
      return {**example, key: moved, offset_key: tf.cast(new_ms, example[offset_key].dtype)}
    old_ms = tf.cast(example[offset_key], tf.int32)
    delay = tf.cast(tf.round(tf.cast(new_ms - old_ms, tf.float32) * sample_rate / 1000.0),
                    tf.int32)
    n = tf.shape(audio)[0]
    noise = tf.random.stateless_normal([2 * n], seeds[3], stddev=noise_std * _PCM16_FULL_SCALE)
    noise = tf.cast(tf.clip_by_value(tf.round(noise), -32768.0, 32767.0), tf.int16)
    # The audio between n samples of noise on each side, read from n - delay: sample i of
    # the result is audio[i - delay], or noise where that lies outside the clip.
    track = tf.concat([noise[:n], audio, noise[n:]], axis=0)
    start = tf.clip_by_value(n - delay, 0, 2 * n)
    moved = tf.ensure_shape(track[start:start + n], audio.shape)
    return {**example, key: moved, offset_key: tf.cast(new_ms, example[offset_key].dtype)}

  return apply


def _slice_wide(example: Example, wide_key: str, audio: tf.Tensor, new_ms: tf.Tensor,
                max_ms: int, sample_rate: int) -> tf.Tensor:
  """int16[N]: the audio at offset `new_ms`, cut from example[wide_key] (see
  `resample_offset`)."""
  if wide_key not in example:
    raise ValueError(f"resample_offset: the example has no {wide_key!r} (shapes_av 1.1.0 "
                     "stores it: prepare the dataset again), or pass wide_key=None to move "
                     "the stored audio and fill the gap with noise.")
  wide = example[wide_key]
  margin = max_ms * sample_rate // 1000
  if (wide.dtype != tf.int16 or wide.shape.rank != 1
      or (wide.shape[0] is not None and audio.shape[0] is not None
          and wide.shape[0] != audio.shape[0] + 2 * margin)):
    raise ValueError(f"resample_offset: {wide_key!r} must be int16 [N + {2 * margin}] for "
                     f"audio of N={audio.shape[0]} samples and max_ms={max_ms}; got "
                     f"{wide.dtype.name}{wide.shape}.")
  start = tf.cast(tf.round(tf.cast(max_ms - new_ms, tf.float64) * sample_rate / 1000.0),
                  tf.int32)
  return tf.ensure_shape(wide[start:start + tf.shape(audio)[0]], audio.shape)
