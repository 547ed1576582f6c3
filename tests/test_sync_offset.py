"""The learned cross-correlation offset model: its time geometry, its lag scores and errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal import models
from multimodal.data.pp import av_ops
from multimodal.models import sync_offset

TINY = dict(variant=None, width=16, depth=1, mlp_dim=32, num_heads=2)


def test_step_times_follow_the_front_ends():
  # 10 ms hop, 25 ms windows, 2-frame patches: the middle frame's window is centred on
  # (2 i + 0.5) * 10 + 12.5 ms.
  np.testing.assert_allclose(sync_offset.audio_step_times_ms(3, 2, 10.0, 25.0),
                             [17.5, 37.5, 57.5])
  # One frame per step at 16 fps, 2 sub-steps: frame k spans k * 62.5 +- 31.25 ms.
  np.testing.assert_allclose(sync_offset.video_substep_times_ms(2, 1, 16.0, 2),
                             [-15.625, 15.625, 46.875, 78.125])


@pytest.mark.parametrize("audio_step,video_step", [(10, 4), (3, 9), (20, 20)])
def test_one_sound_and_one_sight_score_highest_at_their_offset(audio_step, video_step):
  audio_ms = sync_offset.audio_step_times_ms(30, 2, 10.0, 25.0)
  video_ms = sync_offset.video_substep_times_ms(16, 1, 16.0, 3)
  kernel = sync_offset.lag_kernel(audio_ms, video_ms, 300, 20, width_ms=20.0)
  audio = np.zeros((1, 30, 4), np.float32)
  audio[0, audio_step, 0] = 1.0
  video = np.zeros((1, 48, 4), np.float32)
  video[0, video_step, 0] = 1.0
  scores = sync_offset.lag_scores(audio, np.ones((1, 30), bool), video,
                                  np.ones((1, 48), bool), jnp.asarray(kernel))
  offset = audio_ms[audio_step] - video_ms[video_step]
  best = av_ops.bin_center_ms(int(np.argmax(scores[0])), 300, 20)
  assert abs(best - offset) <= 10.0, (best, offset)


def test_padded_steps_change_nothing():
  rng = np.random.default_rng(0)
  kernel = jnp.asarray(sync_offset.lag_kernel(
      sync_offset.audio_step_times_ms(12, 2, 10.0, 25.0),
      sync_offset.video_substep_times_ms(4, 1, 16.0, 2), 100, 20, width_ms=20.0))
  audio, video = rng.normal(size=(1, 12, 8)), rng.normal(size=(1, 8, 8))
  audio_mask = np.arange(12)[None] < 9
  video_mask = np.arange(8)[None] < 6
  scores = sync_offset.lag_scores(audio, audio_mask, video, video_mask, kernel)
  audio[:, 9:], video[:, 6:] = 1e3, -1e3
  np.testing.assert_allclose(
      sync_offset.lag_scores(audio, audio_mask, video, video_mask, kernel), scores, atol=1e-6)


def _model(**overrides):
  spec = dict(type="sync_offset", max_ms=100, bin_ms=20, hop_ms=10.0, window_ms=25.0,
              fps=16.0, video_substeps=2, sync_dim=8,
              encoders={"audio": dict(type="audio_encoder", patch_time=2, patch_freq=16,
                                      pool_type="none", **TINY),
                        "video": dict(type="video_encoder", patch_size=8, tubelet_time=1,
                                      pool_type="none", **TINY)})
  return models.MODELS.build({**spec, **overrides}, num_classes=11)


def test_model_gives_logits_per_offset_bin_and_clear_errors():
  batch = {"audio": jnp.ones((2, 24, 16)), "video": jnp.ones((2, 4, 16, 16, 3))}
  logits, _ = jax.eval_shape(lambda: _model().init_with_output(jax.random.key(0), batch,
                                                               train=False))
  assert logits.shape == (2, 11)
  with pytest.raises(ValueError, match="num_classes=11 but max_ms=300"):
    _model(max_ms=300).init(jax.random.key(0), batch, train=False)
  with pytest.raises(ValueError, match="do not split into"):
    encoders = _model().encoders
    _model(encoders={**encoders, "video": {**encoders["video"], "pool_type": "cls"}}).init(
        jax.random.key(0), batch, train=False)
