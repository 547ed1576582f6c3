"""Audio-video offset: the learned model's error in ms, beside a cross-correlation baseline.

The baseline is hand-crafted, with nothing learned (the classic way to sync streams): an
onset envelope of the audio (the rise of short-time log energy, half-wave rectified) against
the video's change of motion (how unlike each other two consecutive difference images of the
foreground are: high where an object turns, at a bounce). Both are brought to one time grid and the offset
is the lag, within +-max_ms, that maximises their normalised cross-correlation.

A shifted clip can only be lined up by its events if some bounce is both seen and heard: its
video time t in [0, D) and the start of its sound, t + offset, in [0, D) as well (D: the clip's
length). The evaluator counts those bounces per clip (from the stored bounce times) and breaks
the shifted clips down by them, so that a model's error on the clips it could line up is
told apart from the clips nothing in both streams can place.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from multimodal.data.pp.av_ops import bin_center_ms
from multimodal.data.shapes.render import BACKGROUND_RGB
from multimodal.evaluators import common
from multimodal.evaluators.registry import EVALUATORS, EvalContext

TOLERANCE_MS = 40.0


def audio_onsets(audio: np.ndarray, sample_rate: int, hop_s: float) -> np.ndarray:
  """float[n] audio -> float32[n // hop] onset strength: the rise of log energy per hop."""
  hop = max(int(round(hop_s * sample_rate)), 1)
  frames = audio[:len(audio) // hop * hop].astype(np.float64).reshape(-1, hop)
  energy = np.log(np.mean(frames ** 2, axis=1) + 1e-8)
  return np.maximum(np.diff(energy, prepend=energy[0]), 0.0).astype(np.float32)


def motion_change(video: np.ndarray, background: tuple[int, int, int] = BACKGROUND_RGB,
                  threshold: float = 60.0) -> np.ndarray:
  """uint8[T, H, W, C] -> float32[T]: how much the motion changes at each frame, 1 - the
  cosine similarity of consecutive difference images of the foreground (pixels further than
  `threshold` from the background color, summed over channels): about 0 while everything
  moves on, up to 2 where something turns back (zero at the ends)."""
  distance = np.abs(video.astype(np.float32) - np.asarray(background, np.float32)).sum(-1)
  foreground = (distance > threshold).astype(np.float32).reshape(len(video), -1)
  moves = np.diff(foreground, axis=0)  # [T - 1, H * W]
  change = np.zeros(len(video), np.float32)
  if len(video) >= 3:
    norms = np.linalg.norm(moves, axis=1)
    cosine = np.sum(moves[1:] * moves[:-1], axis=1) / (norms[1:] * norms[:-1] + 1e-8)
    change[1:-1] = np.where((norms[1:] > 0) & (norms[:-1] > 0), 1.0 - cosine, 0.0)
  return change


def cross_correlation_offset(audio: np.ndarray, video: np.ndarray, sample_rate: int,
                             fps: float, max_ms: float, hop_s: float = 0.005) -> float:
  """The offset (ms, positive: the audio lags) that best lines the audio's onsets up with the
  video's turns, searched in steps of hop_s over [-max_ms, max_ms]."""
  onsets = audio_onsets(audio, sample_rate, hop_s)
  times = np.arange(len(onsets)) * hop_s
  frame = np.minimum((times * fps).astype(int), len(video) - 1)
  visual = motion_change(video)[frame]  # the video's signal on the audio's grid
  onsets = onsets - onsets.mean()
  visual = visual - visual.mean()
  best, best_score = 0.0, -np.inf
  max_lag = int(round(max_ms / 1000.0 / hop_s))
  for lag in range(-max_lag, max_lag + 1):  # audio[i + lag] matches video[i]
    a = onsets[max(lag, 0):len(onsets) + min(lag, 0)]
    v = visual[max(-lag, 0):len(visual) - max(lag, 0)]
    score = float(np.dot(a, v) / (np.linalg.norm(a) * np.linalg.norm(v) + 1e-8))
    if score > best_score:
      best, best_score = lag * hop_s * 1000.0, score
  return best


def shared_bounces(times_s: tf.Tensor, offset_ms: tf.Tensor, duration_s: float) -> tf.Tensor:
  """int32: how many of a clip's bounces (video times float[n], in s) are both seen and
  heard: t in [0, D) and t + offset in [0, D)."""
  heard = tf.cast(times_s, tf.float64) + tf.cast(offset_ms, tf.float64) / 1000.0
  inside = ((times_s >= 0.0) & (times_s < duration_s) & (heard >= 0.0)
            & (heard < duration_s))
  return tf.reduce_sum(tf.cast(inside, tf.int32))


def offset_metrics(predicted_ms: np.ndarray, true_ms: np.ndarray) -> dict[str, float]:
  error = np.abs(np.asarray(predicted_ms, np.float64) - true_ms)
  return {"mae_ms": float(np.mean(error)),
          "within_40ms": float(np.mean(error <= TOLERANCE_MS)),
          "num_examples": float(len(error))}


@EVALUATORS.register("av_offset")
class AvOffsetEvaluator(common.SplitEvaluator):
  """Reports the model's `mae_ms` and `within_40ms` (|error| <= 40 ms) on the split, from
  its predicted offset bin's center, and the same for the cross-correlation baseline
  (`baseline/...`, computed once on the raw clips); `synced/` and `shifted/` break both down
  by the clip's alignment (a model that always says 0 is right on every synced clip), and
  `shifted_shared/` and `shifted_unshared/` split the shifted clips into those with and
  without a bounce both seen and heard (see the module docstring); `shared_share` is the
  share of all clips that are synced or shifted_shared: what lining up events can get right.

  Args (besides the split evaluator's):
    max_ms, bin_ms: the offset bins of the pp op `offset_bin`.
    baseline: also run the cross-correlation baseline.
  """

  def __init__(self, context: EvalContext, name: str, split: str, pp: str, batch_size: int,
               every_steps: int = 0, max_examples: int | None = None, max_ms: int = 300,
               bin_ms: int = 20, baseline: bool = True):
    super().__init__(context, name, split, pp, batch_size, every_steps, max_examples)
    self.max_ms, self.bin_ms = max_ms, bin_ms
    metadata = context.builder.info.metadata or {}
    if baseline and not {"sample_rate", "fps"} <= set(metadata):
      raise ValueError(f"{name}: the baseline needs the dataset's sample_rate and fps in its "
                       f"metadata (shapes_av has them); set baseline=False.")
    self.baseline = baseline
    features = context.builder.info.features
    if "bounces" not in features or "fps" not in metadata:
      raise ValueError(f"{name}: needs the dataset's bounce times and fps (shapes_av has "
                       "them).")
    self.duration_s = features["video"].shape[0] / metadata["fps"]
    self._baseline_metrics: dict[str, float] | None = None

  def _extras(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    extras = {"_offset_ms": example["offset_ms"],
              "_shared_bounces": shared_bounces(example["bounces"]["time"],
                                                example["offset_ms"], self.duration_s)}
    if self.baseline and self._baseline_metrics is None:
      extras.update(_audio=example["audio"], _video=example["video"])
    return extras

  def run(self, variables: Any, step: int) -> dict[str, float]:
    predicted, true, shared, baseline = [], [], [], []
    metadata = self.context.builder.info.metadata
    for batch, predictions in common.predicted_batches(
        self.context, variables, split=self.split, pp=self.pp, batch_size=self.batch_size,
        extras=self._extras):
      valid = np.flatnonzero(batch["_valid"])
      predicted.extend(bin_center_ms(predictions["prediction"][valid], self.max_ms,
                                     self.bin_ms))
      true.extend(batch["_offset_ms"][valid])
      shared.extend(batch["_shared_bounces"][valid])
      if "_audio" in batch:
        baseline.extend(cross_correlation_offset(
            batch["_audio"][i] / 32768.0, batch["_video"][i], metadata["sample_rate"],
            metadata["fps"], self.max_ms) for i in valid)
    true = np.asarray(true, np.float64)
    shared = np.asarray(shared)
    metrics = by_alignment(np.asarray(predicted), true, shared)
    if baseline:
      self._baseline_metrics = {f"baseline/{k}": v for k, v in
                                by_alignment(np.asarray(baseline), true, shared).items()
                                if not k.endswith(("num_examples", "shared_share"))}
    metrics.update(self._baseline_metrics or {})
    return metrics


def by_alignment(predicted_ms: np.ndarray, true_ms: np.ndarray,
                 shared_bounces: np.ndarray | None = None) -> dict[str, float]:
  """`offset_metrics` over all clips, and under `synced/` and `shifted/` over those with a
  zero and a nonzero offset; given each clip's count of bounces both seen and heard, also
  under `shifted_shared/` and `shifted_unshared/` (shifted clips with and without one), and
  `shared_share`, the share of clips that are synced or shifted_shared."""
  metrics = offset_metrics(predicted_ms, true_ms)
  parts = [("synced", true_ms == 0), ("shifted", true_ms != 0)]
  if shared_bounces is not None:
    shared = np.asarray(shared_bounces) > 0
    parts += [("shifted_shared", (true_ms != 0) & shared),
              ("shifted_unshared", (true_ms != 0) & ~shared)]
    metrics["shared_share"] = float(np.mean((true_ms == 0) | shared))
  for part, rows in parts:
    if rows.any():
      metrics.update({f"{part}/{k}": v for k, v in
                      offset_metrics(predicted_ms[rows], true_ms[rows]).items()})
  return metrics
