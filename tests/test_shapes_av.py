"""shapes_av: the stored offsets and bounce times agree with the rendered audio and video."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

import multimodal.data.builders  # noqa: F401  (registers shapes_av)
from multimodal.data.shapes import av_clips
from multimodal.data.shapes.render import COLOR_RGB
from multimodal.data.shapes.scenes import SHAPES

SETTINGS = av_clips.ClipSettings()  # 16 frames at 16 fps, 16 kHz, half the clips shifted
WINDOW = 0.02  # s: the energy windows around an expected onset


def tone_energy(audio: np.ndarray, hz: float, start: float, sample_rate: int) -> float:
  """Energy at `hz` in the Hann-windowed 20 ms of audio from time `start` (a one-bin DFT)."""
  n = int(WINDOW * sample_rate)
  i = int(round(start * sample_rate))
  piece = audio[max(i, 0):i + n].astype(np.float64)
  t = np.arange(len(piece)) / sample_rate
  return float(np.abs(np.sum(piece * np.hanning(len(piece)) * np.exp(-2j * np.pi * hz * t))) ** 2)


@pytest.fixture(scope="module")
def clips():
  return list(av_clips.iterate_examples(seed=7, num_clips=60, settings=SETTINGS))


def test_each_bounce_sounds_at_its_time_plus_the_offset(clips):
  """The tone of every bounce starts at (bounce time + offset) in the stored PCM audio: its
  pitch's energy jumps there, and a 40 ms error in the offset would miss it."""
  checked, shifted, wrong_onset_passes = 0, 0, 0
  sr = SETTINGS.sample_rate
  for ex in clips:
    audio = ex["audio"].astype(np.float32) / 32768.0
    for t, color in zip(ex["bounces"]["time"], ex["bounces"]["color"]):
      onset = t + ex["offset_ms"] / 1000.0
      if not WINDOW + 0.01 <= onset <= SETTINGS.duration - WINDOW - 0.05:
        continue  # Heard only in part, or not at all, in the audio's span.
      hz = av_clips.COLOR_HZ[color]
      starts = lambda at: (tone_energy(audio, hz, at + 0.002, sr)
                           > 20 * tone_energy(audio, hz, at - WINDOW - 0.002, sr))
      assert starts(onset), (ex["clip_id"], t, ex["offset_ms"])
      wrong_onset_passes += starts(onset + 0.04)  # an offset 40 ms off
      checked += 1
      shifted += ex["offset_ms"] != 0
  assert checked >= 40 and shifted >= 15
  assert wrong_onset_passes <= 0.1 * checked  # the check tells a 40 ms error


def _centroid(frame: np.ndarray, color: str) -> np.ndarray | None:
  """(x, y) of the pixels near the color, or None if too few show it."""
  near = np.linalg.norm(frame.astype(np.float32) - COLOR_RGB[color], axis=-1) < 40
  if near.sum() < 4:
    return None
  ys, xs = np.nonzero(near)
  return np.array([xs.mean(), ys.mean()])


def test_wide_audio_holds_the_audio_at_the_clips_offset(clips):
  """The stored audio is the wide audio's slice at the clip's own offset, but for the noise
  (drawn apart for each): their difference is noise alone, and a slice 40 ms off is not."""
  sr, margin = SETTINGS.sample_rate, SETTINGS.max_offset_ms
  n, noise = int(SETTINGS.duration * sr), SETTINGS.audio_noise
  off_by_40_is_worse = 0
  for ex in clips:
    assert ex["audio_wide"].shape == (n + 2 * margin * sr // 1000,)

    def residual(ms: int) -> float:
      start = (margin - ms) * sr // 1000
      piece = ex["audio_wide"][start:start + n].astype(np.float64)
      return float(np.std(piece - ex["audio"]) / 32767.0)

    assert residual(ex["offset_ms"]) == pytest.approx(np.sqrt(2) * noise, rel=0.1)
    wrong = ex["offset_ms"] + (40 if ex["offset_ms"] <= 0 else -40)
    off_by_40_is_worse += residual(wrong) > 1.5 * np.sqrt(2) * noise
  assert off_by_40_is_worse >= len(clips) // 2


def test_each_bounce_is_a_turn_in_the_video(clips):
  """Between the frames around a stored bounce time, the object's color centroid reverses
  its motion along one axis (the rendered frames, not the simulator's state)."""
  turned, checked = 0, 0
  for ex in clips:
    for t, color in zip(ex["bounces"]["time"], ex["bounces"]["color"]):
      k = int(np.floor(t * SETTINGS.fps))  # the last frame before the bounce
      if k < 1 or k + 2 >= SETTINGS.num_frames:
        continue
      points = [_centroid(ex["video"][i], color) for i in (k - 1, k, k + 1, k + 2)]
      if any(p is None for p in points):
        continue
      before, after = points[1] - points[0], points[3] - points[2]
      checked += 1
      turned += bool(np.any(before * after < 0))
  assert checked >= 30
  assert turned >= 0.9 * checked


def test_labels_follow_the_bounces(clips):
  for ex in clips:
    bounces = ex["bounces"]
    assert ex["num_bounces"] == len(bounces["time"]) <= av_clips.MAX_BOUNCES
    assert ex["event"] == sum(1 << SHAPES.index(s) for s in set(bounces["shape"]))
    assert np.all((0 <= bounces["time"]) & (bounces["time"] < SETTINGS.duration))
    assert abs(ex["offset_ms"]) <= SETTINGS.max_offset_ms
  offsets = np.array([ex["offset_ms"] for ex in clips])
  assert 0.3 < np.mean(offsets != 0) < 0.7  # offset_share 0.5
  assert len({ex["event"] for ex in clips}) >= 6


def test_builder_stores_the_clips(tmp_path):
  builder = tfds.builder("shapes_av/tiny", data_dir=str(tmp_path))
  builder.download_and_prepare()
  settings = builder.builder_config.clip
  stored = list(tfds.as_numpy(builder.as_dataset(split="validation")))
  assert len(stored) == 8
  expected = av_clips.iterate_examples(
      seed=builder.builder_config.seed * 3 + 1, num_clips=8, settings=settings)
  for got, want in zip(stored, expected):
    np.testing.assert_array_equal(got["audio"], want["audio"])
    np.testing.assert_array_equal(got["video"], want["video"])
    np.testing.assert_array_equal(got["audio_wide"], want["audio_wide"])
    assert got["video"].shape == (settings.num_frames, settings.image_size,
                                  settings.image_size, 3)
    assert (got["offset_ms"], got["event"], got["num_bounces"]) == (
        want["offset_ms"], want["event"], want["num_bounces"])
    assert got["alignment"] == (0 if want["offset_ms"] == 0 else 1)
  assert builder.info.metadata["sample_rate"] == settings.sample_rate


@pytest.mark.parametrize("bad, message", [
    (dict(max_objects=7), "max_objects"),
    (dict(offset_share=1.5), "offset_share"),
    (dict(sample_rate=3000), "sample_rate"),
    (dict(num_frames=0), "num_frames"),
])
def test_bad_settings_are_refused(bad, message):
  with pytest.raises(ValueError, match=message):
    av_clips.ClipSettings(**bad)
