"""Audio preprocessing ops: waveform -> log-mel spectrogram, the audio encoder's input.

To standardise the spectrogram with a dataset's statistics (as AST does), follow `log_mel`
with `value_range(0, 1, key="audio", in_min=MEAN, in_max=MEAN + STD)`, which maps x to
(x - MEAN) / STD.
"""
from __future__ import annotations

import tensorflow as tf

from multimodal.data.pp.registry import PP_OPS, Example, PpFn

# int16 PCM full scale: samples / 32768 lie in [-1, 1).
_PCM16_SCALE = 32768.0


def _positive(name: str, value: float) -> None:
  if not value > 0:
    raise ValueError(f"log_mel: {name} must be positive, got {value}.")


def _samples(ms: float, sample_rate: int, name: str) -> int:
  """A duration in milliseconds -> a whole number (>= 1) of samples."""
  samples = int(round(sample_rate * ms / 1000.0))
  if samples < 1:
    raise ValueError(f"log_mel: {name}={ms} ms is shorter than one sample at "
                     f"{sample_rate} Hz.")
  return samples


def _waveform(audio: tf.Tensor, key: str) -> tf.Tensor:
  """int16[N] PCM (scaled by 1/32768) or float[N] in [-1, 1] -> float32[N]."""
  if audio.shape.rank != 1:
    raise ValueError(f"log_mel: {key!r} must be a mono waveform [N], got shape {audio.shape}.")
  if audio.dtype == tf.int16:
    return tf.cast(audio, tf.float32) / _PCM16_SCALE
  if audio.dtype.is_floating:
    return tf.cast(audio, tf.float32)
  raise TypeError(f"log_mel: {key!r} must be int16 PCM or float samples in [-1, 1], got "
                  f"{audio.dtype.name}.")


@PP_OPS.register("log_mel")
def log_mel(key: str = "audio", out_key: str | None = None, sample_rate: int = 16000,
            window_ms: float = 25.0, hop_ms: float = 10.0, mel_bins: int = 64,
            lower_hz: float = 60.0, upper_hz: float | None = None, fft_length: int | None = None,
            log_offset: float = 1e-6) -> PpFn:
  """A waveform -> its log-mel spectrogram, float32[frames, mel_bins] in `out_key` (default:
  `key`).

  example[key]: int16[N] PCM (divided by 32768) or float[N] samples in [-1, 1], at
  `sample_rate` Hz. The short-time Fourier transform uses periodic Hann windows of
  window = round(sample_rate * window_ms / 1000) samples every
  hop = round(sample_rate * hop_ms / 1000) samples, zero-padded to `fft_length` (default: the
  next power of two >= window), with no padding at the ends:
      frames = 1 + (N - window) // hop        (N >= window; a shorter waveform is an error)
  e.g. 1 s at 16 kHz with 25 ms / 10 ms -> 1 + (16000 - 400) // 160 = 98 frames.
  The power spectrum |STFT|^2 is mapped by `mel_bins` triangular filters spaced evenly on
  the HTK mel scale (2595 log10(1 + f / 700)) from `lower_hz` to `upper_hz` (default: the
  Nyquist frequency, sample_rate / 2), unnormalised, as `tf.signal.linear_to_mel_weight_matrix`
  builds them; the output is log(mel_power + log_offset).
  """
  _positive("sample_rate", sample_rate)
  _positive("window_ms", window_ms)
  _positive("hop_ms", hop_ms)
  _positive("mel_bins", mel_bins)
  _positive("log_offset", log_offset)
  window = _samples(window_ms, sample_rate, "window_ms")
  hop = _samples(hop_ms, sample_rate, "hop_ms")
  nyquist = sample_rate / 2
  upper_hz = nyquist if upper_hz is None else upper_hz
  if not 0 <= lower_hz < upper_hz:
    raise ValueError(f"log_mel: need 0 <= lower_hz < upper_hz, got lower_hz={lower_hz}, "
                     f"upper_hz={upper_hz}.")
  if upper_hz > nyquist:
    raise ValueError(f"log_mel: upper_hz={upper_hz} is above the Nyquist frequency "
                     f"{nyquist} Hz of sample_rate={sample_rate}.")
  if fft_length is None:
    fft_length = 1 << (window - 1).bit_length()
  elif fft_length < window:
    raise ValueError(f"log_mel: fft_length={fft_length} is shorter than the window of "
                     f"{window} samples ({window_ms} ms at {sample_rate} Hz).")
  mel_matrix = tf.signal.linear_to_mel_weight_matrix(
      num_mel_bins=mel_bins, num_spectrogram_bins=fft_length // 2 + 1, sample_rate=sample_rate,
      lower_edge_hertz=lower_hz, upper_edge_hertz=upper_hz)

  def apply(example: Example) -> Example:
    audio = _waveform(example[key], key)
    tf.debugging.assert_greater_equal(
        tf.size(audio), window,
        message=f"log_mel: {key!r} is shorter than one window of {window} samples.")
    stft = tf.signal.stft(audio, frame_length=window, frame_step=hop, fft_length=fft_length,
                          window_fn=tf.signal.hann_window, pad_end=False)
    power = tf.math.square(tf.math.abs(stft))
    mel = tf.math.log(tf.linalg.matmul(power, mel_matrix) + log_offset)
    mel.set_shape([None, mel_bins])
    return {**example, out_key or key: mel}

  return apply
