"""`resample_offset`: the new audio is the clip rendered at its new offset (exactly, cut from
the wide audio; away from the gap, when moved and noise-filled), the new offsets are drawn as
the builder draws them, and evaluation examples pass unchanged."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from multimodal.data import pp
from multimodal.data.pp import av_ops
from multimodal.data.shapes import av_clips

SETTINGS = av_clips.ClipSettings()  # 1 s at 16 kHz, offsets up to +-300 ms on half the clips
SR = SETTINGS.sample_rate


def _op(**kwargs):
  return av_ops.resample_offset(sample_rate=SR, max_ms=SETTINGS.max_offset_ms,
                                share=SETTINGS.offset_share,
                                noise_std=SETTINGS.audio_noise, **kwargs)


def _example(clip: av_clips.Clip, seed: int | None) -> dict:
  ex = {"audio": tf.constant(av_clips.to_pcm16(av_clips.render_audio(clip, None))),
        "audio_wide": tf.constant(av_clips.to_pcm16(av_clips.wide_audio(clip, None))),
        "offset_ms": tf.constant(int(round(clip.offset_seconds * 1000)), tf.int32)}
  if seed is not None:
    ex[pp.RNG_KEY] = tf.constant([3, seed], tf.int64)
  return ex


@pytest.fixture(scope="module")
def clips() -> list[av_clips.Clip]:
  rng = np.random.default_rng(0)
  return [av_clips.sample_clip(rng, SETTINGS) for _ in range(12)]


def _at_offset(clip: av_clips.Clip, offset_ms: int) -> np.ndarray:
  return av_clips.to_pcm16(av_clips.render_audio(
      dataclasses.replace(clip, offset_seconds=offset_ms / 1000.0), None))


def test_new_audio_is_the_clip_rendered_at_the_new_offset(clips):
  op, moved_clips = _op(), 0
  for k, clip in enumerate(clips):
    out = op(_example(clip, seed=k))
    new_ms = int(out["offset_ms"])
    np.testing.assert_allclose(out["audio"].numpy(), _at_offset(clip, new_ms), atol=1)
    moved_clips += new_ms != int(round(clip.offset_seconds * 1000))
  assert moved_clips >= 4


def test_wide_audio_is_required_or_declined(clips):
  ex = _example(clips[0], seed=1)
  del ex["audio_wide"]
  with pytest.raises(ValueError, match="wide_key=None"):
    _op()(ex)
  ex = _example(clips[0], seed=1)
  with pytest.raises(ValueError, match=r"int16 \[N \+ 9600\]"):
    _op()({**ex, "audio_wide": ex["audio_wide"][:-1]})


def test_moved_audio_is_the_clip_rendered_at_the_new_offset(clips):
  op, moved_clips = _op(wide_key=None), 0
  for k, clip in enumerate(clips):
    out = op(_example(clip, seed=k))
    new_ms = int(out["offset_ms"])
    audio = out["audio"].numpy()
    at_new = _at_offset(clip, new_ms)
    delay = (new_ms - int(round(clip.offset_seconds * 1000))) * SR // 1000
    covered = slice(max(delay, 0), min(SR, SR + delay))  # samples taken from the clip
    # Tones that started before the clip's own audio window are cut off in it: compare
    # away from the edge the move brings in, by the longest tone.
    margin = int(max(av_clips.TONE_SECONDS.values()) * SR)
    inner = slice(covered.start + (margin if delay > 0 else 0),
                  covered.stop - (margin if delay < 0 else 0))
    np.testing.assert_allclose(audio[inner], at_new[inner], atol=1)
    uncovered = np.concatenate([audio[:covered.start], audio[covered.stop:]])
    if uncovered.size > 1000:
      assert abs(uncovered.std() / 32767.0 - SETTINGS.audio_noise) < 0.003
    moved_clips += delay != 0
  assert moved_clips >= 4


def test_new_offsets_are_drawn_as_the_builder_draws_them(clips):
  op = _op()
  offsets = np.array([int(op(_example(clips[0], seed=s))["offset_ms"]) for s in range(400)])
  again = np.array([int(op(_example(clips[0], seed=s))["offset_ms"]) for s in range(400)])
  np.testing.assert_array_equal(offsets, again)  # seeded per example
  assert 0.4 < np.mean(offsets == 0) < 0.6
  shifted = offsets[offsets != 0]
  assert np.abs(shifted).max() <= 300 and np.abs(shifted).min() >= 1
  assert 0.4 < np.mean(shifted > 0) < 0.6 and np.abs(shifted).mean() == pytest.approx(150, abs=25)


def test_evaluation_examples_pass_unchanged(clips):
  ex = _example(clips[1], seed=None)
  out = _op()(ex)
  np.testing.assert_array_equal(out["audio"].numpy(), ex["audio"].numpy())
  assert int(out["offset_ms"]) == int(ex["offset_ms"])


def test_composes_with_offset_bin_in_a_pipeline(clips):
  fn = pp.parse(f"resample_offset(sample_rate={SR})|offset_bin(max_ms=300, bin_ms=20)")
  out = fn(_example(clips[2], seed=5))
  assert int(out["offset_bin"]) == int(round(int(out["offset_ms"]) / 20)) + 15


@pytest.mark.parametrize("kwargs, message", [
    (dict(sample_rate=0), "sample_rate > 0"), (dict(sample_rate=SR, share=1.5), "share"),
    (dict(sample_rate=SR, max_ms=0), "max_ms >= 1")])
def test_bad_arguments_are_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    av_ops.resample_offset(**kwargs)


def test_float_audio_is_refused(clips):
  ex = _example(clips[0], seed=1)
  with pytest.raises(ValueError, match="int16 PCM"):
    _op()({**ex, "audio": tf.cast(ex["audio"], tf.float32)})
