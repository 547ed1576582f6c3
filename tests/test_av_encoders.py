"""Audio, video and sensor encoders: token counts, masks, token order, padding invariance, and
fusion over their features with no code change."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal import models
from multimodal.models.features import Features
from multimodal.models.fusion import FUSION
from multimodal.models.video_encoder import sincos_3d

SMALL = dict(variant=None, width=32, depth=1, mlp_dim=64, num_heads=4)
RNG = np.random.default_rng(0)
# Two examples: the second has fewer real time steps, the rest padding.
SPECTROGRAM = jnp.asarray(RNG.normal(size=(2, 18, 32)), jnp.float32)  # [B, frames, mel bins]
FRAMES = jnp.arange(18)[None] < jnp.array([[18], [9]])
VIDEO = jnp.asarray(RNG.uniform(-1, 1, size=(2, 5, 16, 16, 3)), jnp.float32)  # [B, T, H, W, C]
VIDEO_FRAMES = jnp.arange(5)[None] < jnp.array([[5], [3]])
SIGNAL = jnp.asarray(RNG.normal(size=(2, 21, 3)), jnp.float32)  # [B, T, channels]
STEPS = jnp.arange(21)[None] < jnp.array([[21], [7]])


def encoder(name: str, **settings):
  """The registered encoder `name`, built as models build their encoders."""
  return models.ENCODERS.build(dict(type=name, **{**SMALL, **settings}), dtype=jnp.float32,
                               name=name)


def init_apply(module, *args):
  """(variables, output, the jitted apply) of `module` on `args` (jitted: fewer compiles than
  op by op)."""
  variables = jax.jit(functools.partial(module.init, train=False))(jax.random.key(0), *args)
  apply = jax.jit(functools.partial(module.apply, train=False))
  return variables, apply(variables, *args), apply


def with_padding_changed(x: jax.Array, mask: jax.Array) -> jax.Array:
  """x with every padded time step (mask False) replaced by large values."""
  noise = jnp.asarray(RNG.normal(size=x.shape) * 100, x.dtype)
  return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x, noise)


def assert_padding_changes_nothing(module, x, mask):
  """Real tokens and the pooled vector do not depend on the padded steps' values."""
  variables, out, apply = init_apply(module, x, mask)
  other = apply(variables, with_padding_changed(x, mask), mask)
  real = np.asarray(out.mask)
  np.testing.assert_allclose(np.asarray(other.tokens)[real], np.asarray(out.tokens)[real],
                             atol=1e-5)
  if out.pooled is not None:
    np.testing.assert_allclose(other.pooled, out.pooled, atol=1e-5)
  return out


def expected_mask(real: list[int], total: int, repeat: int = 1, cls: bool = False):
  mask = np.repeat(np.arange(total)[None] < np.array(real)[:, None], repeat, axis=1)
  return np.concatenate([np.ones((len(real), 1), bool), mask], 1) if cls else mask


@pytest.mark.parametrize("pool_type", ["gap", "cls"])
def test_audio_patches_pad_time_and_mask_padding(pool_type):
  audio = encoder("audio_encoder", patch_time=4, patch_freq=16, pool_type=pool_type)
  out = assert_padding_changes_nothing(audio, SPECTROGRAM, FRAMES)
  # 18 frames -> ceil(18 / 4) = 5 time patches x 32 / 16 = 2 frequency patches, time-major;
  # 9 real frames reach into the third time patch.
  cls = pool_type == "cls"
  assert out.tokens.shape == (2, cls + 5 * 2, 32)
  np.testing.assert_array_equal(out.mask, expected_mask([5, 3], 5, repeat=2, cls=cls))
  assert out.pooled.shape == (2, 32)
  _, unmasked, _ = init_apply(audio, SPECTROGRAM)
  assert bool(unmasked.mask.all())


def test_audio_tokens_are_time_major():
  """With no transformer block, a token sees only its own patch: changing the frames of
  time patch 1 changes tokens Fp .. 2 Fp - 1 (Fp = 2 frequency patches) and no others."""
  audio = encoder("audio_encoder", patch_time=4, patch_freq=16, depth=0, posemb="sincos2d")
  variables, out, apply = init_apply(audio, SPECTROGRAM)
  other = apply(variables, SPECTROGRAM.at[:, 4:8].add(1.0))
  changed = np.abs(np.asarray(other.tokens - out.tokens)).max(axis=(0, 2)) > 1e-6
  np.testing.assert_array_equal(changed, np.arange(10) // 2 == 1)


@pytest.mark.parametrize("kind,tokens,real", [
    # 5 frames -> ceil(5 / 2) = 3 tubelet steps x (16 / 8)^2 patches; 3 real frames: 2 steps.
    ("tubelet", 3 * 4, [12, 8]),
    # One token per frame.
    ("factorised", 5, [5, 3]),
])
def test_video_kinds_differ_in_token_count_as_documented(kind, tokens, real):
  video = encoder("video_encoder", kind=kind, patch_size=8, tubelet_time=2)
  out = assert_padding_changes_nothing(video, VIDEO, VIDEO_FRAMES)
  assert out.tokens.shape == (2, tokens, 32)
  np.testing.assert_array_equal(out.mask, expected_mask(real, tokens))
  assert out.pooled.shape == (2, 32)


def test_video_settings_cls_sincos_and_temporal_depth():
  """Shapes and params only (traced, not compiled)."""
  def shapes(module):
    variables = jax.eval_shape(functools.partial(module.init, train=False), jax.random.key(0),
                               VIDEO)
    return variables["params"], jax.eval_shape(
        functools.partial(module.apply, train=False), variables, VIDEO)

  params, out = shapes(encoder("video_encoder", kind="tubelet", patch_size=8, tubelet_time=1,
                               posemb="sincos", pool_type="cls"))
  assert out.tokens.shape == (2, 1 + 5 * 4, 32)
  assert "posemb" not in params and params["stem"]["kernel"].value.shape == (1, 8, 8, 3, 32)
  params, out = shapes(encoder("video_encoder", kind="factorised", patch_size=8,
                               temporal_depth=2, spatial_pool="gap", pool_type="cls"))
  assert out.tokens.shape == (2, 1 + 5, 32)
  assert {"spatial", "temporal_posemb", "temporal_encoder", "temporal_cls"} <= set(params)
  assert "cls" not in params["spatial"]  # frames pooled by gap
  assert {"block0", "block1"} <= set(params["temporal_encoder"])
  assert set(params["spatial"]["encoder"]) == {"block0", "ln_final"}  # depth 1


def test_video_tubelet_tokens_are_time_major():
  video = encoder("video_encoder", kind="tubelet", patch_size=8, tubelet_time=2, depth=0,
                  posemb="sincos")
  variables, out, apply = init_apply(video, VIDEO)
  other = apply(variables, VIDEO.at[:, 2:4].add(1.0))  # tubelet step 1
  changed = np.abs(np.asarray(other.tokens - out.tokens)).max(axis=(0, 2)) > 1e-6
  np.testing.assert_array_equal(changed, np.arange(12) // 4 == 1)


@pytest.mark.parametrize("name,settings,x,steps,per_step", [
    ("audio_encoder", dict(patch_time=2, patch_freq=16), SPECTROGRAM, 9, 2),
    ("video_encoder", dict(kind="tubelet", patch_size=8, tubelet_time=1), VIDEO, 5, 4),
    ("video_encoder", dict(kind="factorised", patch_size=8), VIDEO, 5, 1),
    ("sensor_encoder", dict(kind="transformer", patch_time=3), SIGNAL, 7, 1)])
def test_time_window_keeps_each_token_to_its_neighbours(name, settings, x, steps, per_step):
  # Two blocks with a window of 1 step: a change at step 0 reaches steps 0..2, no further.
  module = encoder(name, depth=2, time_window=1, pool_type="none", **settings)
  variables, out, apply = init_apply(module, x)
  per_input_step = x.shape[1] // steps
  other = apply(variables, x.at[:, :per_input_step].add(1.0))
  changed = np.abs(np.asarray(other.tokens - out.tokens)).max(axis=(0, 2)) > 1e-6
  np.testing.assert_array_equal(changed, np.arange(steps * per_step) // per_step <= 2)
  # Without the window the change reaches every step.
  global_module = encoder(name, depth=2, pool_type="none", **settings)
  variables, out, apply = init_apply(global_module, x)
  assert (np.abs(np.asarray(apply(variables, x.at[:, :per_input_step].add(1.0)).tokens
                            - out.tokens)).max(axis=(0, 2)) > 1e-6).all()


def test_sincos_3d_gives_every_tubelet_its_own_embedding():
  emb = sincos_3d(3, 2, 2, 32)
  assert emb.shape == (12, 32)
  distances = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
  assert distances[~np.eye(12, dtype=bool)].min() > 0.1


@pytest.mark.parametrize("kind,settings,tokens,real", [
    # 21 steps -> 11 -> 6 (two stride-2 convs); 7 real steps -> 4 -> 2.
    ("conv", dict(conv_channels=(8, 16), conv_kernel=3, conv_stride=2), 6, [6, 2]),
    # ceil(21 / 4) patches; 7 real steps reach into the second.
    ("transformer", dict(patch_time=4), 6, [6, 2]),
])
def test_sensor_kinds_tokens_and_padding(kind, settings, tokens, real):
  sensor = encoder("sensor_encoder", kind=kind, **settings)
  out = assert_padding_changes_nothing(sensor, SIGNAL, STEPS)
  assert out.tokens.shape == (2, tokens, 32)
  np.testing.assert_array_equal(out.mask, expected_mask(real, tokens))
  assert out.pooled.shape == (2, 32)


@functools.cache
def av_features() -> dict[str, Features]:
  """{"audio", "video", "sensor"} Features of the padded batches from tiny encoders."""
  audio = encoder("audio_encoder", patch_time=4, patch_freq=16)
  video = encoder("video_encoder", kind="factorised", patch_size=8)
  sensor = encoder("sensor_encoder", kind="conv", conv_channels=(8,))
  return {"audio": init_apply(audio, SPECTROGRAM, FRAMES)[1],
          "video": init_apply(video, VIDEO, VIDEO_FRAMES)[1],
          "sensor": init_apply(sensor, SIGNAL, STEPS)[1]}


@pytest.mark.parametrize("fusion,names,extra_tokens", [
    ("early", ("audio", "video"), 1),  # the fusion token
    ("early", ("audio", "sensor", "video"), 1),
    ("bottleneck", ("audio", "video"), 4),  # the bottleneck tokens
    ("cross_attention", ("audio", "video"), None),  # fused tokens: the query's only
])
def test_fusion_modules_take_audio_video_and_sensor_features(fusion, names, extra_tokens):
  settings = dict(type=fusion, width=32, depth=2, num_heads=4, mlp_dim=64)
  if fusion == "cross_attention":
    settings.update(query="audio", context="video")
  features = {n: av_features()[n] for n in names}
  _, fused, _ = init_apply(FUSION.build(settings), features)
  assert fused.pooled.shape == (2, 32)
  assert np.isfinite(np.asarray(fused.pooled)).all()
  tokens = features["audio"].tokens.shape[1]
  if extra_tokens is not None:
    tokens = sum(features[n].tokens.shape[1] for n in names) + extra_tokens
  assert fused.tokens.shape == (2, tokens, 32)


def test_jitted_forward_is_deterministic():
  audio = encoder("audio_encoder", patch_time=4, patch_freq=16, dropout=0.1)
  variables, _, _ = init_apply(audio, SPECTROGRAM, FRAMES)
  forward = jax.jit(lambda v, key: audio.apply(v, SPECTROGRAM, FRAMES, train=True,
                                               rngs={"dropout": key}).pooled)
  first, again = forward(variables, jax.random.key(1)), forward(variables, jax.random.key(1))
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, forward(variables, jax.random.key(2)))
  # Params depend on the seed only.
  np.testing.assert_array_equal(
      variables["params"]["stem"]["kernel"].value,
      init_apply(audio, SPECTROGRAM, FRAMES)[0]["params"]["stem"]["kernel"].value)


@pytest.mark.parametrize("name,settings,x,match", [
    ("audio_encoder", dict(patch_freq=12), SPECTROGRAM, "not a multiple of patch_freq"),
    ("audio_encoder", {}, VIDEO, r"float\[B, frames, mel_bins\]"),
    ("video_encoder", dict(patch_size=6), VIDEO, "patch_size=6"),
    ("video_encoder", dict(kind="spacetime"), VIDEO, "kind 'spacetime'"),
    ("video_encoder", dict(temporal_depth=2), VIDEO, "factorised"),
    ("video_encoder", dict(kind="factorised", spatial_pool="none"), VIDEO, "spatial_pool"),
    ("sensor_encoder", dict(kind="conv", pool_type="cls"), SIGNAL, "no class token"),
    ("sensor_encoder", dict(kind="rnn"), SIGNAL, "kind 'rnn'"),
    ("sensor_encoder", dict(kind="conv", time_window=2), SIGNAL, "time_window applies"),
    ("audio_encoder", dict(patch_time=2, patch_freq=16, time_window=-1), SPECTROGRAM,
     "time_window=-1"),
])
def test_bad_settings_and_shapes_raise(name, settings, x, match):
  with pytest.raises(ValueError, match=match):
    init_apply(encoder(name, **settings), x)


def test_mask_of_the_wrong_shape_raises():
  with pytest.raises(ValueError, match=r"bool\[B, T\]"):
    init_apply(encoder("sensor_encoder"), SIGNAL, STEPS[:, :10])
