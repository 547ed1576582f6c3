"""Decoding on the device: the cached loop against step-by-step decoding without a cache,
beam search against exhaustive search, sampling filters, EOS, and a sharded batch."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal.models import decoding, gemma
from multimodal.training import sharding

CONFIG = gemma.GemmaConfig(vocab_size=32, width=32, depth=2, num_heads=4, num_kv_heads=1,
                           head_dim=8, mlp_dim=64)
PROMPTS = [[5, 9, 3, 7], [4, 2], [11, 12, 13]]


@pytest.fixture(scope="module")
def model_and_params():
  model = gemma.GemmaDecoder(CONFIG)
  x = jnp.zeros((1, 4, CONFIG.width))
  params = model.init(jax.random.key(0), x, jnp.zeros((1, 4), jnp.int32),
                      jnp.ones((1, 4, 4), bool))["params"]
  params = flax.linen.unbox(params)
  # Embeddings of std 0.05 (the init's 0.02 x 2.5): next-token distributions that are neither
  # one-hot nor flat, so that beam search has choices to make and no two tokens tie.
  return model, {**params, "embedding": params["embedding"] * 2.5}


def padded(prompts, length=None):
  length = length or max(map(len, prompts))
  tokens = np.zeros((len(prompts), length), np.int32)
  mask = np.zeros((len(prompts), length), bool)
  for i, prompt in enumerate(prompts):
    tokens[i, :len(prompt)], mask[i, :len(prompt)] = prompt, True
  return jnp.asarray(tokens), jnp.asarray(mask)


def logits_without_cache(model, params, prompt, continuation):
  """The next-token logits after prompt + continuation, the whole sequence run again."""
  tokens = jnp.asarray([list(prompt) + list(continuation)], jnp.int32)
  length = tokens.shape[1]
  input_mask = jnp.ones((1, length), bool)
  prefix = jnp.asarray([[True] * len(prompt) + [False] * len(continuation)])
  x = model.apply({"params": params}, tokens, method=gemma.GemmaDecoder.embed_tokens)
  logits, _ = model.apply({"params": params}, x, jnp.arange(length)[None],
                          gemma.prefix_lm_mask(input_mask, prefix))
  return logits[0, -1]


def start(model, params, prompts, new_tokens, repeat=1):
  tokens, mask = padded(prompts)
  tokens, mask = jnp.repeat(tokens, repeat, 0), jnp.repeat(mask, repeat, 0)
  embeds = model.apply({"params": params}, tokens, method=gemma.GemmaDecoder.embed_tokens)
  slots = tokens.shape[1] + new_tokens
  logits, cache, key_mask, positions = gemma.prefill(model, params, embeds, mask, mask, slots)
  return logits, cache, key_mask, tokens.shape[1], positions


def test_prefix_lm_mask():
  input_mask = jnp.asarray([[1, 1, 1, 1, 0]], bool)
  prefix = jnp.asarray([[1, 1, 0, 0, 0]], bool)
  want = np.array([[1, 1, 0, 0, 0],   # prefix tokens see the whole prefix
                   [1, 1, 0, 0, 0],
                   [1, 1, 1, 0, 0],   # the answer is causal
                   [1, 1, 1, 1, 0],
                   [0, 0, 0, 0, 0]], bool)  # padding sees nothing and is not seen
  np.testing.assert_array_equal(gemma.prefix_lm_mask(input_mask, prefix)[0], want)


def test_greedy_with_the_cache_equals_decoding_without_it(model_and_params):
  model, params = model_and_params
  n = 6
  config = decoding.DecodeConfig(max_new_tokens=n, eos_id=-1)
  logits, cache, key_mask, slot, positions = start(model, params, PROMPTS, n)
  got = jax.jit(lambda *a: decoding.decode(gemma.step_fn(model, params), *a, config=config),
                static_argnums=3)(logits, cache, key_mask, slot, positions)
  for prompt, tokens in zip(PROMPTS, np.asarray(got)):
    want = []
    for _ in range(n):
      want.append(int(jnp.argmax(logits_without_cache(model, params, prompt, want))))
    assert tokens.tolist() == want


def test_each_example_stops_at_eos(model_and_params):
  model, params = model_and_params
  n = 5
  free = decoding.decode(gemma.step_fn(model, params), *start(model, params, PROMPTS, n),
                         config=decoding.DecodeConfig(max_new_tokens=n, eos_id=-1))
  eos = int(free[0, 1])  # example 0 says this token second
  stopped = decoding.decode(gemma.step_fn(model, params), *start(model, params, PROMPTS, n),
                            config=decoding.DecodeConfig(max_new_tokens=n, eos_id=eos, pad_id=0))
  for free_row, row in zip(np.asarray(free), np.asarray(stopped)):
    hits = np.flatnonzero(free_row == eos)
    end = hits[0] + 1 if len(hits) else n
    assert row[:end].tolist() == free_row[:end].tolist()
    assert (row[end:] == 0).all()
  assert (np.asarray(stopped)[0, 2:] == 0).all()


def test_beam_search_with_room_for_every_sequence_is_exhaustive_search(model_and_params):
  model, params = model_and_params
  n, vocab = 2, CONFIG.vocab_size
  k = vocab ** n  # every two-token continuation fits in the beam
  config = decoding.DecodeConfig(max_new_tokens=n, eos_id=-1, beam_size=k)
  tokens, scores = decoding.beam_search(gemma.step_fn(model, params),
                                        *start(model, params, PROMPTS[:2], n, repeat=k),
                                        config=config)
  for prompt, got, score in zip(PROMPTS, np.asarray(tokens), np.asarray(scores)):
    first = jax.nn.log_softmax(logits_without_cache(model, params, prompt, []))
    pairs = {}
    for a in range(vocab):
      second = jax.nn.log_softmax(logits_without_cache(model, params, prompt, [a]))
      pairs.update({(a, b): float(first[a] + second[b]) for b in range(vocab)})
    best = max(pairs, key=pairs.get)
    assert got.tolist() == list(best)
    np.testing.assert_allclose(score, pairs[best], rtol=1e-4, atol=1e-5)


def test_beam_of_one_is_greedy(model_and_params):
  model, params = model_and_params
  n = 4
  greedy = decoding.decode(gemma.step_fn(model, params), *start(model, params, PROMPTS, n),
                           config=decoding.DecodeConfig(max_new_tokens=n, eos_id=-1))
  beam, _ = decoding.beam_search(gemma.step_fn(model, params), *start(model, params, PROMPTS, n),
                                 config=decoding.DecodeConfig(max_new_tokens=n, eos_id=-1,
                                                              beam_size=1))
  np.testing.assert_array_equal(beam, greedy)


def test_sampling_filters():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  kept = lambda f: (f > decoding.NEG_INF / 2)[0].tolist()
  assert kept(decoding.filter_logits(logits, top_k=2, top_p=1.0)) == [True, True, False, False]
  assert kept(decoding.filter_logits(logits, top_k=0, top_p=0.5)) == [True, False, False, False]
  assert kept(decoding.filter_logits(logits, top_k=0, top_p=0.8)) == [True, True, False, False]
  assert kept(decoding.filter_logits(logits, top_k=0, top_p=0.81)) == [True, True, True, False]
  assert kept(decoding.filter_logits(logits, top_k=3, top_p=0.5)) == [True, False, False, False]


def test_samples_stay_in_the_top_k(model_and_params):
  model, params = model_and_params
  n = 4
  config = decoding.DecodeConfig(max_new_tokens=n, eos_id=-1, temperature=1.0, top_k=1)
  sampled = decoding.decode(gemma.step_fn(model, params), *start(model, params, PROMPTS, n),
                            config=config, rng=jax.random.key(3))
  greedy = decoding.decode(gemma.step_fn(model, params), *start(model, params, PROMPTS, n),
                           config=decoding.DecodeConfig(max_new_tokens=n, eos_id=-1))
  np.testing.assert_array_equal(sampled, greedy)  # top-1 sampling is greedy
  hot = decoding.DecodeConfig(max_new_tokens=n, eos_id=-1, temperature=5.0)
  draws = {tuple(np.asarray(decoding.decode(gemma.step_fn(model, params),
                                            *start(model, params, PROMPTS, n), config=hot,
                                            rng=jax.random.key(s)))[0]) for s in range(4)}
  assert len(draws) > 1  # a hot temperature gives different samples for different keys


def test_sharded_batch_decodes_the_same(model_and_params):
  model, params = model_and_params
  n = 3
  prompts = PROMPTS * 8  # 24 examples: 3 per device
  config = decoding.DecodeConfig(max_new_tokens=n, eos_id=-1)
  logits, cache, key_mask, slot, positions = start(model, params, prompts, n)
  run = jax.jit(lambda *a: decoding.decode(gemma.step_fn(model, params), *a, config=config),
                static_argnums=3)
  want = run(logits, cache, key_mask, slot, positions)
  rows = sharding.batch_sharding(sharding.make_mesh({"data": 8}))
  sharded = jax.device_put((logits, cache, key_mask), rows)
  got = run(*sharded, slot, jax.device_put(positions, rows))
  np.testing.assert_array_equal(got, want)
  assert len(got.sharding.device_set) == 8


def test_bad_settings_are_errors():
  with pytest.raises(ValueError, match="top_p"):
    decoding.DecodeConfig(max_new_tokens=2, eos_id=1, top_p=0.0)
  with pytest.raises(ValueError, match="max_new_tokens"):
    decoding.DecodeConfig(max_new_tokens=0, eos_id=1)
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    gemma.GemmaConfig(vocab_size=8, width=8, depth=1, num_heads=3, num_kv_heads=2, head_dim=4,
                      mlp_dim=8)
