"""The PaLI encoder-decoder: the split by prefix_mask, padding, causality, the answer-only loss,
decoding with the cache against the full model, fsdp sharding, and a tiny training run."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from multimodal.models import MODELS, decoding, pali, paligemma
from multimodal.tasks import TASKS
from multimodal.training import sharding

VOCAB = 40
# A ViT of depth 0 (its patch stem and positions alone) keeps every compilation short.
IMAGE = {"type": "vit", "variant": None, "width": 32, "depth": 0, "mlp_dim": 64, "num_heads": 2,
         "patch_size": 8, "pool_type": "none"}
DECODER = {"width": 32, "depth": 2, "num_heads": 4, "num_kv_heads": 2, "head_dim": 8,
           "mlp_dim": 64}
SPEC = {"type": "pali", "image": IMAGE, "decoder": DECODER, "encoder_depth": 1}
T = 8  # Every single-sequence batch is padded to T tokens: one compilation serves them all.
GREEDY = decoding.DecodeConfig(max_new_tokens=4, eos_id=-1)


def batch(tokens, prefix_length, length=None, seed=0, text_mask=None):
  """One example padded with 0s to T tokens, of which `length` are real (all given, by default)."""
  length = len(tokens) if length is None else length
  tokens = list(tokens) + [0] * (T - len(tokens))
  mask = [[i < length for i in range(T)]] if text_mask is None else [text_mask]
  return {"image": jax.random.uniform(jax.random.key(seed), (1, 16, 16, 3)),
          "text_tokens": jnp.asarray([tokens], jnp.int32),
          "text_mask": jnp.asarray(mask, bool),
          "prefix_mask": jnp.arange(T)[None] < prefix_length}


# Two prompts of different lengths, right-padded, as an evaluation batch holds them.
PROMPTS = {"image": jax.random.uniform(jax.random.key(5), (2, 16, 16, 3)),
           "text_tokens": jnp.asarray([[1, 5, 6, 0], [1, 9, 4, 7]], jnp.int32),
           "text_mask": jnp.asarray([[1, 1, 1, 0], [1, 1, 1, 1]], bool),
           "prefix_mask": jnp.asarray([[1, 1, 1, 0], [1, 1, 1, 1]], bool)}
PROMPT_LENGTHS = (3, 4)


@pytest.fixture(scope="module")
def model_and_init():
  model = MODELS.build(SPEC, vocab_size=VOCAB)
  init = jax.jit(lambda rng: model.init(rng, batch([1, 2, 3, 4], 2), train=False)["params"])
  return model, flax.linen.unbox(init(jax.random.key(0)))


@pytest.fixture(scope="module")
def model_and_params(model_and_init):
  model, params = model_and_init
  # Embeddings of std 0.05 (the init's 0.02 x 2.5), as in test_decoding: the next token is
  # neither just the input token (the output embedding is tied) nor a near tie.
  decoder = {**params["text_decoder"], "embedding": params["text_decoder"]["embedding"] * 2.5}
  return model, {**params, "text_decoder": decoder}


@pytest.fixture(scope="module")
def boxed_params(model_and_init):
  """The params' shapes, boxed with their logical axis names."""
  model, _ = model_and_init
  return jax.eval_shape(lambda: model.init(jax.random.key(0), PROMPTS, train=False))["params"]


@pytest.fixture(scope="module")
def forward(model_and_init):
  model, _ = model_and_init
  return jax.jit(lambda params, b: model.apply({"params": params}, b, train=False))


@pytest.fixture(scope="module")
def greedy(model_and_params):
  """The greedy answers to PROMPTS, int32[2, 4]."""
  model, params = model_and_params
  return jax.jit(lambda p, b: pali.generate(model, p, b, GREEDY))(params, PROMPTS)


def test_shapes_and_logical_axes(model_and_params, boxed_params, forward, greedy):
  model, params = model_and_params
  logits = forward(params, batch([1, 5, 6, 7, 8, 2], 3))
  assert logits.shape == (1, T, VOCAB) and logits.dtype == jnp.float32
  assert greedy.shape == (2, GREEDY.max_new_tokens) and greedy.dtype == jnp.int32
  beams = decoding.DecodeConfig(max_new_tokens=3, eos_id=-1, beam_size=4)
  assert jax.eval_shape(lambda: model.generate(params, PROMPTS, beams)).shape == (2, 3)
  block = boxed_params["text_decoder"]["block0"]
  assert set(block) >= {"attention", "cross_attention", "pre_cross_norm", "mlp"}
  assert block["cross_attention"]["key"]["kernel"].names == ("embed", None, "kv")
  assert "cross_attention" not in boxed_params["encoder"]["block0"]
  assert boxed_params["text_decoder"]["embedding"].names == ("vocab", "embed")


def test_padding_in_the_prompt_or_after_the_answer_changes_nothing(model_and_params, forward):
  _, params = model_and_params
  want = forward(params, batch([1, 5, 6, 7, 8, 2], 3))  # 0s after the answer
  after = forward(params, batch([1, 5, 6, 7, 8, 2, 17, 33], 3, length=6))
  np.testing.assert_allclose(after[:, :6], want[:, :6], atol=1e-5)
  for pad in (0, 17):  # A padding token inside the prompt (text_mask False at position 2).
    inside = forward(params, batch([1, 5, pad, 6, 7, 8, 2], 4,
                                   text_mask=[1, 1, 0, 1, 1, 1, 1, 0]))
    np.testing.assert_allclose(inside[:, 3:7], want[:, 2:6], atol=1e-5)
  # The prompt before its last token carries no prediction: the encoder reads it.
  assert np.abs(np.asarray(want[:, :2])).max() == 0


def test_the_answer_is_causal_and_reads_the_prompt_and_image(model_and_params, forward):
  _, params = model_and_params
  a = forward(params, batch([1, 5, 6, 7, 8, 9, 2], 3))
  b = forward(params, batch([1, 5, 6, 7, 30, 9, 2], 3))  # answer token 4 differs
  np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-5)
  assert not np.allclose(a[:, 4:7], b[:, 4:7], atol=1e-3)
  # The encoder is bidirectional and feeds the decoder: the first prompt token and the image
  # change the answer's logits.
  prompt = forward(params, batch([1, 33, 6, 7, 8, 9, 2], 3))
  image = forward(params, batch([1, 5, 6, 7, 8, 9, 2], 3, seed=1))
  for other in (prompt, image):
    assert not np.allclose(a[:, 2:7], other[:, 2:7], atol=1e-3)


def test_the_loss_is_on_answer_tokens_only(model_and_params, forward):
  _, params = model_and_params
  b = batch([1, 5, 6, 8, 9], 3)
  logits = forward(params, b)
  loss, per_example = paligemma.answer_loss(logits, b)
  logp = jax.nn.log_softmax(logits[0])
  want = -(logp[2, 8] + logp[3, 9]) / 2  # the prompt's last token predicts 8, then 8 predicts 9
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(per_example[0], 2 * want, rtol=1e-5)
  grads = jax.jit(jax.grad(lambda l: paligemma.answer_loss(l, b)[0]))(logits)
  assert np.abs(np.asarray(grads[0, :2])).max() == 0 and np.abs(np.asarray(grads[0, 4:])).max() == 0


def test_greedy_with_the_cache_equals_decoding_without_it(model_and_params, forward, greedy):
  _, params = model_and_params
  for i, length in enumerate(PROMPT_LENGTHS):
    prompt = np.asarray(PROMPTS["text_tokens"][i, :length]).tolist()
    want = []
    for _ in range(GREEDY.max_new_tokens):  # The whole sequence run again for each token.
      b = {**batch(prompt + want, length), "image": PROMPTS["image"][i:i + 1]}
      want.append(int(jnp.argmax(forward(params, b)[0, len(prompt) + len(want) - 1])))
    assert np.asarray(greedy[i]).tolist() == want
  assert len(set(np.asarray(greedy).ravel().tolist())) > 1  # the test has choices to make


def test_beam_search_of_one_beam_is_greedy(model_and_params, greedy):
  model, params = model_and_params
  one = decoding.DecodeConfig(max_new_tokens=GREEDY.max_new_tokens, eos_id=-1, beam_size=1)

  def beam_search(params, prompts):
    step, start = pali.start_decoding(model, params, prompts, one.max_new_tokens)
    return decoding.beam_search(step, *start, one)[0]

  np.testing.assert_array_equal(jax.jit(beam_search)(params, PROMPTS), greedy)


def test_the_task_decodes_through_the_model_s_generate():
  task = TASKS.build({"type": "image_to_text", "tokenizer": "shapes", "max_answer_tokens": 3})

  class Writer:  # Any model with generate(params, batch, config) serves.
    def generate(self, params, batch, config, rng=None):
      return jnp.full((len(batch["text_tokens"]), config.max_new_tokens), params, jnp.int32)

  assert task.generate(Writer(), 7, PROMPTS)["answer_tokens"].tolist() == [[7] * 3] * 2
  for model in (MODELS.build(SPEC, vocab_size=VOCAB),
                MODELS.build({"type": "paligemma", "image": IMAGE, "decoder": DECODER},
                             vocab_size=VOCAB)):
    assert isinstance(model, decoding.TextGenerator)
  with pytest.raises(TypeError, match="generate"):
    task.generate(object(), None, PROMPTS)  # a model that does not write text


def test_fsdp_sharded_loss_and_decoding_equal_one_device(model_and_params, boxed_params, forward,
                                                         greedy):
  model, params = model_and_params
  mesh = sharding.make_mesh({"fsdp": 8})
  sharded_params = jax.device_put(
      params, sharding.logical_shardings(boxed_params, mesh, sharding.DEFAULT_RULES))
  kernel = sharded_params["text_decoder"]["block0"]["cross_attention"]["query"]["kernel"]
  assert kernel.sharding.spec[0] == "fsdp" and len(kernel.sharding.device_set) == 8
  rows = lambda b: jax.device_put(jax.tree.map(lambda x: jnp.concatenate([x] * (8 // len(x))), b),
                                  sharding.batch_sharding(mesh))

  one = batch([1, 5, 6, 7, 8, 2], 3)
  loss = lambda p, b: paligemma.answer_loss(model.apply({"params": p}, b, train=False), b)[0]
  np.testing.assert_allclose(jax.jit(loss)(sharded_params, rows(one)),
                             paligemma.answer_loss(forward(params, one), one)[0], rtol=1e-5)
  got = jax.jit(lambda p, b: pali.generate(model, p, b, GREEDY))(sharded_params, rows(PROMPTS))
  np.testing.assert_array_equal(got, jnp.concatenate([greedy] * 4))


def test_a_tiny_training_run_drives_the_loss_down(model_and_init):
  model, params = model_and_init
  b = jax.tree.map(lambda *x: jnp.concatenate(x), batch([1, 5, 6, 7, 8, 2], 3, seed=2),
                   batch([1, 9, 4, 3, 2], 3, seed=3), batch([1, 7, 11, 12, 2], 3, seed=4),
                   batch([1, 5, 6, 9, 2], 3, seed=5))
  optimizer = optax.adam(3e-3)
  loss_fn = lambda p: paligemma.answer_loss(model.apply({"params": p}, b, train=True), b)[0]

  @jax.jit
  def train(params, opt_state):
    def step(carry, _):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = optimizer.update(grads, opt_state)
      return (optax.apply_updates(params, updates), opt_state), loss
    return jax.lax.scan(step, (params, opt_state), length=100)[1]

  losses = train(params, optimizer.init(params))
  assert losses[0] > 1.0 and losses[-1] < 0.01 * losses[0]
