"""Audio-video offset by learned cross-correlation (SyncNet-style synchrony over lags).

Each stream's encoder gives features per time step; a projection maps them into one space
where a sound and the sight that made it should agree. The score of a candidate offset is
their similarity summed over the pairs of time steps that the offset lines up, so the model
only has to learn *when* something happens in each stream (and what: a tone's pitch against
an object's color); the search over offsets is built in, as in the hand-crafted baseline
(`evaluators/av_offset.py`) it is compared with. The scores are logits over the offset bins of
the `offset_bin` pp op, trained with cross-entropy by the `classification` task.

Time geometry (all in ms, from the clip's start):
  audio step i (a patch of `patch_time` log-mel frames) is centred on the middle frame's
    window: (i * P + (P - 1) / 2) * hop_ms + window_ms / 2;
  video step k (a tubelet of `tubelet_time` frames, or one frame) spans its frames, and its
    features are split into `video_substeps` sub-steps spread evenly over the step's span, so
    the video can place an event between two frames;
  a sound at audio time t_a and a sight at video time t_v agree on offset t_a - t_v (positive:
    the audio lags, as `shapes_av` defines it).
`lag_kernel` turns that into a static weight per (offset bin, audio step, video sub-step).
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from multimodal.data.pp.av_ops import offset_bins
from multimodal.models import partitioning as p
from multimodal.models.fusion_classifier import encode
from multimodal.models.fusion_vqa import compute_dtype
from multimodal.models.registry import MODELS

Spec = dict[str, Any]
AUDIO, VIDEO = "audio", "video"


def audio_step_times_ms(steps: int, patch_time: int, hop_ms: float, window_ms: float
                        ) -> np.ndarray:
  """float64[steps]: the centre of each audio patch's middle frame's window."""
  middle = np.arange(steps) * patch_time + (patch_time - 1) / 2
  return middle * hop_ms + window_ms / 2


def video_substep_times_ms(steps: int, frames_per_step: int, fps: float, substeps: int
                           ) -> np.ndarray:
  """float64[steps * substeps]: sub-step u of step k at the centre of the u-th of
  `substeps` equal parts of the span [first frame - 1/2, last frame + 1/2] frame periods."""
  frame_ms = 1000.0 / fps
  start = (np.arange(steps) * frames_per_step - 0.5)[:, None] * frame_ms
  part = (np.arange(substeps) + 0.5)[None, :] / substeps * frames_per_step * frame_ms
  return (start + part).reshape(-1)


def lag_kernel(audio_ms: np.ndarray, video_ms: np.ndarray, max_ms: int, bin_ms: int,
               width_ms: float) -> np.ndarray:
  """float32[bins, Na, Nv]: how much audio step i and video sub-step j line up under the
  offset of bin b (centred on (b - max_ms / bin_ms) * bin_ms): a triangle of half-width
  `width_ms` around t_a - t_v = offset, zero outside. Bins are not normalised here (the model
  divides by the weight that falls on real steps)."""
  if width_ms <= 0:
    raise ValueError(f"lag_kernel: width_ms={width_ms} must be > 0.")
  centres = (np.arange(offset_bins(max_ms, bin_ms)) - max_ms // bin_ms) * bin_ms
  gap = audio_ms[None, :, None] - video_ms[None, None, :] - centres[:, None, None]
  return np.maximum(1.0 - np.abs(gap) / width_ms, 0.0).astype(np.float32)


def lag_scores(audio: jax.Array, audio_mask: jax.Array, video: jax.Array,
               video_mask: jax.Array, kernel: jax.Array) -> jax.Array:
  """The agreement of the two streams under each offset bin: float32[B, bins].

  audio: float[B, Na, S], video: float[B, Nv, S] features per (sub-)step; masks bool[B, Na],
  bool[B, Nv]; kernel: float[bins, Na, Nv] from `lag_kernel`. Score of bin b: the mean, over
  the real pairs (i, j) weighted by kernel[b, i, j], of <audio_i, video_j> / sqrt(S). Padded
  steps change nothing; a bin with no real pair scores 0.
  """
  similarity = jnp.einsum("bis,bjs->bij", audio.astype(jnp.float32),
                          video.astype(jnp.float32)) / np.sqrt(audio.shape[-1])
  real = (audio_mask[:, :, None] & video_mask[:, None, :]).astype(jnp.float32)
  score = jnp.einsum("bij,nij->bn", jnp.where(real > 0, similarity, 0.0), kernel)
  weight = jnp.einsum("bij,nij->bn", real, kernel)
  return score / jnp.maximum(weight, 1e-6)


def _step_features(tokens: jax.Array, mask: jax.Array, steps: int) -> tuple[jax.Array,
                                                                           jax.Array]:
  """float[B, N, D], bool[B, N] with N = steps * per_step tokens in time-major order ->
  (float[B, steps, D] the mean of each step's real tokens, bool[B, steps] any real)."""
  batch, count, width = tokens.shape
  if count % steps:
    raise ValueError(f"sync_offset: {count} tokens do not split into {steps} time steps "
                     "(use pool_type='none' and no class token).")
  tokens = tokens.reshape(batch, steps, count // steps, width)
  weights = mask.reshape(batch, steps, count // steps).astype(tokens.dtype)[..., None]
  total = jnp.sum(tokens * weights, axis=2)
  return total / jnp.maximum(jnp.sum(weights, axis=2), 1.0), mask.reshape(
      batch, steps, -1).any(axis=2)


def _time_steps(modality: str, spec: Spec, shape: tuple[int, ...]) -> tuple[int, int]:
  """(time steps, frames per step) of an audio or video encoder's tokens for an input of
  `shape` (batched)."""
  if modality == AUDIO:
    return math.ceil(shape[1] / spec["patch_time"]), spec["patch_time"]
  if spec.get("kind", "tubelet") == "tubelet":
    per_step = spec.get("tubelet_time", 2)
    return math.ceil(shape[1] / per_step), per_step
  return shape[1], 1


@MODELS.register("sync_offset")
class SyncOffset(nn.Module):
  """Attributes:
    encoders: {'audio': audio_encoder spec, 'video': video_encoder spec}, both with
      pool_type 'none' (their tokens are read per time step).
    num_classes: the offset bins (from the task); must equal `offset_bins(max_ms, bin_ms)`.
    max_ms, bin_ms: the offset bins of the `offset_bin` pp op.
    hop_ms, window_ms: the `log_mel` op's hop and window.
    fps: the video's frame rate.
    video_substeps: sub-steps per video step (finer than a frame: events between frames).
    sync_dim: the width of the shared space.
    width_ms: the half-width of the lag kernel's triangle (None: the audio step's length).
    dtype: compute dtype name; parameters stay float32.
  Batch: audio float[B, F, M] (log-mel), video float[B, T, H, W, C].
  """
  encoders: dict[str, Spec]
  num_classes: int
  max_ms: int = 300
  bin_ms: int = 20
  hop_ms: float = 10.0
  window_ms: float = 25.0
  fps: float = 16.0
  video_substeps: int = 3
  sync_dim: int = 64
  width_ms: float | None = None
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> jax.Array:
    """-> logits float32[B, num_classes] over the offset bins."""
    if sorted(self.encoders) != [AUDIO, VIDEO]:
      raise ValueError(f"sync_offset reads exactly an audio and a video encoder; got "
                       f"{sorted(self.encoders)}.")
    if self.num_classes != offset_bins(self.max_ms, self.bin_ms):
      raise ValueError(f"sync_offset: num_classes={self.num_classes} but max_ms={self.max_ms}"
                       f" and bin_ms={self.bin_ms} make {offset_bins(self.max_ms, self.bin_ms)}"
                       " offset bins.")
    if self.video_substeps < 1:
      raise ValueError(f"sync_offset: video_substeps={self.video_substeps} must be >= 1.")
    dtype = compute_dtype(self.dtype)
    features = encode(self.encoders, batch, dtype, None, train=train)
    audio_steps, audio_per_step = _time_steps(AUDIO, self.encoders[AUDIO],
                                              batch[AUDIO].shape)
    video_steps, video_per_step = _time_steps(VIDEO, self.encoders[VIDEO],
                                              batch[VIDEO].shape)
    audio, audio_mask = _step_features(features[AUDIO].tokens, features[AUDIO].mask,
                                       audio_steps)
    video, video_mask = _step_features(features[VIDEO].tokens, features[VIDEO].mask,
                                       video_steps)
    audio = self._project(audio, 1, "audio_projection", dtype)  # [B, Na, S]
    video = self._project(video, self.video_substeps, "video_projection", dtype)  # [B, Nv, S]
    video_mask = jnp.repeat(video_mask, self.video_substeps, axis=1)

    audio_ms = audio_step_times_ms(audio_steps, audio_per_step, self.hop_ms, self.window_ms)
    video_ms = video_substep_times_ms(video_steps, video_per_step, self.fps,
                                      self.video_substeps)
    width_ms = self.width_ms or audio_per_step * self.hop_ms
    kernel = jnp.asarray(lag_kernel(audio_ms, video_ms, self.max_ms, self.bin_ms, width_ms))
    scale = self.param("scale", p.init(nn.initializers.constant(8.0)), ())
    prior = self.param("prior", p.init(nn.initializers.zeros, None), (self.num_classes,))
    return scale * lag_scores(audio, audio_mask, video, video_mask, kernel) + prior

  def _project(self, x: jax.Array, substeps: int, name: str, dtype: Any) -> jax.Array:
    """float[B, N, D] -> float[B, N * substeps, sync_dim] (LayerNorm, then one Dense)."""
    x = nn.LayerNorm(dtype=dtype, name=f"{name}_norm")(x)
    x = nn.Dense(self.sync_dim * substeps, dtype=dtype, name=name,
                 kernel_init=p.init(nn.initializers.lecun_normal(), "embed", None),
                 bias_init=p.init(nn.initializers.zeros, None))(x)
    return x.reshape(x.shape[0], -1, self.sync_dim)
