"""PaLI-style generators over an image encoder that keeps only some of its tokens (as the scene
parser's `object_tokens` does): the masked image tokens change nothing, in the forward pass and
in decoding with the cache, for both paligemma and pali."""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal.models import MODELS, decoding
from multimodal.models.features import Features
from multimodal.models.registry import ENCODERS

VOCAB = 40
VIT = {"type": "vit", "variant": None, "width": 32, "depth": 1, "mlp_dim": 64, "num_heads": 2,
       "patch_size": 8, "pool_type": "none"}  # 16 x 16 images: 4 tokens
DECODER = {"width": 32, "depth": 2, "num_heads": 4, "num_kv_heads": 1, "head_dim": 8,
           "mlp_dim": 64}
KEPT = np.array([[True, False, False, True], [False, True, True, True]])  # per example


class _SomeTokens(nn.Module):
  """The ViT's tokens, of which only KEPT's are real: either all of them with a mask
  (`compact=False`) or the kept ones alone, gathered to the front and padded at the end."""
  image: dict
  compact: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, train):
    features = ENCODERS.build(self.image, dtype=self.dtype, name="vit")(images, train=train)
    kept = jnp.asarray(KEPT[:images.shape[0]])
    if not self.compact:
      return Features(tokens=features.tokens, mask=kept)
    order = jnp.argsort(~kept, axis=1, stable=True)  # kept tokens first, in their order
    tokens = jnp.take_along_axis(features.tokens, order[..., None], axis=1)
    return Features(tokens=tokens, mask=jnp.take_along_axis(kept, order, axis=1))


ENCODERS.register("test_masked_tokens")(
    lambda compact=False, **kw: _SomeTokens(compact=compact, **kw))


def batch():
  # Two prompts of different lengths (right-padded), an answer of two tokens after the first.
  return {"image": jax.random.uniform(jax.random.key(3), (2, 16, 16, 3)),
          "text_tokens": jnp.asarray([[1, 5, 6, 9, 11, 0], [1, 9, 4, 7, 0, 0]], jnp.int32),
          "text_mask": jnp.asarray([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], bool),
          "prefix_mask": jnp.asarray([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]], bool)}


@pytest.fixture(scope="module", params=["paligemma", "pali"])
def models(request):
  extra = {"encoder_depth": 1} if request.param == "pali" else {}
  build = lambda compact: MODELS.build(
      {"type": request.param, "image": {"type": "test_masked_tokens", "image": VIT,
                                        "compact": compact},
       "decoder": DECODER, **extra}, vocab_size=VOCAB)
  masked, compact = build(False), build(True)
  params = flax.linen.unbox(masked.init(jax.random.key(0), batch(), train=False)["params"])
  # Larger token embeddings (as test_decoding's) so that the next token is no near tie.
  decoder = {**params["text_decoder"], "embedding": params["text_decoder"]["embedding"] * 2.5}
  return masked, compact, {**params, "text_decoder": decoder}


def test_masked_image_tokens_change_no_logits(models):
  masked, compact, params = models
  want = compact.apply({"params": params}, batch(), train=False)
  got = masked.apply({"params": params}, batch(), train=False)
  real = np.asarray(batch()["text_mask"])
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_decoding_with_masked_image_tokens_equals_decoding_without_them(models, beam_size):
  masked, compact, params = models
  prompts = batch()
  prompts["text_mask"] = prompts["prefix_mask"]  # the prompts alone
  config = decoding.DecodeConfig(max_new_tokens=4, eos_id=-1, beam_size=beam_size)
  want = compact.generate(params, prompts, config)
  got = masked.generate(params, prompts, config)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # And greedy decoding follows the full model's argmax, one token at a time.
  if beam_size == 1:
    # The prompts in 8 slots (room for the 4 new tokens): one compilation for every step.
    sequence = jnp.pad(prompts["text_tokens"][:, :4], ((0, 0), (0, 4)))
    mask = jnp.pad(prompts["prefix_mask"][:, :4], ((0, 0), (0, 4)))
    prefix = mask
    forward = jax.jit(lambda b: masked.apply({"params": params}, b, train=False))
    for step in range(4):
      logits = forward({"image": prompts["image"], "text_tokens": sequence, "text_mask": mask,
                        "prefix_mask": prefix})
      last = jnp.sum(mask, axis=1) - 1
      token = jnp.argmax(logits[jnp.arange(2), last], axis=-1).astype(jnp.int32)
      np.testing.assert_array_equal(np.asarray(got[:, step]), np.asarray(token))
      sequence = sequence.at[jnp.arange(2), last + 1].set(token)
      mask = mask.at[jnp.arange(2), last + 1].set(True)
