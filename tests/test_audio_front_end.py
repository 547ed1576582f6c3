"""The log-mel front end against a NumPy reference on pure tones, and its config errors."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from multimodal.data import pp
from multimodal.data.pp import audio_ops

RATE = 16000


def tone(hz: float, seconds: float = 0.5, amplitude: float = 0.5) -> np.ndarray:
  t = np.arange(int(RATE * seconds)) / RATE
  return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
  return 2595.0 * np.log10(1.0 + hz / 700.0)


def mel_filterbank(mel_bins: int, fft_length: int, lower_hz: float, upper_hz: float
                   ) -> np.ndarray:
  """float64[fft_length // 2 + 1, mel_bins]: triangles evenly spaced on the mel scale, each
  rising from its lower neighbour's centre to 1 at its own and falling to its upper
  neighbour's (linear in mel); the DC bin gets no weight."""
  bin_mel = hz_to_mel(np.linspace(0.0, RATE / 2, fft_length // 2 + 1))[:, None]
  edges = np.linspace(hz_to_mel(lower_hz), hz_to_mel(upper_hz), mel_bins + 2)
  lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (bin_mel - lower) / (center - lower)
  falling = (upper - bin_mel) / (upper - center)
  weights = np.maximum(0.0, np.minimum(rising, falling))
  weights[0] = 0.0
  return weights


def reference_log_mel(audio: np.ndarray, window: int = 400, hop: int = 160,
                      fft_length: int = 512, mel_bins: int = 64, lower_hz: float = 60.0,
                      upper_hz: float = RATE / 2, log_offset: float = 1e-6) -> np.ndarray:
  """float64[frames, mel_bins]: periodic-Hann STFT with numpy.fft, power, mel, log."""
  frames = 1 + (len(audio) - window) // hop
  hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
  starts = hop * np.arange(frames)[:, None]
  segments = audio.astype(np.float64)[starts + np.arange(window)] * hann
  power = np.abs(np.fft.rfft(segments, n=fft_length, axis=-1)) ** 2
  return np.log(power @ mel_filterbank(mel_bins, fft_length, lower_hz, upper_hz) + log_offset)


def log_mel(audio: np.ndarray, **settings) -> np.ndarray:
  return audio_ops.log_mel(**settings)({"audio": tf.constant(audio)})["audio"].numpy()


def peak_bin(spectrogram: np.ndarray) -> int:
  return int(np.argmax(spectrogram.mean(axis=0)))


def test_pure_tone_matches_numpy_reference():
  audio = tone(1000.0)
  ours, reference = log_mel(audio), reference_log_mel(audio)
  # 1 + (8000 - 400) // 160 frames of 64 mel bins.
  assert ours.shape == reference.shape == (48, 64)
  assert ours.dtype == np.float32
  assert peak_bin(ours) == peak_bin(reference)
  # The peak's band contains 1000 Hz: it lies between the band's neighbouring centres.
  edges = np.linspace(hz_to_mel(60.0), hz_to_mel(RATE / 2), 64 + 2)
  assert edges[peak_bin(reference)] < hz_to_mel(1000.0) < edges[peak_bin(reference) + 2]
  # Over 80 dB below the peak, log space agrees (float32 rounding swamps the far side lobes).
  loud = reference > reference.max() - np.log(1e8)
  assert loud.sum() > 48 * 15
  np.testing.assert_allclose(ours[loud], reference[loud], atol=1e-3)


def test_higher_pitch_peaks_in_a_higher_mel_bin():
  peaks = [peak_bin(log_mel(tone(hz))) for hz in (300.0, 1000.0, 3000.0)]
  assert peaks[0] < peaks[1] < peaks[2]
  assert peaks == [peak_bin(reference_log_mel(tone(hz))) for hz in (300.0, 1000.0, 3000.0)]


def test_int16_pcm_equals_float_samples():
  pcm = np.round(tone(440.0) * 32768).astype(np.int16)
  np.testing.assert_allclose(log_mel(pcm), log_mel(pcm.astype(np.float32) / 32768), atol=1e-6)


def test_settings_set_frames_bins_and_output_key():
  audio = tone(1000.0, seconds=0.25)
  example = {"audio": tf.constant(audio), "label": tf.constant(3)}
  settings = dict(window_ms=32.0, hop_ms=16.0, mel_bins=20, upper_hz=4000.0, fft_length=1024)
  out = pp.parse("log_mel(out_key='mel', window_ms=32.0, hop_ms=16.0, mel_bins=20, "
                 "upper_hz=4000.0, fft_length=1024)")(example)
  assert set(out) == {"audio", "mel", "label"}
  # window 512, hop 256: 1 + (4000 - 512) // 256 frames.
  assert out["mel"].shape == (14, 20)
  np.testing.assert_allclose(out["mel"].numpy(), log_mel(audio, **settings))
  reference = reference_log_mel(audio, window=512, hop=256, fft_length=1024, mel_bins=20,
                                upper_hz=4000.0)
  assert peak_bin(out["mel"].numpy()) == peak_bin(reference)


def test_runs_in_a_tf_data_pipeline_with_unknown_length():
  data = tf.data.Dataset.from_generator(
      lambda: iter([tone(500.0, 0.3), tone(500.0, 0.5)]),
      output_signature=tf.TensorSpec([None], tf.float32))
  data = data.map(lambda a: pp.parse("log_mel(mel_bins=32)")({"audio": a}))
  assert data.element_spec["audio"].shape.as_list() == [None, 32]
  assert [x["audio"].shape[0] for x in data] == [1 + (4800 - 400) // 160, 48]


@pytest.mark.parametrize("settings,match", [
    (dict(upper_hz=9000.0), "Nyquist"),
    (dict(window_ms=0.0), "window_ms must be positive"),
    (dict(hop_ms=-10.0), "hop_ms must be positive"),
    (dict(mel_bins=0), "mel_bins must be positive"),
    (dict(sample_rate=0), "sample_rate must be positive"),
    (dict(lower_hz=5000.0, upper_hz=4000.0), "lower_hz < upper_hz"),
    (dict(fft_length=256), "shorter than the window"),
    (dict(hop_ms=0.01), "shorter than one sample"),
])
def test_bad_settings_raise(settings, match):
  with pytest.raises(ValueError, match=match):
    audio_ops.log_mel(**settings)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="mono waveform"):
    log_mel(np.zeros((2, 8000), np.float32))
  with pytest.raises(TypeError, match="int16 PCM or float"):
    log_mel(np.zeros(8000, np.int32))
  with pytest.raises(tf.errors.InvalidArgumentError, match="shorter than one window"):
    log_mel(np.zeros(100, np.float32))
