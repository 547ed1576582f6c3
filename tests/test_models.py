"""Encoders, fusion and heads: shapes, padding invariance, and config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal import models
from multimodal.models import posemb
from multimodal.models.attention import MultiHeadAttention
from multimodal.models.features import Features
from multimodal.models.fusion import FUSION

SMALL = dict(variant=None, width=32, depth=1, mlp_dim=64, num_heads=4)


def init_apply(module, *args, **kwargs):
  variables = module.init(jax.random.key(0), *args, **kwargs)
  return variables, module.apply(variables, *args, **kwargs)


@pytest.mark.parametrize("stem,channels", [("patch", ()), ("conv", (8,)), ("conv", (8, 16))])
@pytest.mark.parametrize("pool_type,posemb_kind", [("cls", "learn"), ("gap", "sincos2d"),
                                                   ("map", "learn"), ("none", "learn")])
def test_vit_shapes(stem, channels, pool_type, posemb_kind):
  vit = models.ENCODERS.build(dict(type="vit", patch_size=8, stem=stem, stem_channels=channels,
                                   pool_type=pool_type, posemb=posemb_kind, **SMALL))
  _, out = init_apply(vit, jnp.zeros((2, 32, 32, 3)), train=False)
  tokens = 16 + (pool_type == "cls")
  assert out.tokens.shape == (2, tokens, 32)
  assert out.mask.shape == (2, tokens) and bool(out.mask.all())
  assert (out.pooled is None) == (pool_type == "none")
  if out.pooled is not None:
    assert out.pooled.shape == (2, 32)


def test_conv_stem_rejects_patch_size_not_multiple_of_stride():
  vit = models.ENCODERS.build(dict(type="vit", patch_size=6, stem="conv", stem_channels=(8, 8),
                                   **SMALL))
  with pytest.raises(ValueError, match="not a multiple"):
    vit.init(jax.random.key(0), jnp.zeros((1, 24, 24, 3)), train=False)


def test_sincos_2d_matches_formula():
  emb = posemb.sincos_2d(2, 3, 8)
  assert emb.shape == (6, 8)
  # Token (row 1, column 2): x = 2, y = 1; omega = [1, 1e-4] for dim 8.
  omega = np.array([1.0, 1e-4])
  expected = np.concatenate([np.sin(2 * omega), np.cos(2 * omega), np.sin(omega), np.cos(omega)])
  np.testing.assert_allclose(emb[5], expected, rtol=1e-6)


@pytest.mark.parametrize("pool_type", ["gap", "map", "cls"])
def test_text_encoder_padding_changes_nothing(pool_type):
  enc = models.ENCODERS.build(dict(type="text_encoder", vocab_size=50, pool_type=pool_type,
                                   **SMALL))
  tokens = jnp.array([[2, 7, 9, 0, 0, 0]])
  mask = tokens > 0
  variables, out = init_apply(enc, tokens, mask, train=False)
  other = enc.apply(variables, tokens.at[0, 3:].set(jnp.array([11, 12, 13])), mask, train=False)
  np.testing.assert_allclose(out.pooled, other.pooled, atol=1e-6)
  np.testing.assert_allclose(out.tokens[:, :3], other.tokens[:, :3], atol=1e-6)


def test_cross_attention_fusion_ignores_padded_context_and_survives_missing_modality():
  fusion = FUSION.build(dict(type="cross_attention", width=32, depth=2, num_heads=4,
                             mlp_dim=64))
  rng = np.random.default_rng(0)
  text = Features(jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32),
                  jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool))
  image_mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
  image = Features(jnp.asarray(rng.normal(size=(2, 4, 24)), jnp.float32), image_mask)
  variables, out = init_apply(fusion, {"text": text, "image": image}, train=False)
  noisy_image = Features(image.tokens.at[0, 3].set(100.0), image_mask)
  noisy_text = Features(text.tokens.at[0, 3:].set(-50.0), text.mask)
  other = fusion.apply(variables, {"text": noisy_text, "image": noisy_image}, train=False)
  np.testing.assert_allclose(out.pooled, other.pooled, atol=1e-5)
  missing = Features(image.tokens, jnp.zeros_like(image_mask))
  out_missing = fusion.apply(variables, {"text": text, "image": missing}, train=False)
  assert np.isfinite(np.asarray(out_missing.pooled)).all()


def test_fully_masked_attention_outputs_zero_update():
  attn = MultiHeadAttention(num_heads=2)
  x = jnp.ones((1, 3, 8))
  variables, out = init_apply(attn, x, x, jnp.zeros((1, 1, 3), bool))
  bias = variables["params"]["out"]["bias"].value
  np.testing.assert_allclose(out, jnp.broadcast_to(bias, out.shape), atol=1e-6)


def test_vqa_model_outputs_logits_over_answers():
  model = models.MODELS.build(
      dict(type="fusion_vqa", image=dict(type="vit", patch_size=8, **SMALL),
           text=dict(type="text_encoder", **SMALL),
           fusion=dict(type="cross_attention", width=32, depth=1, num_heads=4, mlp_dim=64),
           head=dict(type="classifier", hidden_dim=32)),
      num_answers=7, vocab_size=40)
  batch = dict(image=jnp.zeros((3, 16, 16, 3)), question_tokens=jnp.ones((3, 6), jnp.int32),
               question_mask=jnp.ones((3, 6), bool))
  _, logits = init_apply(model, batch, train=False)
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32


def test_bfloat16_compute_keeps_float32_params():
  model = models.MODELS.build(
      dict(type="text_only_vqa", text=dict(type="text_encoder", **SMALL),
           head=dict(type="classifier", hidden_dim=32), dtype="bfloat16"),
      num_answers=5, vocab_size=40)
  batch = dict(question_tokens=jnp.ones((2, 6), jnp.int32), question_mask=jnp.ones((2, 6), bool))
  variables, logits = init_apply(model, batch, train=False)
  dtypes = {x.dtype for x in jax.tree.leaves(variables)}
  assert dtypes == {jnp.dtype("float32")}
  assert np.isfinite(np.asarray(logits)).all()


def test_unknown_names_and_settings_name_the_nearest_valid_one():
  with pytest.raises(KeyError, match="Did you mean 'cross_attention'"):
    FUSION.build(dict(type="cross_atention"))
  with pytest.raises(KeyError, match="Did you mean 'depth'"):
    FUSION.build(dict(type="cross_attention", dpeth=2))
  with pytest.raises(KeyError, match="needs a 'type'"):
    FUSION.build(dict(depth=2))
