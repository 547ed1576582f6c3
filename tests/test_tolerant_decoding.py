"""Ordered classes scored with a tolerance (audio-video offset bins): Gaussian soft labels,
decoding to the class most likely within the tolerance, and the window for offset bins."""
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shapes_av
from multimodal.data.pp import av_ops
from multimodal.tasks.classification import ClassificationTask


def test_tolerance_window_is_each_neighbour_bins_share_within_the_tolerance():
  assert av_ops.tolerance_window(40, 20) == (0.5, 1.0, 1.0, 1.0, 0.5)
  assert av_ops.tolerance_window(45, 20) == (0.75, 1.0, 1.0, 1.0, 0.75)
  assert av_ops.tolerance_window(30, 20) == (1.0, 1.0, 1.0)
  assert av_ops.tolerance_window(10, 20) == (1.0,)
  assert av_ops.tolerance_window(0, 20) == (1.0,)
  # Offsets spread evenly over 1 ms steps: the window's weight of bin k is the share of the
  # offsets rounding to bin k that lie within the tolerance of 0.
  offsets = np.arange(-100.0, 100.0, 0.25) + 0.125
  bins = np.round(offsets / 20).astype(int)
  for k, weight in zip(range(-2, 3), av_ops.tolerance_window(40, 20)):
    assert np.mean(np.abs(offsets[bins == k]) <= 40) == pytest.approx(weight)
  with pytest.raises(ValueError, match="tolerance_ms >= 0"):
    av_ops.tolerance_window(-1, 20)


def windowed_reference(logits: np.ndarray, window: np.ndarray) -> np.ndarray:
  """int[B]: argmax over c of sum_k window[k] * p[c + k - K // 2] (p softmax, zero outside)."""
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  half = len(window) // 2
  padded = np.pad(p, ((0, 0), (half, half)))
  scores = np.stack([padded[:, c:c + len(window)] @ window for c in range(p.shape[1])], 1)
  return scores.argmax(-1)


def test_decode_window_predicts_the_class_most_likely_within_the_tolerance():
  window = (0.5, 1.0, 1.0, 1.0, 0.5)
  task = ClassificationTask(num_classes=9, decode_window=window)
  # The likeliest single class is 0, but classes 4 to 6 together hold more.
  probabilities = np.array([[0.3, 0.0, 0.0, 0.0, 0.2, 0.2, 0.2, 0.1, 0.0]]) + 1e-9
  labels = np.array([5])
  out = task.predict(jnp.log(probabilities), {"label": labels})
  assert int(out["prediction"][0]) == 5 and float(out["correct"][0]) == 1.0
  plain = ClassificationTask(num_classes=9).predict(jnp.log(probabilities), {"label": labels})
  assert int(plain["prediction"][0]) == 0
  # Random logits, an asymmetric window: against the NumPy reference.
  logits = np.random.default_rng(0).normal(size=(64, 9)).astype(np.float32) * 2
  asymmetric = np.array([0.2, 1.0, 0.7])
  got = ClassificationTask(num_classes=9, decode_window=tuple(asymmetric)).predict(
      jnp.asarray(logits), {"label": np.zeros(64, int)})["prediction"]
  np.testing.assert_array_equal(np.asarray(got), windowed_reference(logits, asymmetric))
  # A window of one weight is the argmax.
  one = ClassificationTask(num_classes=9, decode_window=(1.0,)).predict(
      jnp.asarray(logits), {"label": np.zeros(64, int)})["prediction"]
  np.testing.assert_array_equal(np.asarray(one), logits.argmax(-1))


@pytest.mark.parametrize("window", [(1.0, 1.0), (0.5, -1.0, 0.5), (0.0, 0.0, 0.0)])
def test_decode_window_must_be_odd_nonnegative_and_not_all_zero(window):
  with pytest.raises(ValueError, match="decode_window"):
    ClassificationTask(num_classes=5, decode_window=window)


def test_label_sigma_trains_on_a_gaussian_around_the_label():
  task = ClassificationTask(num_classes=7, label_sigma=1.0)
  labels = np.array([0, 3])
  targets = np.asarray(task.targets({"label": labels}))
  want = np.exp(-0.5 * (np.arange(7)[None] - labels[:, None]) ** 2)
  np.testing.assert_allclose(targets, want / want.sum(1, keepdims=True), rtol=1e-6)
  # The loss is the cross-entropy against those targets; lowest when the logits are their log.
  best, _ = task.loss(jnp.log(jnp.asarray(targets)), {"label": labels})
  one_hot, _ = task.loss(jnp.asarray(np.eye(7)[labels] * 20.0), {"label": labels})
  assert float(best) < float(one_hot)
  np.testing.assert_allclose(float(best), np.mean(-(targets * np.log(targets)).sum(1)),
                             rtol=1e-5)
  np.testing.assert_array_equal(
      np.asarray(ClassificationTask(num_classes=7).targets({"label": labels})),
      np.eye(7)[labels])
  with pytest.raises(ValueError, match="label_sigma"):
    ClassificationTask(num_classes=7, label_sigma=-1.0)


def test_offset_config_decodes_within_the_evaluators_tolerance_unless_asked_for_argmax():
  config = shapes_av.get_config("task=offset")
  assert tuple(config.task.decode_window) == (0.5, 1.0, 1.0, 1.0, 0.5)
  assert config.task.label_sigma == 1.0
  config = shapes_av.get_config("task=offset,offset_decoding=argmax,label_sigma=0")
  assert "decode_window" not in config.task and config.task.label_sigma == 0.0
  assert "decode_window" not in shapes_av.get_config("task=event").task
  with pytest.raises(ValueError, match="offset_decoding"):
    shapes_av.get_config("task=offset,offset_decoding=mean")
