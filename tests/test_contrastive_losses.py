"""Contrastive losses: the chunked SigLIP loss equals the plain one on 8 simulated devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal.losses import contrastive
from multimodal.training import sharding


def embeddings(n, d=16, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  image = jax.random.normal(k1, (n, d))
  text = image + 0.5 * jax.random.normal(k2, (n, d))  # correlated, so positives score higher
  normalise = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  return normalise(image), normalise(text)


def sigmoid_loss_by_hand(image, text, t, b):
  logits = t * np.asarray(image) @ np.asarray(text).T + b
  labels = 2 * np.eye(len(logits)) - 1
  return np.mean(np.sum(np.log1p(np.exp(-labels * logits)), axis=1))


def test_sigmoid_loss_against_numpy():
  image, text = embeddings(6)
  got = contrastive.sigmoid_loss(image, text, jnp.float32(10.0), jnp.float32(-10.0))
  np.testing.assert_allclose(got, sigmoid_loss_by_hand(image, text, 10.0, -10.0), rtol=1e-5)


def test_softmax_loss_is_low_for_matching_pairs_and_symmetric():
  image, text = embeddings(8)
  t = jnp.float32(20.0)
  loss = contrastive.softmax_loss(image, text, t)
  shuffled = contrastive.softmax_loss(image, jnp.roll(text, 1, axis=0), t)
  assert loss < np.log(8) < shuffled
  np.testing.assert_allclose(loss, contrastive.softmax_loss(text, image, t), rtol=1e-6)


@pytest.mark.parametrize("mesh_shape", [(8, 1), (4, 2), (2, 1)])
def test_chunked_sigmoid_loss_equals_the_plain_loss(mesh_shape):
  data, fsdp = mesh_shape
  mesh = sharding.make_mesh({"data": data, "fsdp": fsdp, "model": -1})
  image, text = embeddings(32)
  t, b = jnp.float32(10.0), jnp.float32(-10.0)
  want = contrastive.sigmoid_loss(image, text, t, b)
  want_grads = jax.grad(contrastive.sigmoid_loss, argnums=(0, 1, 2, 3))(image, text, t, b)

  batch = sharding.batch_sharding(mesh)
  image_s, text_s = jax.device_put(image, batch), jax.device_put(text, batch)
  chunked = jax.jit(lambda *a: contrastive.chunked_sigmoid_loss(*a, mesh=mesh))
  np.testing.assert_allclose(chunked(image_s, text_s, t, b), want, rtol=1e-5)
  grads = jax.jit(jax.grad(lambda *a: contrastive.chunked_sigmoid_loss(*a, mesh=mesh),
                           argnums=(0, 1, 2, 3)))(image_s, text_s, t, b)
  for got, expected in zip(grads, want_grads):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_chunked_loss_names_a_batch_that_does_not_split():
  mesh = sharding.make_mesh({"data": 8})
  image, text = embeddings(12)
  with pytest.raises(ValueError, match="does not split over the 8 devices"):
    contrastive.chunked_sigmoid_loss(image, text, 1.0, 0.0, mesh=mesh)
