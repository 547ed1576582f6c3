"""The image tokenizer (model `image_autoencoder`): the VQ codebook's assignment, gradients,
EMA update and restarts; the Gumbel and Gaussian bottlenecks' eval behaviour and KL terms;
tokens and latents round trips; errors on bad settings; the task, evaluator summary and
config; and that a few steps on one batch clearly lower the reconstruction error."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.core import unfreeze

from configs import shapes_image_tokenizer
from multimodal import models
from multimodal.evaluators.image_reconstruction import summarize
from multimodal.models.image_autoencoder.encoder import ConvEncoder
from multimodal.models.image_autoencoder.gaussian_latent import (GaussianLatent,
                                                                 kl_to_standard_normal)
from multimodal.models.image_autoencoder.gumbel_quantizer import GumbelQuantizer
from multimodal.models.image_autoencoder.vector_quantizer import VectorQuantizer, nearest_codes
from multimodal.tasks.image_autoencoder import (ImageAutoencoderTask, codebook_statistics,
                                                foreground_mask)

TINY = dict(type="image_autoencoder", image_size=16, channels=8, channel_multipliers=(1, 2),
            blocks_per_level=1, norm_groups=4, codebook_size=16, code_dim=4)
GRID = 8  # 16 px, one 2x downsampling


def key(seed: int) -> jax.Array:
  """An "rbg" key: XLA's random bit generator compiles in a fraction of threefry's time on a
  CPU (the inits and samplers here are compiled once each)."""
  return jax.random.key(seed, impl="rbg")


def smooth_images(seed: int, n: int = 4, size: int = 16) -> np.ndarray:
  """float32[n, size, size, 3] in [-1, 1]: 4x4 random colour blocks, upsampled."""
  coarse = np.random.default_rng(seed).uniform(-1, 1, (n, 4, 4, 3)).astype(np.float32)
  return np.repeat(np.repeat(coarse, size // 4, axis=1), size // 4, axis=2)


def build(**settings):
  return models.MODELS.build({**TINY, **settings})


def init(module, inputs):
  """module.init under jit: one compilation instead of one per operation."""
  return jax.jit(lambda inputs: module.init(key(0), inputs, train=False))(inputs)


def run(module, variables, inputs, *, train: bool, seed: int = 0, mutable=False):
  """module.apply under jit, with a "dropout" rng; the codebook mutable in training."""
  mutable = ["codebook"] if train else mutable
  return jax.jit(lambda v, x, rng: module.apply(v, x, train=train, mutable=mutable,
                                                rngs={"dropout": rng}))(variables, inputs,
                                                                        key(seed))


def numpy_nearest(vectors: np.ndarray, codebook: np.ndarray) -> np.ndarray:
  return np.argmin(((vectors[:, None, :] - codebook[None]) ** 2).sum(-1), axis=1)


# --- the VQ quantizer -------------------------------------------------------------------------

def test_nearest_codes_match_a_numpy_reference():
  rng = np.random.default_rng(0)
  vectors, codebook = rng.normal(size=(200, 6)), rng.normal(size=(32, 6))
  got = np.asarray(nearest_codes(jnp.asarray(vectors, jnp.float32),
                                 jnp.asarray(codebook, jnp.float32)))
  np.testing.assert_array_equal(got, numpy_nearest(vectors, codebook))


def vq_variables(quantizer, z, **codebook_values):
  variables = unfreeze(init(quantizer, z))
  variables["codebook"].update({k: jnp.asarray(v) for k, v in codebook_values.items()})
  return variables


def test_vq_quantizes_to_the_nearest_code_with_straight_through_gradients():
  quantizer = VectorQuantizer(codebook_size=8, code_dim=3, beta=0.5)
  z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 4, 3)), jnp.float32)
  variables = vq_variables(quantizer, z)
  out = run(quantizer, variables, z, train=False)
  codebook = np.asarray(variables["codebook"]["embedding"])
  flat = np.asarray(z).reshape(-1, 3)
  codes = numpy_nearest(flat, codebook)
  np.testing.assert_array_equal(np.asarray(out["codes"]).reshape(-1), codes)
  np.testing.assert_allclose(np.asarray(out["latents"]).reshape(-1, 3), codebook[codes],
                             atol=1e-6)
  np.testing.assert_allclose(out["losses"]["commitment"],
                             0.5 * np.mean((flat - codebook[codes]) ** 2), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out["code_counts"]).sum(0),
                             np.bincount(codes, minlength=8))
  # Straight through: d/dz of sum(w * latents) is w itself (the gradient at the codes).
  w = jnp.asarray(np.random.default_rng(2).normal(size=z.shape), jnp.float32)
  grad = jax.jit(jax.grad(
      lambda z: jnp.sum(w * quantizer.apply(variables, z, train=False)["latents"])))(z)
  np.testing.assert_allclose(grad, w, atol=1e-6)


def numpy_ema_step(codebook, usage, sums, z, decay, eps):
  """Sonnet's VectorQuantizerEMA update in NumPy -> (usage, sums, codebook)."""
  vectors = z.reshape(-1, codebook.shape[1]).astype(np.float64)
  one_hot = np.eye(len(codebook))[numpy_nearest(vectors, codebook)]
  usage = decay * usage + (1 - decay) * one_hot.sum(0)
  sums = decay * sums + (1 - decay) * one_hot.T @ vectors
  n = usage.sum()
  return usage, sums, sums / ((usage + eps) / (n + len(codebook) * eps) * n)[:, None]


def test_vq_ema_update_of_one_step_matches_a_hand_computation():
  decay, eps = 0.9, 1e-5
  quantizer = VectorQuantizer(codebook_size=4, code_dim=2, decay=decay, epsilon=eps,
                              restart_threshold=0.0, data_init=False)
  codebook = np.array([[0., 0.], [4., 0.], [0., 4.], [9., 9.]], np.float32)
  z = np.array([[0.5, 0.], [-0.5, 0.2], [3.5, 0.5], [0.3, 4.1], [0.1, 3.5], [0., 5.]],
               np.float32).reshape(1, 2, 3, 2)  # codes 0, 0, 1, 2, 2, 2; code 3 unused
  usage = np.array([1.0, 2.0, 0.5, 1.0], np.float32)
  sums = codebook * usage[:, None]
  variables = vq_variables(quantizer, jnp.asarray(z), embedding=codebook, usage=usage,
                           sums=sums)
  out, state = run(quantizer, variables, jnp.asarray(z), train=True)
  new_usage, new_sums, expected = numpy_ema_step(codebook, usage, sums, z, decay, eps)
  # By hand: code 1 took one vector, so usage 0.9 * 2 + 0.1 and sums 0.9 * 8 + 0.1 * 3.5.
  np.testing.assert_allclose(new_usage[1], 1.9)
  np.testing.assert_allclose(new_sums[1], [7.55, 0.05])
  np.testing.assert_array_equal(np.asarray(out["codes"]).reshape(-1), [0, 0, 1, 2, 2, 2])
  np.testing.assert_allclose(state["codebook"]["usage"], new_usage, rtol=1e-6)
  np.testing.assert_allclose(state["codebook"]["sums"], new_sums, rtol=1e-6)
  np.testing.assert_allclose(state["codebook"]["embedding"], expected, rtol=1e-5)
  assert float(out["stats"]["restarted_codes"]) == 0.0
  # Without train (or with the collection immutable) nothing changes.
  _, same = run(quantizer, variables, jnp.asarray(z), train=False, mutable=["codebook"])
  np.testing.assert_array_equal(same["codebook"]["embedding"], codebook)


def test_a_dead_code_is_restarted_to_one_of_the_batch_encoder_outputs():
  quantizer = VectorQuantizer(codebook_size=4, code_dim=2, decay=0.9,
                              restart_threshold=0.05, data_init=False)
  codebook = np.array([[0., 0.], [4., 0.], [0., 4.], [50., 50.]], np.float32)
  usage = np.array([1.0, 1.0, 1.0, 0.01], np.float32)  # code 3: below the threshold
  z = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype(np.float32)
  sums = codebook * usage[:, None]
  variables = vq_variables(quantizer, jnp.asarray(z), embedding=codebook, usage=usage,
                           sums=sums)
  out, state = run(quantizer, variables, jnp.asarray(z), train=True, seed=4)
  new = np.asarray(state["codebook"]["embedding"])
  distances = np.abs(z.reshape(-1, 2) - new[3]).sum(-1)
  assert distances.min() < 1e-6, "code 3 was not moved onto an encoder output"
  _, _, expected = numpy_ema_step(codebook, usage, sums, z, 0.9, 1e-5)
  np.testing.assert_allclose(new[:3], expected[:3], rtol=1e-5, atol=1e-6)  # the live codes
  assert float(state["codebook"]["usage"][3]) == 1.0
  assert float(out["stats"]["restarted_codes"]) == 1.0


def test_data_init_sets_every_code_from_the_first_training_batch():
  quantizer = VectorQuantizer(codebook_size=8, code_dim=2)
  z = np.random.default_rng(1).normal(size=(2, 4, 4, 2)).astype(np.float32) + 10.0
  variables = init(quantizer, jnp.asarray(z))
  assert not bool(variables["codebook"]["initialized"])
  out, state = run(quantizer, variables, jnp.asarray(z), train=True, seed=5)
  new = np.asarray(state["codebook"]["embedding"])
  rows = z.reshape(-1, 2)
  assert all(np.abs(rows - code).sum(-1).min() < 1e-6 for code in new)
  assert len({tuple(code) for code in new}) == 8  # drawn without replacement
  assert bool(state["codebook"]["initialized"]) and float(out["stats"]["restarted_codes"]) == 8


# --- the Gumbel and Gaussian bottlenecks -------------------------------------------------------

def test_gumbel_at_eval_gives_argmax_codes_and_kl_to_uniform():
  quantizer = GumbelQuantizer(codebook_size=6, code_dim=3, kl_weight=1.0)
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 3, 6)) * 3, jnp.float32)
  variables = init(quantizer, logits)
  embedding = np.asarray(variables["params"]["embedding"].unbox())
  out = run(quantizer, variables, logits, train=False)
  codes = np.argmax(np.asarray(logits), -1)
  np.testing.assert_array_equal(out["codes"], codes)
  np.testing.assert_allclose(out["latents"], embedding[codes], atol=1e-6)
  q = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(out["losses"]["kl"], np.mean(np.sum(q * np.log(q * 6), -1)),
                             rtol=1e-5)
  uniform = run(quantizer, variables, jnp.full((2, 3, 3, 6), 0.7), train=False)
  assert abs(float(uniform["losses"]["kl"])) < 1e-6
  # Training mixes the embeddings with Gumbel-softmax weights: not the hard codes.
  train, _ = run(quantizer, variables, logits, train=True)
  assert np.abs(np.asarray(train["latents"]) - embedding[codes]).max() > 1e-3


def test_gaussian_kl_matches_the_closed_form_and_eval_gives_the_mean():
  latent = GaussianLatent(latent_dim=3, kl_weight=1.0)
  moments = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 6)), jnp.float32)
  out = run(latent, {}, moments, train=False)
  mean, logvar = np.split(np.asarray(moments, np.float64), 2, axis=-1)
  closed = 0.5 * (mean ** 2 + np.exp(logvar) - 1 - logvar)
  np.testing.assert_allclose(out["losses"]["kl"], closed.mean(), rtol=1e-5)
  np.testing.assert_allclose(out["latents"], mean, atol=1e-6)
  # The closed form against a Monte-Carlo estimate of E_q[log q(x) - log p(x)].
  mu, lv = 0.7, -0.4
  x = mu + np.exp(0.5 * lv) * np.random.default_rng(0).normal(size=400_000)
  log_q = -0.5 * ((x - mu) ** 2 / np.exp(lv) + lv)
  log_p = -0.5 * x ** 2
  assert abs(np.mean(log_q - log_p) - float(kl_to_standard_normal(mu, lv))) < 5e-3
  sampled, _ = run(latent, {}, moments, train=True)
  assert np.abs(np.asarray(sampled["latents"]) - mean).max() > 1e-2


# --- the model ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vq_model():
  """The tiny vq autoencoder and its initial variables (shared: every init compiles)."""
  model = build(quantizer="vq")
  return model, init(model, {"image": jnp.asarray(smooth_images(0))})


def round_trip(model, variables, images):
  """(encode_tokens, decode_tokens of them, the eval-mode outputs, the encoder's features)."""
  def run(v, x):
    tokens = model.apply(v, x, method="encode_tokens")
    outputs, state = model.apply(v, {"image": x}, train=False, mutable=["intermediates"],
                                 capture_intermediates=lambda m, _: isinstance(m, ConvEncoder))
    features = state["intermediates"]["encoder"]["__call__"][0]
    return tokens, model.apply(v, tokens, method="decode_tokens"), outputs, features
  return jax.jit(run)(variables, images)


def check_round_trip(tokens, decoded, outputs, expected_codes):
  assert tokens.shape == (4, GRID * GRID) and tokens.dtype == jnp.int32
  assert decoded.shape == (4, 16, 16, 3)
  np.testing.assert_array_equal(tokens, outputs["codes"])
  np.testing.assert_allclose(decoded, outputs["reconstruction"], atol=1e-5)
  # Row-major: token i * w + j is the code of cell (i, j).
  np.testing.assert_array_equal(tokens, expected_codes.reshape(4, GRID * GRID))


def test_vq_tokens_round_trip_equals_the_eval_reconstruction(vq_model):
  model, variables = vq_model
  assert model.grid == GRID and model.codebook_size == 16
  tokens, decoded, outputs, features = round_trip(model, variables,
                                                  jnp.asarray(smooth_images(1)))
  codebook = np.asarray(variables["codebook"]["bottleneck"]["embedding"])
  expected = numpy_nearest(np.asarray(features).reshape(-1, 4), codebook)
  check_round_trip(tokens, decoded, outputs, expected)


def test_gumbel_tokens_round_trip_equals_the_eval_reconstruction():
  model = build(quantizer="gumbel", blocks_per_level=0)
  images = jnp.asarray(smooth_images(1))
  variables = init(model, {"image": images})
  tokens, decoded, outputs, logits = round_trip(model, variables, images)
  check_round_trip(tokens, decoded, outputs, np.argmax(np.asarray(logits), -1))


def test_kl_latents_round_trip_with_the_latent_scale():
  model = build(quantizer="kl", latent_scale=0.5, blocks_per_level=0)
  images = jnp.asarray(smooth_images(1))
  variables = init(model, {"image": images})
  latents, decoded, outputs = jax.jit(lambda v, x: (
      model.apply(v, x, method="encode_latents"),
      model.apply(v, model.apply(v, x, method="encode_latents"), method="decode_latents"),
      model.apply(v, {"image": x}, train=False)))(variables, images)
  assert latents.shape == (4, GRID, GRID, 4) and "codes" not in outputs
  np.testing.assert_allclose(decoded, outputs["reconstruction"], atol=1e-5)
  with pytest.raises(ValueError, match="discrete quantizer"):
    model.apply(variables, images, method="encode_tokens")


def test_bad_settings_raise_errors_naming_the_setting():
  batch = {"image": jnp.zeros((1, 30, 30, 3))}
  with pytest.raises(ValueError, match="image_size 30 is not divisible"):
    jax.eval_shape(lambda: build(image_size=30, channel_multipliers=(1, 2, 2)).init(
        key(0), batch, train=False))
  with pytest.raises(ValueError, match="quantizer.*'fsq'"):
    jax.eval_shape(lambda: build(quantizer="fsq").init(key(0), batch, train=False))
  with pytest.raises(ValueError, match="image_size"):  # images of another size
    jax.eval_shape(lambda: build().init(key(0), batch, train=False))
  with pytest.raises(ValueError, match="norm_groups"):
    jax.eval_shape(lambda: build(norm_groups=3).init(
        key(0), {"image": jnp.zeros((1, 16, 16, 3))}, train=False))
  with pytest.raises(KeyError, match="codebook_size"):
    build(codebook_sise=8)
  with pytest.raises(ValueError, match="reconstruction loss 'l3'"):
    ImageAutoencoderTask(reconstruction="l3")


# --- the task, the evaluator's summary, the config ----------------------------------------------

def test_task_loss_and_codebook_statistics():
  images = jnp.asarray(smooth_images(2, n=2))
  outputs = {"reconstruction": images + 0.1, "losses": {"commitment": jnp.float32(0.3)},
             "stats": {"restarted_codes": jnp.float32(0.0)},
             "codes": jnp.zeros((2, 4), jnp.int32),
             "code_counts": jnp.array([[2., 0., 2., 0.], [4., 0., 0., 0.]])}
  loss, metrics = ImageAutoencoderTask().loss(outputs, {"image": images})
  np.testing.assert_allclose(metrics["recon_mse"], 0.01, rtol=1e-4)
  np.testing.assert_allclose(loss, 0.31, rtol=1e-4)
  # Counts 6, 0, 2, 0: p = (3/4, 1/4); perplexity exp(H(p)); half the codes used.
  p = np.array([0.75, 0.25])
  np.testing.assert_allclose(metrics["perplexity"], np.exp(-np.sum(p * np.log(p))), rtol=1e-5)
  assert float(metrics["codebook_usage"]) == 0.5
  l1_loss, _ = ImageAutoencoderTask(reconstruction="l1").loss(outputs, {"image": images})
  np.testing.assert_allclose(l1_loss, 0.4, rtol=1e-4)
  predictions = ImageAutoencoderTask().predict(outputs, {"image": images})
  np.testing.assert_allclose(predictions["recon_mse"], [0.01, 0.01], rtol=1e-4)
  assert set(predictions) == {"recon_mse", "reconstruction", "codes", "code_counts"}
  np.testing.assert_array_equal(predictions["reconstruction"], images + 0.1)
  assert float(codebook_statistics(jnp.full((8,), 3.0))["perplexity"]) == pytest.approx(8.0)


def rendered_scene_images():
  """float32[2, 16, 16, 3] in [-1, 1]: Shapes-like scenes, grey with mild noise, holding a red
  4 x 4 square (image 0) or a blue 2 x 6 bar (image 1); and bool[2, 16, 16], the objects."""
  rng = np.random.default_rng(0)
  images = np.full((2, 16, 16, 3), 210 / 127.5 - 1, np.float32)
  images += rng.normal(0, 3 / 127.5, images.shape).astype(np.float32)  # the renderer's noise
  objects = np.zeros((2, 16, 16), bool)
  objects[0, 3:7, 5:9] = objects[1, 10:12, 2:8] = True
  images[0][objects[0]] = np.array([220, 40, 40]) / 127.5 - 1
  images[1][objects[1]] = np.array([40, 80, 220]) / 127.5 - 1
  return images, objects


def test_foreground_weight_counts_the_objects_pixels_more():
  images, objects = rendered_scene_images()
  np.testing.assert_array_equal(np.asarray(foreground_mask(jnp.asarray(images), 0.1))[..., 0],
                                objects)
  outputs = {"losses": {}, "stats": {}}
  # The same squared error (0.04 per value) on 4 object pixels, or on 4 background pixels.
  on_object, on_background = images.copy(), images.copy()
  on_object[0, 3, 5:9] += 0.2
  on_background[0, 12, 10:14] += 0.2
  plain, weighted = ImageAutoencoderTask(), ImageAutoencoderTask(foreground_weight=5.0)
  loss = lambda task, reconstruction: float(task.loss(
      {**outputs, "reconstruction": jnp.asarray(reconstruction)}, {"image": images})[0])
  assert loss(plain, on_object) == pytest.approx(loss(plain, on_background), rel=1e-6)
  # Image 0: 16 object pixels of weight 5 and 240 of weight 1, normalised to average 1.
  norm = (16 * 5 + 240) / 256
  error = 4 * 3 * 0.04 / images.size  # 4 pixels x 3 channels, over every value
  assert loss(weighted, on_object) == pytest.approx(error * 5 / norm, rel=1e-4)
  assert loss(weighted, on_background) == pytest.approx(error / norm, rel=1e-4)
  # recon_mse stays the plain error, whatever the weighting.
  _, metrics = weighted.loss({**outputs, "reconstruction": jnp.asarray(on_object)},
                             {"image": images})
  assert float(metrics["recon_mse"]) == pytest.approx(error, rel=1e-4)
  with pytest.raises(ValueError, match="foreground_weight"):
    ImageAutoencoderTask(foreground_weight=0.5)
  with pytest.raises(ValueError, match="foreground_threshold"):
    ImageAutoencoderTask(foreground_weight=2.0, foreground_threshold=0.0)


def test_evaluator_summary():
  metrics = summarize(np.array([0.04, 0.0004]), np.array([5.0, 5.0, 0.0, 0.0]))
  assert metrics["recon_mse"] == pytest.approx(0.0202)
  # PSNR for pixels in [-1, 1]: 10 log10(4 / mse), 20 dB and 40 dB.
  assert metrics["psnr"] == pytest.approx(30.0)
  assert metrics["perplexity"] == pytest.approx(2.0)
  assert metrics["codebook_usage"] == 0.5 and metrics["num_images"] == 2
  assert "perplexity" not in summarize(np.array([0.1]), None)


@pytest.mark.parametrize("arg", ["quantizer=gumbel,tiny=true", "quantizer=kl,res=64"])
def test_config_arguments_build_the_model(arg):
  config = shapes_image_tokenizer.get_config(arg)
  model = models.MODELS.build(config.model.to_dict())
  res = config.model.image_size
  outputs, _ = jax.eval_shape(lambda: model.init_with_output(
      key(0), {"image": jnp.zeros((2, res, res, 3))}, train=False))
  assert outputs["reconstruction"].shape == (2, res, res, 3)
  assert ("codes" in outputs) == (config.model.quantizer == "gumbel")
  with pytest.raises(ValueError, match="quantizer"):
    shapes_image_tokenizer.get_config("quantizer=vqgan")


# --- training ----------------------------------------------------------------------------------

def test_a_few_steps_on_one_batch_halve_the_vq_reconstruction_error(vq_model):
  model, variables = vq_model
  task = ImageAutoencoderTask()
  batch = {"image": jnp.asarray(smooth_images(3, n=8))}
  params, codebook = variables["params"], variables["codebook"]
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, codebook, opt_state, rng):
    def loss_fn(params):
      outputs, state = model.apply({"params": params, "codebook": codebook}, batch, train=True,
                                   mutable=["codebook"], rngs={"dropout": rng})
      return task.loss(outputs, batch)[0], state["codebook"]
    (_, codebook), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), codebook, opt_state

  evaluate = jax.jit(lambda params, codebook: jnp.mean(
      (model.apply({"params": params, "codebook": codebook}, batch, train=False)
       ["reconstruction"] - batch["image"]) ** 2))
  before = float(evaluate(params, codebook))
  for i in range(30):
    params, codebook, opt_state = step(params, codebook, opt_state, key(i))
  after = float(evaluate(params, codebook))
  assert after < 0.5 * before, (before, after)
  assert bool(codebook["bottleneck"]["initialized"])
