"""Text-to-image diffusion: noise schedules, the forward process and the prediction kinds,
the samplers (with exact denoisers), guidance, prompt dropout, the UNet and the DiT, latent
diffusion through the kl image autoencoder, and the task."""
import functools
import importlib.util
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import traverse_util
from jax.flatten_util import ravel_pytree

from multimodal import models, tasks
from multimodal.models.diffusion import samplers, schedules
from multimodal.models.diffusion.conditioning import drop_prompts
from multimodal.models.diffusion.dit import DiT
from multimodal.models.features import Features

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = 1000
RES = 16
# No transformer blocks in the prompt encoder (embeddings, positions, LayerNorm): less to
# compile; that padding changes nothing inside it is test_models.py's
# test_text_encoder_padding_changes_nothing.
TEXT = dict(type="text_encoder", variant=None, width=16, depth=0, mlp_dim=32, num_heads=2)
NETWORKS = {
    # One level, no blocks but the middle's and the one going up, attention in the middle
    # only: the least to compile (more levels are checked without compiling,
    # test_unet_levels_fit_together).
    "diffusion_unet": dict(channels=16, channel_multipliers=(1,), blocks_per_level=0,
                           attention_levels=(), num_heads=2, norm_groups=4),
    "dit": dict(patch_size=4, width=16, depth=1, num_heads=2, mlp_dim=32),
}
VOCAB = 40


# XLA's backend optimisations off: these tiny programs then compile about twice as fast (and
# run about as fast).
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                   "xla_llvm_disable_expensive_passes": True})


def key(seed):
  """A key of the rbg generator: its random draws compile several times faster on a CPU
  than threefry's, and these tests compile many."""
  return jax.random.key(seed, impl="rbg")


# ---------------------------------------------------------------- schedules


def test_linear_schedule_is_ddpms_rescaled_for_the_number_of_steps():
  np.testing.assert_allclose(schedules.alphas_cumprod("linear", 1000),
                             np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)), rtol=1e-12)
  np.testing.assert_allclose(schedules.alphas_cumprod("linear", 200),
                             np.cumprod(1 - np.linspace(5e-4, 0.1, 200)), rtol=1e-12)


def test_cosine_schedule_is_nichol_and_dhariwals():
  abar = schedules.alphas_cumprod("cosine", T)
  s = 0.008
  f = lambda u: np.cos((u / T + s) / (1 + s) * np.pi / 2) ** 2
  expected = f(np.arange(1, T + 1)) / f(0)
  # Only the last beta (which would be 1) is clipped, at 0.999.
  np.testing.assert_allclose(abar[:-1], expected[:-1], rtol=1e-9)
  np.testing.assert_allclose(abar[-1], abar[-2] * 0.001, rtol=1e-9)


@pytest.mark.parametrize("schedule", schedules.SCHEDULES)
def test_alphas_cumprod_decrease_from_one_to_zero(schedule):
  abar = schedules.alphas_cumprod(schedule, T)
  assert abar.shape == (T,) and np.all(np.diff(abar) < 0)
  assert 0.99 < abar[0] < 1 and 0 < abar[-1] < 1e-4


def test_unknown_schedule_and_prediction_are_named():
  with pytest.raises(ValueError, match="'cosin'"):
    schedules.alphas_cumprod("cosin", T)
  with pytest.raises(ValueError, match="'epsilon'"):
    schedules.prediction_target("epsilon", jnp.zeros(1), jnp.zeros(1), jnp.ones(1))


def test_predictions_convert_into_each_other():
  k1, k2, k3 = jax.random.split(key(0), 3)
  x0 = jax.random.uniform(k1, (5, 4, 4, 3), minval=-1, maxval=1)
  eps = jax.random.normal(k2, x0.shape)
  abar = jax.random.uniform(k3, (5,), minval=0.01, maxval=0.99)

  @jit
  def convert(x0, eps, abar):
    x_t = schedules.q_sample(x0, abar, eps)
    return x_t, {kind: schedules.x0_and_eps(
        kind, schedules.prediction_target(kind, x0, eps, abar), x_t, abar)
        for kind in schedules.PREDICTIONS}, schedules.prediction_target("v", x0, eps, abar)
  x_t, recovered, v = convert(x0, eps, abar)
  a, s = (np.sqrt(np.asarray(v))[:, None, None, None] for v in (abar, 1 - abar))
  np.testing.assert_allclose(x_t, a * x0 + s * eps, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(v, a * eps - s * x0, rtol=1e-5, atol=1e-6)
  for kind, (x0_hat, eps_hat) in recovered.items():
    np.testing.assert_allclose(x0_hat, x0, atol=1e-4, err_msg=kind)
    np.testing.assert_allclose(eps_hat, eps, atol=1e-4, err_msg=kind)


def test_q_sample_has_the_forward_process_mean_and_variance():
  n, abar, value = 40_000, 0.3, 0.7
  x0 = jnp.full((n, 1), value)
  x_t = schedules.q_sample(x0, jnp.full((n,), abar), jax.random.normal(key(1),
                                                                      x0.shape))
  tolerance = 4 / math.sqrt(n)
  assert abs(float(jnp.mean(x_t)) - math.sqrt(abar) * value) < tolerance
  assert abs(float(jnp.std(x_t)) - math.sqrt(1 - abar)) < tolerance


# ---------------------------------------------------------------- samplers


def test_sampling_timesteps_run_from_the_last_to_the_first():
  ts = samplers.sampling_timesteps(T, 10)
  assert ts[0] == T - 1 and ts[-1] == 0 and np.all(np.diff(ts) < 0)
  assert list(samplers.sampling_timesteps(T, 1)) == [T - 1]
  assert len(set(samplers.sampling_timesteps(T, T))) == T
  for bad in (0, T + 1):
    with pytest.raises(ValueError, match="sample_steps"):
      samplers.sampling_timesteps(T, bad)


def point_oracle(x0, abar):
  """The exact denoiser of data that is always x0: its eps from x_t and the true x0 (with
  the test's own schedule), converted back to (x0, eps) as a network's output would be."""
  abar = jnp.asarray(abar, jnp.float32)

  def denoise(x_t, t):
    a, s = jnp.sqrt(abar[t])[:, None, None, None], jnp.sqrt(1 - abar[t])[:, None, None, None]
    return schedules.x0_and_eps("eps", (x_t - a * x0) / s, x_t, abar[t])
  return denoise


@pytest.mark.parametrize("sampler,steps", [("ddim", 1), ("ddim", 10), ("ddpm", 20)])
def test_samplers_with_an_exact_denoiser_recover_the_data(sampler, steps):
  abar = schedules.alphas_cumprod("linear", T)
  x0 = jax.random.uniform(key(2), (3, 4, 4, 3), minval=-1, maxval=1)
  noise = jax.random.normal(key(3), x0.shape)
  out = jit(lambda n, r: samplers.sample(sampler, point_oracle(x0, abar), n, abar, steps,
                                             r))(noise, key(4))
  np.testing.assert_allclose(out, x0, atol=2e-3)


@pytest.mark.parametrize("sampler", samplers.SAMPLERS)
def test_samplers_with_an_exact_denoiser_draw_the_data_distribution(sampler):
  """Data N(mu, sigma^2): E[x0 | x_t] is mu + a sigma^2 / (a^2 sigma^2 + s^2) (x_t - a mu).
  With every timestep visited both samplers are then (nearly) exact; fewer steps draw too
  narrow a distribution."""
  mu, sigma = 0.5, 0.3
  abar_all = jnp.asarray(schedules.alphas_cumprod("cosine", T), jnp.float32)

  def denoise(x_t, t):
    abar = abar_all[t][:, None]
    a = jnp.sqrt(abar)
    x0 = mu + a * sigma ** 2 / (abar * sigma ** 2 + 1 - abar) * (x_t - a * mu)
    return x0, schedules.eps_from_x0(x0, x_t, abar_all[t])

  noise = jax.random.normal(key(5), (20_000, 1))
  out = jax.jit(lambda n, r: samplers.sample(sampler, denoise, n, abar_all, T, r))(
      noise, key(6))
  assert abs(float(jnp.mean(out)) - mu) < 0.01
  assert abs(float(jnp.std(out)) - sigma) < 0.01


def test_ddpm_needs_an_rng_and_unknown_samplers_are_named():
  abar = schedules.alphas_cumprod("linear", T)
  with pytest.raises(ValueError, match="rng"):
    samplers.sample("ddpm", None, jnp.zeros((1, 2)), abar, 5)
  with pytest.raises(ValueError, match="'euler'"):
    samplers.sample("euler", None, jnp.zeros((1, 2)), abar, 5)


def test_guidance_mixes_conditional_and_unconditional_in_one_call():
  calls = []

  def apply(x, t, text):
    calls.append(x.shape[0])
    return x * text["w"] + t[:, None].astype(jnp.float32)

  x, t = jnp.arange(6.0).reshape(3, 2), jnp.array([1, 2, 3])
  cond, uncond = {"w": jnp.full((3, 1), 2.0)}, {"w": jnp.full((3, 1), -1.0)}
  out_cond, out_uncond = apply(x, t, cond), apply(x, t, uncond)
  calls.clear()
  guide = lambda scale: samplers.classifier_free_guidance(apply, x, t, cond, uncond, scale)
  np.testing.assert_allclose(guide(1.0), out_cond)
  np.testing.assert_allclose(guide(jnp.float32(1.0)), out_cond)
  np.testing.assert_allclose(guide(0.0), out_uncond)
  np.testing.assert_allclose(guide(3.0), out_uncond + 3 * (out_cond - out_uncond))
  assert calls == [3, 6, 6, 6]  # scale 1 skips the unconditional half


def test_prompt_dropout_drops_whole_prompts_at_the_rate():
  mask = jnp.broadcast_to(jnp.arange(5) < 3, (20_000, 5))
  dropped = drop_prompts(key(7), mask, 0.3)
  removed = ~jnp.any(dropped, axis=1)
  assert abs(float(jnp.mean(removed)) - 0.3) < 0.015
  np.testing.assert_array_equal(dropped[~removed], mask[~removed])
  assert bool(jnp.all(drop_prompts(key(7), mask, 0.0) == mask))
  assert not bool(jnp.any(drop_prompts(key(7), mask, 1.0)))
  with pytest.raises(ValueError, match="prompt_dropout"):
    drop_prompts(key(7), mask, 1.5)


# ---------------------------------------------------------------- models
# Compiling random initialisers is slow on a CPU: the tests draw params with NumPy (`params`)
# and compile the models' own initialisation only where it is what they test.


def build(kind, **settings):
  spec = {**dict(type=kind, text=TEXT, network=NETWORKS[kind], image_size=RES), **settings}
  return models.MODELS.build(spec, vocab_size=VOCAB)


def make_batch(n=4, seed=0):
  k1, k2 = jax.random.split(key(seed))
  # Smooth images (a soft square at a random place per channel), values in [-1, 1].
  grid = jnp.linspace(-1, 1, RES)
  centers = jax.random.uniform(k1, (n, 1, 1, 3), minval=-0.6, maxval=0.6)
  images = jnp.tanh(3 * (0.4 - jnp.abs(grid[None, :, None, None] - centers)
                         - jnp.abs(grid[None, None, :, None] + centers)))
  tokens = jax.random.randint(k2, (n, 6), 4, VOCAB)
  return dict(image=images, text_tokens=tokens,
              text_mask=jnp.broadcast_to(jnp.arange(6) < 4, (n, 6)))


def params(model, batch, seed=0):
  """Params of the model's shapes: normal / sqrt(fan-in) kernels and embeddings, unit norm
  scales, small random biases (so zero-initialised gates and output layers pass signals)."""
  shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(key(0), batch,
                                                           train=False))["params"])
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if path[-1] == "scale":
      return np.ones(leaf.shape, np.float32)
    fan_in = math.prod(leaf.shape[:-1]) if leaf.ndim > 1 else 100
    return (rng.normal(size=leaf.shape) / math.sqrt(fan_in)).astype(np.float32)
  flat = traverse_util.flatten_dict(shapes)
  return traverse_util.unflatten_dict({k: draw(k, v) for k, v in flat.items()})


def without_pooled_prompt(params):
  """The pooled prompt's path into the conditioning vector cut: what the prompt then changes
  goes through cross-attention."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {k: jnp.zeros_like(v) if "text_proj" in k else v for k, v in flat.items()})


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def model_and_params(request):
  model = build(request.param)
  return request.param, model, params(model, make_batch())


def test_model_outputs_and_the_prompt_reaching_them_through_cross_attention(model_and_params):
  """Rows: a prompt; another prompt; the first with other ids in its padding; no prompt."""
  kind, model, params = model_and_params
  batch = make_batch(4)
  first = batch["text_tokens"][0]
  tokens = jnp.stack([first, first.at[:4].set((first[:4] + 1) % VOCAB),
                      first.at[4:].set(jnp.array([7, 9])), first])
  mask = batch["text_mask"].at[3].set(False)
  x_t = jnp.broadcast_to(batch["image"][:1], batch["image"].shape)
  t = jnp.full((4,), 300)

  def denoise(params, x_t, t, tokens, mask):
    text = model.apply({"params": params}, tokens, mask, method="encode_text")
    return model.apply({"params": params}, x_t, t, text, method="denoise")

  out = jit(denoise)(without_pooled_prompt(params), x_t, t, tokens, mask)
  assert out.shape == (4, RES, RES, 3) and out.dtype == jnp.float32
  difference = lambda i, j: float(jnp.max(jnp.abs(out[i] - out[j])))
  assert difference(0, 1) > 1e-3, kind    # the words change the output
  assert difference(0, 3) > 1e-3, kind    # so does having a prompt at all
  assert difference(0, 2) < 1e-5, kind    # padding changes nothing


def test_dit_starts_as_adaln_zero():
  """Zero gates: every block is the identity and the output is 0, whatever the input (the
  rows differ in image, timestep and prompt)."""
  network = DiT(**NETWORKS["dit"])
  k1, k2, k3 = jax.random.split(key(0), 3)
  x = jax.random.normal(k1, (3, RES, RES, 3))
  t = jnp.array([0, 500, 999])
  text = Features(tokens=jax.random.normal(k2, (3, 5, 16)),
                  mask=jnp.array([[True] * 5, [True] * 2 + [False] * 3, [False] * 5]),
                  pooled=jax.random.normal(k3, (3, 16)))

  @jit
  def init_and_denoise():
    variables = network.init(key(1), x, t, text, train=False)
    return nn.meta.unbox(variables["params"]), network.apply(variables, x, t, text,
                                                             train=False)
  p, out = init_and_denoise()
  flat = traverse_util.flatten_dict(p, sep="/")
  gates = [k for k in flat if "modulation" in k]
  assert len(gates) == 4 and not any(jnp.any(flat[k]) for k in gates)  # a block, the final
  assert out.shape == x.shape
  np.testing.assert_array_equal(out, jnp.zeros_like(out))


def test_unet_levels_fit_together():
  network = dict(channels=16, channel_multipliers=(1, 2, 2), blocks_per_level=1,
                 attention_levels=(1, 2), num_heads=2, norm_groups=4)
  outputs = jax.eval_shape(lambda: build("diffusion_unet", network=network).init_with_output(
      key(0), make_batch(2), train=False)[0])
  assert outputs["prediction"].shape == (2, RES, RES, 3)
  with pytest.raises(ValueError, match="divide by 4"):  # 2 halvings
    jax.eval_shape(lambda: build("diffusion_unet", network=network, image_size=6).init(
        key(0), {**make_batch(2), "image": jnp.zeros((2, 6, 6, 3))}, train=False))


def test_a_few_steps_lower_the_loss():
  """The UNet (the DiT shares everything but the network; its wiring and zero start are
  tested above). Adam runs on the params flattened into one vector: less to compile."""
  model = build("diffusion_unet")
  task = tasks.TASKS.build(dict(type="diffusion", tokenizer="shapes_vl"))
  batch = make_batch(4)
  p = params(model, batch)
  optimizer = optax.adam(3e-3)

  vector, unravel = ravel_pytree(p)

  @jit
  def step(vector, opt_state):
    def loss_fn(vector):
      outputs = model.apply({"params": unravel(vector)}, batch, train=True,
                            rngs={"dropout": key(5)})  # the same noise every step
      return task.loss(outputs, batch)[0]
    loss, grads = jax.value_and_grad(loss_fn)(vector)
    updates, opt_state = optimizer.update(grads, opt_state)
    return vector + updates, opt_state, loss

  opt_state = optimizer.init(vector)
  losses = []
  for _ in range(12):
    vector, opt_state, loss = step(vector, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.7 * losses[0], losses


def test_bad_settings_are_named():
  batch = make_batch(2)
  init = lambda model: jax.eval_shape(lambda: model.init(key(0), batch,
                                                         train=False))
  with pytest.raises(KeyError, match="'chanels'"):
    init(models.MODELS.build(dict(type="diffusion_unet", text=TEXT, network=dict(chanels=8)),
                             vocab_size=VOCAB))
  with pytest.raises(ValueError, match="image_size"):
    init(build("dit", image_size=32))
  with pytest.raises(ValueError, match="'score'"):
    init(build("dit", prediction="score"))
  with pytest.raises(ValueError, match="attention_levels"):
    init(build("diffusion_unet", network=dict(NETWORKS["diffusion_unet"],
                                              attention_levels=(2,))))


# ---------------------------------------------------------------- task


def test_conditioning_losses_and_prompt_dropout():
  """The three losses share timesteps and noise: with one prompt for every image, rolling
  the prompts changes nothing. With prompt_dropout=1 the training loss (same rng) is the
  empty prompt's. The logic is the models' shared base: the DiT stands for both."""
  model = build("dit", prompt_dropout=1.0)
  task = tasks.TASKS.build(dict(type="diffusion", tokenizer="shapes_vl"))
  batch = make_batch(4)
  batch["text_tokens"] = jnp.broadcast_to(batch["text_tokens"][:1], (4, 6))
  p = params(model, batch)
  rng = key(2)

  @jit
  def losses(p):
    outputs = model.apply({"params": p}, batch, train=True, rngs={"dropout": rng})
    return (task.conditioning_losses(model, p, batch, rng, model_state={}), outputs,
            task.loss(outputs, batch)[0], task.predict(outputs, batch)["loss"])
  conditioning, outputs, train_loss, per_example = losses(p)
  assert {k: v.shape for k, v in outputs.items()} == {
      "prediction": (4, RES, RES, 3), "target": (4, RES, RES, 3), "t": (4,)}
  assert set(conditioning) == {"true", "shuffled", "empty"}
  assert float(conditioning["true"]) == float(conditioning["shuffled"])
  assert abs(float(conditioning["true"]) - float(conditioning["empty"])) > 1e-4
  np.testing.assert_allclose(train_loss, conditioning["empty"], rtol=1e-5)
  np.testing.assert_allclose(jnp.mean(per_example), train_loss, rtol=1e-5)
  assert per_example.shape == (4,)


def test_generate_images_with_guidance():
  model = build("diffusion_unet")
  task = tasks.TASKS.build(dict(type="diffusion", tokenizer="shapes_vl", sampler="ddim",
                                sample_steps=3, guidance_scale=3.0))
  batch = make_batch(2)
  p = params(model, batch)
  prompts = dict(text_tokens=batch["text_tokens"], text_mask=batch["text_mask"])
  generate = jit(lambda p, r: task.generate_images(model, p, prompts, r))
  images = generate(p, key(0))
  assert images.shape == (2, RES, RES, 3)
  assert float(jnp.min(images)) >= -1 and float(jnp.max(images)) <= 1
  np.testing.assert_array_equal(images, generate(p, key(0)))
  assert float(jnp.max(jnp.abs(images - generate(p, key(1))))) > 1e-3


def test_bad_task_settings_are_named():
  with pytest.raises(ValueError, match="'euler'"):
    tasks.TASKS.build(dict(type="diffusion", tokenizer="shapes_vl", sampler="euler"))
  with pytest.raises(ValueError, match="sample_steps"):
    tasks.TASKS.build(dict(type="diffusion", tokenizer="shapes_vl", sample_steps=0))


# ---------------------------------------------------------------- latent diffusion


def test_latent_diffusion_through_a_frozen_kl_autoencoder():
  autoencoder = dict(type="image_autoencoder", quantizer="kl", image_size=RES, channels=8,
                     channel_multipliers=(1, 2), blocks_per_level=0, norm_groups=4,
                     code_dim=4)
  model = build("dit", network=dict(NETWORKS["dit"], patch_size=2), autoencoder=autoencoder)
  batch = make_batch(2)
  p = params(model, batch)
  assert {"encoder", "decoder"} <= set(p["image_autoencoder"])  # init made the decoder's
  outputs = jax.eval_shape(lambda: model.apply({"params": p}, batch, train=True,
                                               rngs={"dropout": key(1)}))
  assert outputs["prediction"].shape == outputs["target"].shape == (2, RES // 2, RES // 2, 4)
  # No gradient of what is diffused reaches the autoencoder.
  grads = jit(jax.grad(lambda p: jnp.sum(model.apply(
      {"params": p}, batch["image"], method="to_space"))))(p)
  assert not any(jnp.any(g) for g in jax.tree.leaves(grads))
  task = tasks.TASKS.build(dict(type="diffusion", tokenizer="shapes_vl", sampler="ddpm",
                                sample_steps=2, guidance_scale=1.0))
  generate = jit(lambda p, r: task.generate_images(model, p, batch, r))
  images = generate(p, key(0))
  assert images.shape == (2, RES, RES, 3)
  assert float(jnp.min(images)) >= -1 and float(jnp.max(images)) <= 1
  assert float(jnp.max(jnp.abs(images - generate(p, key(1))))) > 1e-4


# ---------------------------------------------------------------- config


def load_config(arg):
  spec = importlib.util.spec_from_file_location(
      "shapes_t2i_diffusion", os.path.join(REPO, "configs", "shapes_t2i_diffusion.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_latent_config_diffuses_the_autoencoders_latents(tmp_path):
  config = load_config("space=latent,tiny=true")
  assert config.model.autoencoder.quantizer == "kl"
  assert tuple(config.optimizer.frozen) == ("image_autoencoder",)
  model = models.MODELS.build(config.model.to_dict(), vocab_size=VOCAB)
  batch = dict(image=jnp.zeros((2, 32, 32, 3)), text_tokens=jnp.ones((2, 8), jnp.int32),
               text_mask=jnp.ones((2, 8), bool))
  outputs = jax.eval_shape(lambda: model.init_with_output(key(0), batch, train=False)[0])
  assert outputs["prediction"].shape == (2, 8, 8, 4)  # the tiny tokenizer's 8 x 8 x 4 latents
  # Latents are not clipped, so they default to v prediction (eps in pixels).
  assert config.model.prediction == "v"
  assert load_config("tiny=true").model.prediction == "eps"
  assert load_config("space=latent,tiny=true,prediction=eps").model.prediction == "eps"
  # A trained autoencoder's run: its recorded settings are used, its params loaded.
  run = dict(config.model.autoencoder.to_dict(), channels=24, latent_scale=0.5)
  (tmp_path / "config.json").write_text(json.dumps({"model": run}))
  config = load_config(f"space=latent,model=dit,autoencoder_init={tmp_path}")
  assert config.model.autoencoder.channels == 24 and config.model.autoencoder.latent_scale == 0.5
  assert config.init.params == str(tmp_path) and tuple(config.init.load) == (
      "image_autoencoder=",)  # the run's root under our image_autoencoder
  (tmp_path / "config.json").write_text(json.dumps({"model": dict(run, quantizer="vq")}))
  with pytest.raises(ValueError, match="quantizer=kl"):
    load_config(f"space=latent,autoencoder_init={tmp_path}")
  with pytest.raises(ValueError, match="autoencoder_init"):
    load_config("space=latent")
