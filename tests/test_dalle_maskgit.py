"""Text to image over image tokens (models `dalle` and `maskgit`, task `text_to_image_tokens`):
what the losses see, the attention pattern, cached sampling against the uncached model,
guidance, top-k, prompt dropout, MaskGIT's mask schedule, training masks and parallel
decoding with an oracle, and that a few steps on one batch lower both losses and make the
true prompt the best one."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from multimodal import models
from multimodal.models import dalle, decoding, maskgit
from multimodal.models.dalle import DallE
from multimodal.models.image_token_transformer import (SamplingConfig, mix_guidance,
                                                       with_empty_prompts)
from multimodal.models.maskgit import MaskGit
from multimodal.tasks.image_tokens import TextToImageTokensTask

# 16 px images, a 4x4 grid of 16 codes.
TOKENIZER = dict(type="image_autoencoder", image_size=16, channels=8,
                 channel_multipliers=(1, 1, 1), blocks_per_level=0, norm_groups=4,
                 codebook_size=16, code_dim=4)
DECODER = dict(width=32, depth=1, num_heads=4, num_kv_heads=1, head_dim=8, mlp_dim=64)
CODES, NUM, VOCAB, T = 16, 16, 20, 6
TASK = TextToImageTokensTask("shapes_vl")
EMBEDDINGS = ("embedding", "text_embedding", "image_position", "image_start")


def key(seed: int) -> jax.Array:
  """An "rbg" key: compiles in a fraction of threefry's time on a CPU."""
  return jax.random.key(seed, impl="rbg")


def random_variables(shapes, seed: int):
  """Values for a tree of ShapeDtypeStructs (`jax.eval_shape(model.init, ...)`) without
  compiling an initialiser: the transformer's embeddings N(0, 0.02^2) and RMSNorm scales 0
  (offsets from 1), as initialised; the tokenizer's GroupNorm scales 1; biases 0; the VQ
  codebook's flags True and usage 1; the rest N(0, 0.3^2)."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(nn.meta.unbox(shapes), sep="/")
  out = {}
  for path, leaf in flat.items():
    name = path.rsplit("/", 1)[-1]
    transformer = path.startswith("params/") and "image_tokenizer" not in path
    if leaf.dtype == jnp.bool_:
      value = np.ones(leaf.shape, bool)
    elif name == "bias" or (name == "scale" and transformer):
      value = np.zeros(leaf.shape)
    elif name in ("scale", "usage"):
      value = np.ones(leaf.shape)
    else:
      value = rng.normal(0, 0.02 if name in EMBEDDINGS and transformer else 0.3, leaf.shape)
    out[path] = jnp.asarray(value, leaf.dtype)
  return traverse_util.unflatten_dict(out, sep="/")


def build(name: str, **settings):
  settings = {"prompt_dropout": 0.0, **settings}
  return models.MODELS.build(dict(type=name, autoencoder=TOKENIZER, decoder=DECODER,
                                  **settings), vocab_size=VOCAB)


def make_batch(n: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
  """4x4-block colour images and prompts of different lengths (real tokens 1..VOCAB-2;
  padding holds token VOCAB-1, which no real position uses)."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(-1, 1, (n, 4, 4, 3)).astype(np.float32)
  images = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
  lengths = 2 + np.arange(n) % (T - 1)
  mask = np.arange(T)[None] < lengths[:, None]
  tokens = np.where(mask, rng.integers(1, VOCAB - 1, (n, T)), VOCAB - 1)
  return dict(image=images, text_tokens=tokens.astype(np.int32), text_mask=mask)


@pytest.fixture(scope="module")
def variables():
  """One set of variables for both models: their shapes from model.init (traced, not
  compiled) and random values; dalle's has an `image_start` that maskgit ignores."""
  batch = make_batch()
  shapes = jax.eval_shape(lambda b: build("dalle").init(key(0), b, train=False), batch)
  return random_variables(shapes, 0)


def maskgit_variables(variables):
  """dalle's variables without image_start, and with a [MASK] row in the code embedding."""
  params = {k: v for k, v in variables["params"].items() if k != "image_start"}
  transformer = dict(params["transformer"])
  transformer["embedding"] = jnp.concatenate([transformer["embedding"],
                                              jnp.zeros((1, DECODER["width"]))])
  return {**variables, "params": {**params, "transformer": transformer}}


def test_the_variables_are_the_tokenizer_s_and_the_transformer_s(variables):
  for name, extra in (("dalle", 0), ("maskgit", 1)):
    shapes = nn.meta.unbox(jax.eval_shape(lambda b: build(name).init(key(0), b, train=False),
                                          make_batch()))
    params = shapes["params"]
    assert set(shapes) == {"params", "codebook"}  # the VQ codebook, under the tokenizer
    assert set(shapes["codebook"]) == {"image_tokenizer"}
    assert params["transformer"]["embedding"].shape == (CODES + extra, DECODER["width"])
    assert params["text_embedding"].shape == (VOCAB, DECODER["width"])
    assert params["image_position"].shape == (NUM, DECODER["width"])
    assert "decoder" in params["image_tokenizer"]  # made at init: sampling decodes with it
  with pytest.raises(ValueError, match="discrete image tokenizer"):
    models.MODELS.build(dict(type="dalle", autoencoder={**TOKENIZER, "quantizer": "kl"},
                             decoder=DECODER), vocab_size=VOCAB).init(
        key(0), make_batch(), train=False)


# ----------------------------------------------------------------------------- DALL-E

@jax.jit
def sequence_logits(v, tt, tm, it):
  """float32[B, T + N, K] at every position of [prompt; start; codes[:-1]], the whole model
  without a cache."""
  return build("dalle").apply(v, tt, tm, it, method=lambda m, tt, tm, it: m.run(
      *m.embed(tt, tm, it[:, :-1]), train=False))


def full_logits(v, tt, tm, it) -> np.ndarray:
  """float32[B, N, K]: at image position i, the logits of code i."""
  return np.asarray(sequence_logits(v, tt, tm, it))[:, T:]


def test_dalle_loss_is_the_image_tokens_cross_entropy_only(variables):
  model, batch = build("dalle"), make_batch()
  outputs, codes = jax.jit(lambda v, b: (
      model.apply(v, b, train=False),
      model.apply(v, b["image"], method=DallE.image_tokens)))(variables, batch)
  codes = np.asarray(codes)
  np.testing.assert_array_equal(outputs["targets"], codes)
  assert len(np.unique(codes)) > 1
  np.testing.assert_array_equal(outputs["weights"], 1.0)
  # An independent cross-entropy over the image positions of the whole sequence's logits.
  tt, tm = batch["text_tokens"], batch["text_mask"]
  image = full_logits(variables, tt, tm, codes).astype(np.float64)
  logp = image - np.log(np.exp(image).sum(-1, keepdims=True))
  expected = -np.take_along_axis(logp, codes[..., None], -1).mean()
  np.testing.assert_allclose(float(TASK.loss(outputs, batch)[0]), expected, rtol=1e-5)
  # The prompt's padding changes nothing; its real tokens do.
  np.testing.assert_allclose(full_logits(variables, np.where(tm, tt, 3), tm, codes), image,
                             atol=1e-5)
  other_prompt = full_logits(variables, np.where(tm, (tt + 1) % 19, tt), tm, codes)
  assert np.abs(other_prompt - image).max(axis=(1, 2)).min() > 1e-4


def test_dalle_prompt_is_bidirectional_and_image_tokens_causal(variables):
  batch = make_batch()
  tt, tm = batch["text_tokens"], batch["text_mask"]
  codes = np.random.default_rng(1).integers(0, CODES, (4, NUM)).astype(np.int32)
  base = np.asarray(sequence_logits(variables, tt, tm, codes))
  # Example 3 has 5 real prompt tokens: its first one sees the last.
  other = tt.copy()
  other[3, 4] = 7 if tt[3, 4] != 7 else 8
  changed = np.asarray(sequence_logits(variables, other, tm, codes))
  assert np.abs(changed[3, 0] - base[3, 0]).max() > 1e-4
  np.testing.assert_array_equal(changed[:3], base[:3])
  # Code j is an input at image position j + 1: earlier positions do not see it.
  j, later_codes = 6, codes.copy()
  later_codes[:, j] = (codes[:, j] + 1) % CODES
  logits, later = base[:, T:], full_logits(variables, tt, tm, later_codes)
  np.testing.assert_allclose(later[:, :j + 1], logits[:, :j + 1], atol=1e-6)
  assert np.abs(later[:, j + 1:] - logits[:, j + 1:]).max(axis=(1, 2)).min() > 1e-4


def reference_tokens(variables, tt, tm, pick) -> np.ndarray:
  """Code by code, `pick(logits float[B, K], i)` of the whole model's logits at position i,
  without a cache."""
  tokens = np.zeros((tt.shape[0], NUM), np.int32)
  for i in range(NUM):
    tokens[:, i] = pick(full_logits(variables, tt, tm, tokens)[:, i], i)
  return tokens


@functools.partial(jax.jit, static_argnames=("config", "guided"))
def sample(variables, tt, tm, config, rng, guided=None):
  return dalle.sample_tokens(build("dalle"), variables, tt, tm, config, rng, guided)


def test_dalle_cached_greedy_sampling_is_the_uncached_argmax_with_guidance(variables):
  batch = make_batch()
  tt, tm = batch["text_tokens"], batch["text_mask"]
  got = np.asarray(sample(variables, tt, tm, SamplingConfig(temperature=0.0,
                                                            guidance_scale=3.0), key(0)))
  # The unconditional rows: the same prompts with the text mask all False.
  tokens = np.zeros((4, NUM), np.int32)
  for i in range(NUM):
    cond = full_logits(variables, tt, tm, tokens)[:, i]
    uncond = full_logits(variables, tt, np.zeros_like(tm), tokens)[:, i]
    tokens[:, i] = np.argmax(uncond + 3.0 * (cond - uncond), -1)
  np.testing.assert_array_equal(got, tokens)


def test_dalle_top_k_sampling_through_guidance_at_scale_one_is_plain_sampling(variables):
  """Guidance at scale 1 (2B rows through the cache, logits mixed) draws what the plain
  conditional model draws without a cache, with the same keys; never outside the top k."""
  batch = make_batch()
  tt, tm = batch["text_tokens"], batch["text_mask"]
  config = SamplingConfig(temperature=1.0, top_k=3, guidance_scale=1.0)
  got = np.asarray(sample(variables, tt, tm, config, key(5), guided=True))
  # decode's draws: one key split off per token.
  keys, rng = [], key(5)
  for _ in range(NUM):
    rng, pick_rng = jax.random.split(rng)
    keys.append(pick_rng)
  pick = jax.jit(decoding.pick_tokens, static_argnums=2)
  want = reference_tokens(variables, tt, tm, lambda logits, i: np.asarray(
      pick(logits, keys[i], config.decode_config(NUM))))
  np.testing.assert_array_equal(got, want)
  logits = full_logits(variables, tt, tm, got)
  third = np.sort(logits, -1)[..., -3]
  chosen = np.take_along_axis(logits, got[..., None], -1)[..., 0]
  assert (chosen >= third - 1e-4).all()  # never outside the top 3
  assert (got != logits.argmax(-1)).mean() > 0.2  # and not just the argmax


def test_guidance_mixes_conditional_and_unconditional_rows():
  rng = np.random.default_rng(0)
  both = rng.normal(size=(6, 5)).astype(np.float32)
  np.testing.assert_allclose(mix_guidance(jnp.asarray(both), 2.5),
                             both[3:] + 2.5 * (both[:3] - both[3:]), rtol=1e-6)
  tokens, mask = with_empty_prompts(jnp.ones((3, 4), jnp.int32), jnp.ones((3, 4), bool))
  assert tokens.shape == (6, 4) and mask[:3].all() and not mask[3:].any()
  ramp = [float(maskgit.guidance_ramp(3.0, t, 8)) for t in range(8)]
  np.testing.assert_allclose(ramp, 1 + 2.0 * np.arange(1, 9) / 8)


def test_prompt_dropout_drops_whole_prompts_at_the_set_rate(variables):
  model = build("dalle", prompt_dropout=0.3)
  mask = np.random.default_rng(0).random((4000, T)) < 0.8
  dropped = np.asarray(model.apply(variables, mask, True, method=DallE.prompt_mask,
                                   rngs={"dropout": key(3)}))
  gone = ~dropped.any(1)
  assert abs(gone.mean() - 0.3) < 0.03  # 4 standard deviations
  np.testing.assert_array_equal(dropped[~gone], mask[~gone])  # the rest kept
  kept = model.apply(variables, mask, False, method=DallE.prompt_mask)
  np.testing.assert_array_equal(kept, mask)  # never in evaluation
  with pytest.raises(ValueError, match="prompt_dropout"):
    build("dalle", prompt_dropout=1.5).apply(variables, mask, True, method=DallE.prompt_mask,
                                             rngs={"dropout": key(0)})


# ---------------------------------------------------------------------------- MaskGIT

def test_mask_schedule_is_cosine_non_increasing_and_ends_with_every_token_decided():
  # floor(16 cos(pi/2 (t+1)/8)) by hand: 15.69, 14.78, 13.30, 11.31, 8.89, 6.12, 3.12, 0.
  np.testing.assert_array_equal(maskgit.mask_schedule(16, 8), [15, 14, 13, 11, 8, 6, 3, 0])
  for steps in (1, 2, 12, 16, 24):
    counts = maskgit.mask_schedule(16, steps)
    assert len(counts) == steps and counts[-1] == 0
    assert (np.diff(np.concatenate([[16], counts])) <= 0).all()
    before_done = np.concatenate([[16], counts])[:-1] > 0
    assert (np.diff(np.concatenate([[16], counts]))[before_done] < 0).all()  # progress
  with pytest.raises(ValueError, match="at least 1 step"):
    maskgit.mask_schedule(16, 0)


def test_training_masks_follow_the_cosine_ratio_and_mask_at_least_one():
  masks = np.asarray(jax.jit(maskgit.training_mask, static_argnums=(1, 2))(key(0), 4000, NUM))
  counts = masks.sum(1)
  assert counts.min() >= 1 and counts.max() <= NUM
  u = (np.arange(100_000) + 0.5) / 100_000
  expected = np.mean(np.maximum(np.ceil(np.cos(np.pi / 2 * u) * NUM), 1)) / NUM
  assert abs(masks.mean() - expected) < 0.015
  assert np.abs(masks.mean(0) - masks.mean()).max() < 0.05  # every position alike


@jax.jit
def maskgit_outputs(v, batch, rng):
  return build("maskgit").apply(v, batch, train=False, rngs={"dropout": rng})


def test_maskgit_loss_is_on_the_masked_tokens_only(variables):
  model, batch, v = build("maskgit"), make_batch(), maskgit_variables(variables)
  outputs = maskgit_outputs(v, batch, key(4))
  masked = np.asarray(outputs["weights"]) > 0
  assert masked.any(1).all() and not masked.all()
  # The logits are the model's on the image with the masked codes replaced by [MASK].
  inputs = np.where(masked, CODES, np.asarray(outputs["targets"])).astype(np.int32)
  logits = jax.jit(lambda v, tt, tm, it: model.apply(v, tt, tm, it, method=MaskGit.logits))
  expected = np.asarray(logits(v, batch["text_tokens"], batch["text_mask"], inputs))
  np.testing.assert_allclose(outputs["logits"], expected, atol=1e-5)
  # The loss has no gradient at the unmasked positions.
  grad = np.asarray(jax.jit(jax.grad(lambda lg: TASK.loss({**outputs, "logits": lg}, batch)[0]))(
      outputs["logits"]))
  assert np.abs(grad[~masked]).max() == 0.0
  assert (np.abs(grad[masked]).sum(-1) > 0).all()
  # Bidirectional: an image token sees the ones after it.
  inputs[:, -1] = 3
  later = np.asarray(logits(v, batch["text_tokens"], batch["text_mask"], inputs))
  assert np.abs(later[:, 0] - expected[:, 0]).max() > 1e-4


def oracle(true, sharpness=20.0):
  """Logits with (nearly) all mass on the true codes int[B, N], `sharpness` (per position)."""
  return lambda tokens, step: (jax.nn.one_hot(true, CODES)
                               * jnp.asarray(sharpness, jnp.float32)[..., None])


def test_maskgit_decoding_with_an_oracle_recovers_the_tokens_in_the_given_steps():
  true = np.random.default_rng(0).integers(0, CODES, (3, NUM)).astype(np.int32)
  config = SamplingConfig(temperature=1.0, steps=8, choice_temperature=4.5)
  decode = jax.jit(lambda r: maskgit.decode(oracle(true), 3, NUM, CODES, config, r))
  np.testing.assert_array_equal(decode(key(0)), true)
  # Step by step: as many masked as the schedule says, decided codes kept.
  schedule = maskgit.mask_schedule(NUM, 8)
  step = jax.jit(lambda tokens, t, r: maskgit.decode_step(oracle(true), tokens, t, r, CODES,
                                                          jnp.asarray(schedule), config))
  tokens = np.full((3, NUM), CODES, np.int32)
  for t in range(8):
    new = np.asarray(step(tokens, t, key(t)))
    assert ((new == CODES).sum(1) == schedule[t]).all()
    decided = tokens != CODES
    np.testing.assert_array_equal(new[decided], tokens[decided])
    tokens = new
  np.testing.assert_array_equal(tokens, true)


def test_maskgit_keeps_the_most_confident_tokens_first():
  """With no noise, the first step keeps the positions the model is surest of."""
  sharpness = np.broadcast_to(np.linspace(1.0, 8.0, NUM), (2, NUM))  # later: surer
  config = SamplingConfig(temperature=0.0, steps=4, choice_temperature=0.0)
  schedule = maskgit.mask_schedule(NUM, 4)
  step = jax.jit(lambda tokens: maskgit.decode_step(
      oracle(np.zeros((2, NUM), np.int32), sharpness), tokens, 0, key(0), CODES,
      jnp.asarray(schedule), config))
  tokens = np.asarray(step(np.full((2, NUM), CODES, np.int32)))
  kept = NUM - schedule[0]
  np.testing.assert_array_equal(tokens != CODES,
                                np.broadcast_to(np.arange(NUM) >= NUM - kept, (2, NUM)))


# --------------------------------------------------------------------------- Training

def train(name: str, v, batch, steps: int, lr: float = 3e-3):
  """`steps` Adam steps on one batch, the tokenizer kept as it is (as config.optimizer.frozen
  keeps it) -> the trained variables."""
  model = build(name)
  frozen = {k: x for k, x in v["params"].items() if k == "image_tokenizer"}
  state = {k: x for k, x in v.items() if k != "params"}
  optimizer = optax.adam(lr)

  def loss(params, rng):
    outputs = model.apply({"params": {**params, **frozen}, **state}, batch, train=True,
                          rngs={"dropout": rng})
    return TASK.loss(outputs, batch)[0]

  @jax.jit
  def step(params, opt_state, rng):
    grads = jax.grad(loss)(params, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params = {k: x for k, x in v["params"].items() if k not in frozen}
  opt_state = optimizer.init(params)
  for i in range(steps):
    params, opt_state = step(params, opt_state, jax.random.fold_in(key(9), i))
  return {**v, "params": {**params, **frozen}}


@pytest.mark.parametrize("name", ["dalle", "maskgit"])
def test_a_few_steps_lower_the_loss_and_make_the_true_prompt_best(variables, name):
  v = variables if name == "dalle" else maskgit_variables(variables)
  batch = make_batch()
  model, state = build(name), {"model_state": {"codebook": v["codebook"]}}
  losses = jax.jit(lambda p, b, r: TASK.conditioning_losses(model, p, b, r, **state))
  before = losses(v["params"], batch, key(1))
  if name == "maskgit":  # the same masks as a plain evaluation pass with that key
    np.testing.assert_allclose(before["true"],
                               TASK.loss(maskgit_outputs(v, batch, key(1)), batch)[0], rtol=1e-5)
  trained = train(name, v, batch, steps=60)
  after = losses(trained["params"], batch, key(1))
  assert after["true"] < 0.5 * before["true"]
  assert after["true"] < 0.6 * min(after["shuffled"], after["empty"])
  if name == "maskgit":  # (dalle's sampler has tests of its own above)
    images = jax.jit(lambda p, b, r: TASK.generate_images(model, p, b, r, **state))(
        trained["params"], batch, key(2))
    assert images.shape == (4, 16, 16, 3) and np.isfinite(images).all()
    assert np.abs(np.asarray(images)).max() <= 1.0
