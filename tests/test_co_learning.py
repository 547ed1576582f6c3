"""Co-learning as an auxiliary loss: the DCCA and contrastive terms between two modalities'
projected encoder outputs, against the losses computed by hand, on any fusion_classifier."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal import models
from multimodal.losses import dcca
from multimodal.models import aux_losses
from multimodal.models.co_learning import CoLearningLoss
from multimodal.models.features import Features

TINY = dict(variant=None, width=16, depth=1, mlp_dim=32, num_heads=2)


def _features(seed: int, batch: int = 12) -> dict[str, Features]:
  """audio with a pooled vector, video without one (its tokens' masked mean is used)."""
  k = jax.random.split(jax.random.key(seed), 3)
  mask = jnp.arange(5)[None, :] < jnp.array([5, 3] * (batch // 2))[:, None]
  return {"audio": Features(jnp.zeros((batch, 2, 6)), jnp.ones((batch, 2), bool),
                            pooled=jax.random.normal(k[0], (batch, 6))),
          "video": Features(jax.random.normal(k[1], (batch, 5, 4)), mask)}


def _projections(params, features):
  """The projected embeddings, by hand from the module's params."""
  video = features["video"]
  weights = video.mask[..., None].astype(jnp.float32)
  video_mean = (video.tokens * weights).sum(1) / weights.sum(1)
  dense = lambda name, x: x @ params[f"{name}_projection"]["kernel"] + params[
      f"{name}_projection"]["bias"]
  return dense("audio", features["audio"].pooled), dense("video", video_mean)


def _apply(module, features):
  variables = {"params": nn.meta.unbox(module.init(jax.random.key(0), features)["params"])}
  _, collections = module.apply(variables, features, mutable=[aux_losses.COLLECTION])
  return variables["params"], aux_losses.total(collections), collections


def test_dcca_term_is_the_weighted_dcca_loss_of_the_projections():
  features = _features(0)
  module = CoLearningLoss(modalities=("audio", "video"), loss="dcca", weight=0.5, embed_dim=3)
  params, total, collections = _apply(module, features)
  audio, video = _projections(params, features)
  want = 0.5 * dcca.dcca_loss(audio, video, ridge=1e-3)
  np.testing.assert_allclose(total, want, rtol=1e-5)
  assert "co_learning_dcca" in collections[aux_losses.COLLECTION]


@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
def test_contrastive_terms_by_hand(loss):
  features = _features(1, batch=4)
  module = CoLearningLoss(modalities=("audio", "video"), loss=loss, weight=2.0, embed_dim=3)
  params, total, _ = _apply(module, features)
  audio, video = (x / np.linalg.norm(x, axis=1, keepdims=True)
                  for x in map(np.asarray, _projections(params, features)))
  logits = np.exp(params["log_temperature"]) * audio @ video.T
  if loss == "sigmoid":
    signs = 2 * np.eye(4) - 1
    want = np.sum(np.logaddexp(0, -signs * (logits + params["bias"]))) / 4
  else:  # CLIP: both directions' cross-entropy, the matching pair the target
    log_rows = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    log_cols = logits - np.log(np.exp(logits).sum(0, keepdims=True))
    want = -(np.diag(log_rows).mean() + np.diag(log_cols).mean()) / 2
  np.testing.assert_allclose(total, 2.0 * want, rtol=1e-4)


def test_evaluation_adds_nothing():
  features = _features(0)
  module = CoLearningLoss(modalities=("audio", "video"), loss="sigmoid")
  variables = {"params": module.init(jax.random.key(0), features)["params"]}
  _, collections = module.apply(variables, features, mutable=["intermediates"])
  assert aux_losses.total(collections) is None


@pytest.mark.parametrize("settings, message", [
    (dict(modalities=("audio", "text")), "not among"),
    (dict(modalities=("audio", "audio")), "two different"),
    (dict(modalities=("audio", "video"), loss="cosine"), "Unknown co-learning loss")])
def test_bad_settings_raise(settings, message):
  with pytest.raises(ValueError, match=message):
    CoLearningLoss(**settings).init(jax.random.key(0), _features(0))


def _classifier(co_learning=None):
  encoders = {"audio": dict(type="audio_encoder", patch_time=8, patch_freq=8, **TINY),
              "video": dict(type="video_encoder", kind="tubelet", patch_size=8,
                            tubelet_time=2, **TINY)}
  return models.MODELS.build(dict(
      type="fusion_classifier", encoders=encoders, co_learning=co_learning,
      fusion=dict(type="bottleneck", width=16, depth=1, num_heads=2, mlp_dim=32),
      head=dict(type="classifier", hidden_dim=16)), num_classes=5)


def test_fusion_classifier_trains_its_encoders_with_the_term_and_predicts_as_without_it():
  keys = jax.random.split(jax.random.key(3))
  batch = {"audio": jax.random.normal(keys[0], (6, 24, 16)),
           "video": jax.random.normal(keys[1], (6, 4, 16, 16, 3))}
  model = _classifier(dict(modalities=("audio", "video"), loss="sigmoid", weight=0.3,
                           embed_dim=8))
  variables = {"params": nn.meta.unbox(model.init(jax.random.key(0), batch,
                                                   train=False)["params"])}
  assert set(variables["params"]["co_learning"]) == {
      "audio_projection", "video_projection", "log_temperature", "bias"}

  def aux(params):
    _, collections = model.apply({"params": params}, batch, train=True,
                                 rngs={"dropout": jax.random.key(1)},
                                 mutable=[aux_losses.COLLECTION])
    return aux_losses.total(collections)

  grads = jax.grad(aux)(variables["params"])
  for name in ("audio_encoder", "video_encoder", "co_learning"):
    assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads[name])), name
  assert all(np.abs(g).max() == 0 for g in jax.tree.leaves(grads["head"]))
  # The term's own params do not enter the predictions.
  plain = _classifier()
  plain_params = {k: v for k, v in variables["params"].items() if k != "co_learning"}
  np.testing.assert_allclose(model.apply(variables, batch, train=False),
                             plain.apply({"params": plain_params}, batch, train=False),
                             rtol=1e-6)
