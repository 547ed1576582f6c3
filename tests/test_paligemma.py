"""The PaLI-style generator: prefix-LM masking, the answer-only loss, and generation."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal.models import decoding, paligemma

VOCAB = 40
IMAGE = {"type": "vit", "variant": None, "width": 32, "depth": 1, "mlp_dim": 64, "num_heads": 2,
         "patch_size": 8, "pool_type": "none"}
DECODER = {"width": 32, "depth": 2, "num_heads": 4, "num_kv_heads": 1, "head_dim": 8,
           "mlp_dim": 64}


def batch(tokens, prefix_lengths, lengths, seed=0):
  tokens = jnp.asarray(tokens, jnp.int32)
  t = tokens.shape[1]
  return {"image": jax.random.uniform(jax.random.key(seed), (len(tokens), 16, 16, 3)),
          "text_tokens": tokens,
          "text_mask": jnp.arange(t)[None] < jnp.asarray(lengths)[:, None],
          "prefix_mask": jnp.arange(t)[None] < jnp.asarray(prefix_lengths)[:, None]}


@pytest.fixture(scope="module")
def model_and_params():
  model = paligemma.PaliGemma(IMAGE, DECODER, VOCAB)
  example = batch([[1, 2, 3, 4]], [2], [4])
  params = flax.linen.unbox(model.init(jax.random.key(0), example, train=False)["params"])
  return model, params


def test_the_answer_does_not_change_the_prefix_and_is_causal(model_and_params):
  model, params = model_and_params
  a = batch([[5, 6, 7, 8, 9, 10]], [3], [6])
  b = batch([[5, 6, 7, 8, 30, 31]], [3], [6])  # the last two answer tokens differ
  la = model.apply({"params": params}, a, train=False)
  lb = model.apply({"params": params}, b, train=False)
  np.testing.assert_allclose(la[:, :4], lb[:, :4], atol=1e-5)  # prompt and earlier answer
  assert not np.allclose(la[:, 4:], lb[:, 4:], atol=1e-3)
  # The prompt is bidirectional: changing its last token changes its first position's logits.
  c = batch([[5, 6, 33, 8, 9, 10]], [3], [6])
  lc = model.apply({"params": params}, c, train=False)
  assert not np.allclose(la[:, 0], lc[:, 0], atol=1e-3)


def test_padding_changes_nothing(model_and_params):
  model, params = model_and_params
  short = batch([[5, 6, 7, 8]], [2], [4])
  long = batch([[5, 6, 7, 8, 0, 0, 0]], [2], [4])
  long_other = batch([[5, 6, 7, 8, 17, 18, 19]], [2], [4])
  want = model.apply({"params": params}, short, train=False)
  for padded in (long, long_other):
    got = model.apply({"params": params}, padded, train=False)
    np.testing.assert_allclose(got[:, :4], want, atol=1e-5)


def test_the_loss_is_on_answer_tokens_only(model_and_params):
  model, params = model_and_params
  b = batch([[5, 6, 7, 8, 9, 0]], [3], [5])
  logits = model.apply({"params": params}, b, train=False)
  loss, per_example = paligemma.answer_loss(logits, b)
  logp = jax.nn.log_softmax(logits[0])
  want = -(logp[2, 8] + logp[3, 9]) / 2  # positions 2 and 3 predict the answer tokens 8, 9
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(per_example[0], 2 * want, rtol=1e-5)
  # Changing the prompt's targets (token 6 at position 1) does not enter the loss directly.
  grads = jax.grad(lambda l: paligemma.answer_loss(l, b)[0])(logits)
  assert np.abs(np.asarray(grads[0, :2])).max() == 0 and np.abs(np.asarray(grads[0, 4:])).max() == 0


def sequence_logprob(model, params, image, prompt, answer):
  b = batch([list(prompt) + list(answer)], [len(prompt)], [len(prompt) + len(answer)])
  b["image"] = image
  logp = jax.nn.log_softmax(model.apply({"params": params}, b, train=False)[0])
  return float(sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(answer)))


def test_generation_equals_argmax_without_a_cache_and_beams_score_higher(model_and_params):
  model, params = model_and_params
  prompts = batch([[5, 6, 7], [9, 4, 0]], [3, 2], [3, 2])
  n = 4
  greedy = paligemma.generate(model, params, prompts,
                              decoding.DecodeConfig(max_new_tokens=n, eos_id=-1))
  beams = paligemma.generate(model, params, prompts,
                             decoding.DecodeConfig(max_new_tokens=n, eos_id=-1, beam_size=4))
  for i, length in enumerate([3, 2]):
    prompt = [int(t) for t in prompts["text_tokens"][i, :length]]
    image = prompts["image"][i:i + 1]
    sequence = list(prompt)
    for _ in range(n):
      b = batch([sequence], [length], [len(sequence)])
      b["image"] = image
      sequence.append(int(jnp.argmax(model.apply({"params": params}, b, train=False)[0, -1])))
    assert np.asarray(greedy[i]).tolist() == sequence[length:]
    assert (sequence_logprob(model, params, image, prompt, np.asarray(beams[i]).tolist()) >=
            sequence_logprob(model, params, image, prompt, sequence[length:]) - 1e-4)
