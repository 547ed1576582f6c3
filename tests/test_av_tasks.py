"""Audio-visual tasks: offset bins, the cross-correlation baseline, the any-modality
classifier, and configs/shapes_av.py end to end at a tiny size."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from multimodal import models, tasks
from multimodal.data.pp import av_ops
from multimodal.data.shapes import av_clips
from multimodal.evaluators import av_offset
from multimodal.losses import dcca
from tests.main_runs import run_main

TINY = dict(variant=None, width=16, depth=1, mlp_dim=32, num_heads=2)


def test_offset_bins_round_to_the_nearest_center_and_back():
  op = av_ops.offset_bin(max_ms=300, bin_ms=20)
  ms = np.array([-400, -300, -291, -11, 0, 9, 11, 291, 300, 350])  # no ties
  bins = np.array([op({"offset_ms": tf.constant(m)})["offset_bin"].numpy() for m in ms])
  np.testing.assert_array_equal(bins, [0, 0, 0, 14, 15, 15, 16, 30, 30, 30])
  assert av_ops.offset_bins(300, 20) == 31
  np.testing.assert_array_equal(av_ops.bin_center_ms(np.arange(31), 300, 20),
                                np.arange(-300, 301, 20))
  with pytest.raises(ValueError, match="bin_ms"):
    av_ops.offset_bin(max_ms=300, bin_ms=40)  # 300 is not a whole number of 40 ms bins


def _clip(offset_ms: float) -> av_clips.Clip:
  """Three bounces at irregular times (0.14 s: blue, 0.32 and 0.73 s: red), no noise."""
  settings = av_clips.ClipSettings(video_noise=0.0, audio_noise=0.0)
  r = 3.625
  walls = dict(radius=r, low=r + 1, high=32 - r - 1)
  red = av_clips.Mover("circle", "red", "large", x0=10.0, y0=12.0, vx=55.0, vy=6.0, **walls)
  blue = av_clips.Mover("square", "blue", "large", x0=20.0, y0=8.0, vx=3.0, vy=-24.0,
                        **walls)
  return av_clips.Clip((red, blue), offset_ms / 1000.0, settings)


@pytest.mark.parametrize("offset_ms", [-100, 0, 130])
def test_cross_correlation_baseline_finds_a_clean_offset(offset_ms):
  clip = _clip(offset_ms)
  assert len(clip.events(0.0, clip.settings.duration)) == 3
  rng = np.random.default_rng(0)
  estimate = av_offset.cross_correlation_offset(
      av_clips.render_audio(clip, None), av_clips.render_video(clip, rng),
      clip.settings.sample_rate, clip.settings.fps, max_ms=300)
  assert abs(estimate - offset_ms) <= av_offset.TOLERANCE_MS


def test_offset_metrics():
  metrics = av_offset.by_alignment(np.array([0.0, 50.0, -20.0]), np.array([0.0, 0.0, 20.0]))
  assert metrics == {"mae_ms": 30.0, "within_40ms": 2 / 3, "num_examples": 3.0,
                     "synced/mae_ms": 25.0, "synced/within_40ms": 0.5,
                     "synced/num_examples": 2.0, "shifted/mae_ms": 40.0,
                     "shifted/within_40ms": 1.0, "shifted/num_examples": 1.0}


def test_offset_metrics_split_shifted_clips_by_a_bounce_both_seen_and_heard():
  times = tf.constant([0.05, 0.5, 0.95], tf.float32)  # bounces' video times in a 1 s clip
  counts = [int(av_offset.shared_bounces(times, tf.constant(ms), 1.0))
            for ms in (0, 100, -100, 300, -300, 1000)]
  assert counts == [3, 2, 2, 2, 2, 0]  # +100: 0.95 s sounds at 1.05 s, after the clip ends
  assert int(av_offset.shared_bounces(tf.zeros([0]), tf.constant(0), 1.0)) == 0
  metrics = av_offset.by_alignment(np.array([0.0, 100.0, 0.0, 0.0]),
                                   np.array([0.0, 100.0, 200.0, -40.0]),
                                   shared_bounces=np.array([0, 2, 1, 0]))
  assert metrics["shifted_shared/within_40ms"] == 0.5   # 100 right, 200 wrong
  assert metrics["shifted_shared/num_examples"] == 2.0
  assert metrics["shifted_unshared/within_40ms"] == 1.0   # -40 within 40 of 0
  assert metrics["shared_share"] == 0.75  # synced, plus two of three shifted


def _classifier(modalities, fusion="bottleneck"):
  encoders = {"audio": dict(type="audio_encoder", patch_time=8, patch_freq=8, **TINY),
              "video": dict(type="video_encoder", kind="tubelet", patch_size=8,
                            tubelet_time=2, **TINY)}
  fusion = dict(type=fusion, width=16, depth=2, num_heads=2, mlp_dim=32)
  return models.MODELS.build(dict(
      type="fusion_classifier", encoders={m: encoders[m] for m in modalities}, fusion=fusion,
      head=dict(type="classifier", hidden_dim=16)), num_classes=5)


def _batch(seed):
  keys = jax.random.split(jax.random.key(seed))
  return {"audio": jax.random.normal(keys[0], (3, 24, 16)),
          "video": jax.random.normal(keys[1], (3, 4, 16, 16, 3))}


@pytest.mark.parametrize("fusion", ["bottleneck", "late"])
def test_a_missing_modality_changes_nothing_whatever_its_input(fusion):
  model = _classifier(("audio", "video"), fusion)
  batch = _batch(0)
  params = model.init(jax.random.key(1), batch, train=False)
  apply = jax.jit(lambda b: model.apply(params, b, train=False))
  missing = jnp.array([True, False, True])
  other = {**_batch(2), "audio": batch["audio"]}  # new video everywhere
  logits = apply({**batch, "video_missing": missing})
  changed = apply({**other, "video_missing": missing})
  np.testing.assert_allclose(logits[missing], changed[missing], atol=1e-6)
  assert not np.allclose(logits[~missing], changed[~missing], atol=1e-4)


def test_one_modality_and_clear_errors():
  model = _classifier(("audio",), fusion="early")
  params = model.init(jax.random.key(0), _batch(0), train=False)
  assert model.apply(params, _batch(0), train=False).shape == (3, 5)
  with pytest.raises(KeyError, match="batch\\['audio'\\]"):
    model.apply(params, {"video": _batch(0)["video"]}, train=False)
  with pytest.raises(ValueError, match="at least one modality"):
    models.MODELS.build(dict(type="fusion_classifier", encoders={}, fusion=dict(type="early"),
                             head=dict(type="classifier")), num_classes=2).init(
        jax.random.key(0), _batch(0), train=False)


def test_dcca_task_maximises_the_embeddings_correlation():
  model = models.MODELS.build(dict(
      type="paired_embeddings", embed_dim=4,
      encoders={"audio": dict(type="audio_encoder", patch_time=8, patch_freq=8, **TINY),
                "video": dict(type="video_encoder", patch_size=8, tubelet_time=2, **TINY)}))
  batch = {k: jnp.concatenate([v] * 4) for k, v in _batch(0).items()}  # 12 pairs
  params = model.init(jax.random.key(0), batch, train=False)
  outputs = model.apply(params, batch, train=False)
  assert outputs["audio"].shape == outputs["video"].shape == (12, 4)
  task = tasks.TASKS.build(dict(type="dcca", modalities=("audio", "video"), ridge=1e-3))
  loss, metrics = task.loss(outputs, batch)
  np.testing.assert_allclose(-loss, dcca.total_correlation(outputs["audio"], outputs["video"],
                                                           ridge=1e-3), rtol=1e-6)
  assert metrics["total_correlation"] == -loss
  with pytest.raises(ValueError, match="exactly two"):
    models.MODELS.build(dict(type="paired_embeddings", embed_dim=4, encoders={
        "audio": dict(type="audio_encoder", **TINY)})).init(jax.random.key(0), batch,
                                                           train=False)


def test_contrastive_task_between_audio_and_video():
  model = models.MODELS.build(dict(
      type="paired_embeddings", embed_dim=4, contrastive=True,
      encoders={"audio": dict(type="audio_encoder", patch_time=8, patch_freq=8, **TINY),
                "video": dict(type="video_encoder", patch_size=8, tubelet_time=2, **TINY)}))
  batch = _batch(0)
  outputs = model.apply(model.init(jax.random.key(0), batch, train=False), batch, train=False)
  np.testing.assert_allclose(np.linalg.norm(outputs["audio"], axis=1), 1.0, rtol=1e-5)
  task = tasks.TASKS.build(dict(type="contrastive", modalities=("audio", "video")))
  assert task.model_kwargs() == {}
  loss, metrics = task.loss(outputs, batch)
  # SigLIP by hand: -log sigmoid(+-(t * cos + b)), summed over the pairings, per example.
  logits = outputs["temperature"] * outputs["audio"] @ outputs["video"].T + outputs["bias"]
  signs = 2 * np.eye(3) - 1
  np.testing.assert_allclose(loss, np.sum(np.logaddexp(0, -signs * logits)) / 3, rtol=1e-5)
  assert "audio_to_video_accuracy" in metrics
  assert set(task.predict(outputs, batch)) == {"audio_embedding", "video_embedding"}
  with pytest.raises(ValueError, match="needs its tokenizer"):
    tasks.TASKS.build(dict(type="contrastive", modalities=("audio", "text")))


def test_paired_recall_both_ways():
  from multimodal.evaluators.paired_retrieval import paired_recall
  x = np.eye(4)
  y = np.eye(4)[[0, 1, 3, 2]]  # pairs 2 and 3 swapped
  metrics = paired_recall(x, y, ("audio", "video"), ks=(1, 2))
  assert metrics["audio_to_video/R@1"] == metrics["video_to_audio/R@1"] == 0.5
  assert metrics["chance/R@2"] == 0.5 and metrics["num_examples"] == 4
  with pytest.raises(ValueError, match="one video per audio"):
    paired_recall(x, y[:3], ("audio", "video"))


@pytest.mark.parametrize("task, keys", [
    ("event", ("test/classification/accuracy", "test/classification/missing_audio/accuracy",
               "test/classification/missing_video/accuracy",
               "validation/classification/accuracy/alignment/shifted")),
    ("offset", ("test/av_offset/mae_ms", "test/av_offset/within_40ms",
                "test/av_offset/baseline/mae_ms", "validation/av_offset/shifted/mae_ms",
                "test/av_offset/baseline/shifted/within_40ms", "test/av_offset/shared_share")),
    ("dcca", ("test/canonical_correlation/total_correlation",
              "test/canonical_correlation/random_projection/total_correlation")),
    ("contrastive", ("test/paired_retrieval/audio_to_video/R@1",
                     "test/paired_retrieval/chance/R@1",
                     "test_correlation/canonical_correlation/total_correlation")),
])
def test_shapes_av_config_trains_and_reports(tmp_path, task, keys):
  result = run_main(str(tmp_path / "run"), str(tmp_path / "data"), config="shapes_av.py",
                    config_arg=f"tiny=true,task={task}")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(tmp_path, "run", "results.json")) as f:
    results = json.load(f)
  for key in keys:
    assert key in results, sorted(results)
    assert np.isfinite(results[key])


def test_modality_report_compares_alone_and_joint():
  from multimodal.benchmarks import modality_report
  joint = {"test/classification/accuracy": 0.9,
           "test/classification/missing_video/accuracy": 0.5,   # audio only
           "test/classification/missing_audio/accuracy": 0.75}  # video only
  alone = {"audio": {"test/classification/accuracy": 0.6},
           "video": {"test/classification/accuracy": 0.7}}
  table = modality_report.report(joint, alone, "test", "classification/accuracy")
  assert "| audio | 0.600 | 0.500 | -0.100 |" in table
  assert "| video | 0.700 | 0.750 | +0.050 |" in table
  assert "| all (joint) | | 0.900 | +0.200 over the best single |" in table
