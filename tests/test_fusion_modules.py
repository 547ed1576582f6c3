"""Each fusion module does what it says: checked on small feature sets, module by module."""
import flax
import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal.models import missing_modalities
from multimodal.models.features import Features
from multimodal.models.fusion import FUSION

B, W = 4, 16
SIZES = dict(width=W, depth=2, num_heads=2, mlp_dim=32)
HEAD = dict(type="classifier", hidden_dim=16)
CLASSES = 6


def features(seed: int = 0, image_scale: float = 1.0, text_scale: float = 1.0
             ) -> dict[str, Features]:
  rng = np.random.default_rng(seed)
  text_mask = np.arange(5)[None] < np.array([[2], [5], [3], [1]])
  return {"image": Features(jnp.asarray(rng.normal(size=(B, 4, 12)) * image_scale, jnp.float32),
                            jnp.ones((B, 4), bool)),
          "text": Features(jnp.asarray(rng.normal(size=(B, 5, 10)) * text_scale, jnp.float32),
                           jnp.asarray(text_mask))}


def perturbed(feats: dict[str, Features], modality: str, seed: int = 9) -> dict[str, Features]:
  f = feats[modality]
  noise = np.random.default_rng(seed).normal(size=f.tokens.shape)
  return {**feats, modality: f.replace(tokens=f.tokens + jnp.asarray(noise, jnp.float32))}


def build(name: str, **settings):
  if FUSION.get(name).decision_level:
    settings = dict(head=HEAD, num_classes=CLASSES, **settings)
  module = FUSION.build({"type": name, **SIZES, **settings})
  params = module.init(jax.random.key(0), features(), train=False)["params"]
  return module, flax.core.unfreeze(flax.linen.meta.unbox(params))


def run(module, params, feats, **kwargs):
  return module.apply({"params": params}, feats, train=False, **kwargs)


def close(a, b) -> bool:
  return np.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_early_pooled_vector_sees_every_modality():
  module, params = build("early")
  base = run(module, params, features())
  assert base.tokens.shape == (B, 1 + 4 + 5, W)
  for modality in ("image", "text"):
    assert not close(run(module, params, perturbed(features(), modality)).pooled, base.pooled)
  # Modality embeddings: the same tokens tagged as the other modality give other outputs.
  swapped = {"image": features()["image"], "text": features()["image"]}
  p2 = flax.core.unfreeze(params)
  p2["text_proj"] = p2["image_proj"]
  assert not close(run(module, p2, swapped).pooled[:, :], run(module, {
      **p2, "text_embedding": p2["image_embedding"]}, swapped).pooled)


@pytest.mark.parametrize("combine", ["mean", "learned", "product"])
def test_late_combines_per_modality_logits(combine):
  module, params = build("late", combine=combine)
  out = run(module, params, features())
  image, text = out.modality_logits["image"], out.modality_logits["text"]
  assert out.logits.shape == (B, CLASSES)
  if combine in ("mean", "learned"):  # learned weights start equal
    np.testing.assert_allclose(out.logits, (image + text) / 2, rtol=1e-5, atol=1e-6)
  else:  # product of experts: softmax of the result is the normalised product
    product = jax.nn.softmax(image) * jax.nn.softmax(text)
    np.testing.assert_allclose(jax.nn.softmax(out.logits),
                               product / product.sum(-1, keepdims=True), rtol=1e-5)
  # Each head sees only its modality.
  changed = run(module, params, perturbed(features(), "text"))
  np.testing.assert_allclose(changed.modality_logits["image"], image, rtol=1e-6)
  # A missing modality drops out of the combination.
  without_text = missing_modalities.remove(features(), {"text": jnp.ones(B, bool)})
  alone = run(module, params, without_text)
  expected = jax.nn.log_softmax(image) if combine == "product" else image
  np.testing.assert_allclose(alone.logits, expected, rtol=1e-5, atol=1e-6)


def test_late_learned_weights_are_trained_and_used():
  module, params = build("late", combine="learned")
  params = flax.core.unfreeze(params)
  params["combine"]["weights"] = jnp.array([3.0, -3.0])  # image, text
  out = run(module, params, features())
  w = jax.nn.softmax(jnp.array([3.0, -3.0]))
  np.testing.assert_allclose(out.logits, w[0] * out.modality_logits["image"] +
                             w[1] * out.modality_logits["text"], rtol=1e-5, atol=1e-6)


def test_hybrid_one_group_fuses_early_after_separate_layers():
  module, params = build("hybrid", fusion_layer=1)
  assert "streams" in params and "early_image+text" in params
  assert set(k for k in params["streams"] if "block" in k) == {"image_block0", "text_block0"}
  out = run(module, params, features())
  assert out.logits is None  # the model's head predicts
  assert not close(run(module, params, perturbed(features(), "text")).pooled, out.pooled)


def test_hybrid_groups_are_combined_late():
  module, params = build("hybrid", fusion_layer=1, groups=(("image",), ("text",)))
  out = run(module, params, features())
  np.testing.assert_allclose(out.logits, (out.modality_logits["image"] +
                                          out.modality_logits["text"]) / 2, rtol=1e-5, atol=1e-6)
  changed = run(module, params, perturbed(features(), "text"))
  np.testing.assert_allclose(changed.modality_logits["image"], out.modality_logits["image"],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="exactly once"):
    build("hybrid", groups=(("image",),))


def test_weighted_sum_weights_sum_to_one_and_skip_missing():
  module, params = build("weighted_sum")
  out = run(module, params, features())
  np.testing.assert_allclose(out.modality_weights.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(out.pooled, out.tokens.mean(axis=1), rtol=1e-5, atol=1e-6)
  gone = run(module, params, missing_modalities.remove(features(), {"image": jnp.ones(B, bool)}))
  np.testing.assert_allclose(gone.modality_weights, np.tile([[0.0, 1.0]], (B, 1)))
  np.testing.assert_allclose(gone.pooled, gone.tokens[:, 1], rtol=1e-5, atol=1e-6)


def test_concat_mlp_is_an_mlp_over_the_concatenated_vectors():
  module, params = build("concat_mlp")
  out = run(module, params, features())
  x = out.tokens.reshape(B, -1)  # [image vector, text vector]
  h = jax.nn.gelu(x @ params["fc1"]["kernel"] + params["fc1"]["bias"])
  np.testing.assert_allclose(out.pooled, h @ params["fc2"]["kernel"] + params["fc2"]["bias"],
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("granularity", ["feature", "modality"])
def test_gated_weights_are_per_example_inspectable_and_sum_to_one(granularity):
  module, params = build("gated", granularity=granularity)
  out = run(module, params, features())
  np.testing.assert_allclose(out.modality_weights, 0.5)  # The score layer starts at zero.
  np.testing.assert_allclose(out.pooled, out.tokens.mean(axis=1), rtol=1e-5, atol=1e-6)
  rng = np.random.default_rng(3)
  params["gate_scores"] = jax.tree.map(
      lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params["gate_scores"])
  out, state = run(module, params, features(), mutable=["intermediates"])
  weights = out.modality_weights
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
  assert not np.allclose(weights[0], weights[1]), "gates should differ between examples"
  np.testing.assert_allclose(state["intermediates"]["modality_weights"][0], weights)
  h = jax.nn.gelu(out.tokens.reshape(B, -1) @ params["gate_hidden"]["kernel"]
                  + params["gate_hidden"]["bias"])
  scores = (h @ params["gate_scores"]["kernel"] + params["gate_scores"]["bias"]).reshape(
      B, 2, -1)
  gates = jax.nn.softmax(scores, axis=1)  # [B, M, W] per feature, or [B, M, 1]
  assert gates.shape[-1] == (W if granularity == "feature" else 1)
  np.testing.assert_allclose(out.pooled, jnp.sum(gates * out.tokens, axis=1), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(weights, gates.mean(-1), rtol=1e-5, atol=1e-6)
  gone = run(module, params, missing_modalities.remove(features(), {"text": jnp.ones(B, bool)}))
  np.testing.assert_allclose(gone.modality_weights, np.tile([[1.0, 0.0]], (B, 1)))
  np.testing.assert_allclose(gone.pooled, gone.tokens[:, 0], rtol=1e-5, atol=1e-6)


def test_gated_refuses_an_unknown_granularity():
  with pytest.raises(ValueError, match="granularity"):
    build("gated", granularity="token")


def test_cross_attention_queries_attend_to_real_context_tokens_only():
  module, params = build("cross_attention")
  feats = features()
  feats["image"] = feats["image"].replace(mask=jnp.asarray(np.arange(4)[None] < 3).repeat(B, 0))
  out, state = run(module, params, feats, mutable=["intermediates"])
  assert out.tokens.shape == (B, 5, W)  # the query's (text's) length
  weights = state["intermediates"]["block0"]["cross_attention"]["attention_weights"][0]
  assert weights.shape == (B, 2, 5, 4)
  np.testing.assert_allclose(weights[..., 3], 0.0)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  assert not close(run(module, params, perturbed(feats, "image")).pooled, out.pooled)


def test_co_attention_streams_exchange_in_every_layer():
  module, params = build("co_attention")
  assert set(params["block0"]) == {"image", "text"}
  out = run(module, params, features())
  n_image = 4
  for changed, other in (("text", slice(0, n_image)), ("image", slice(n_image, None))):
    new = run(module, params, perturbed(features(), changed))
    assert not close(new.tokens[:, other], out.tokens[:, other]), (
        f"the other stream did not see the {changed} change")
  with pytest.raises(ValueError, match="at least 2"):
    run(module, params, {"image": features()["image"]})


def test_bottleneck_at_full_depth_equals_late_fusion_streams():
  depth = SIZES["depth"]
  bottleneck, b_params = build("bottleneck", fusion_layer=depth, n_bottlenecks=2)
  late, l_params = build("late")
  l_params = flax.core.unfreeze(l_params)
  l_params["streams"], l_params["ln_final"] = b_params["streams"], b_params["ln_final"]
  n = 4 + 5
  np.testing.assert_allclose(run(bottleneck, b_params, features()).tokens[:, :n],
                             run(late, l_params, features()).tokens, rtol=1e-5, atol=1e-6)


def test_bottleneck_exchanges_only_through_its_tokens():
  text_changed = perturbed(features(), "text")
  # One bottleneck layer: the shared tokens take in the text, but the image tokens attended
  # to the shared tokens before that, so they cannot have seen it yet.
  module, params = build("bottleneck", fusion_layer=1, n_bottlenecks=2)
  out, new = run(module, params, features()), run(module, params, text_changed)
  assert out.tokens.shape == (B, 4 + 5 + 2, W)
  np.testing.assert_allclose(new.tokens[:, :4], out.tokens[:, :4], rtol=1e-6)
  assert not close(new.tokens[:, -2:], out.tokens[:, -2:])
  # Two bottleneck layers: the text reaches the image tokens through the shared tokens.
  module, params = build("bottleneck", fusion_layer=0, n_bottlenecks=2)
  assert not close(run(module, params, text_changed).tokens[:, :4],
                   run(module, params, features()).tokens[:, :4])


def test_multiway_routes_tokens_to_their_modality_experts():
  module, params = build("multiway", depth=1)
  block = params["block0"]
  assert {"mlp_image", "mlp_text", "ln_mlp_image", "ln_mlp_text", "ln_self_image",
          "ln_self_text"} <= set(block)
  assert {"query_image", "query_text", "out_image", "out_text"} <= set(block["self_attention"])
  out = run(module, params, features())
  # Changing the text expert changes text tokens only (the FFN is the layer's last step).
  p2 = flax.core.unfreeze(params)
  p2["block0"]["mlp_text"] = jax.tree.map(lambda x: x + 0.5, p2["block0"]["mlp_text"])
  new = run(module, p2, features())
  np.testing.assert_allclose(new.tokens[:, :4], out.tokens[:, :4], rtol=1e-6)
  assert not close(new.tokens[:, 4:], out.tokens[:, 4:])
  # Attention runs over the joint sequence: image tokens see the text.
  assert not close(run(module, params, perturbed(features(), "text")).tokens[:, :4],
                   out.tokens[:, :4])


def test_multiway_shared_attention_and_vision_language_experts():
  module, params = build("multiway", shared_attention=True, vl_layers=1)
  assert set(params["block0"]["self_attention"]) == {"query", "key", "value", "out"}
  assert "mlp_vl" in params["vl_block0"] and "mlp_image" not in params["vl_block0"]
  assert "mlp_image" in params["block0"]
  assert np.all(np.isfinite(run(module, params, features()).pooled))


@pytest.mark.parametrize("name", ["co_attention", "bottleneck", "multiway", "late"])
def test_scan_and_remat_give_the_same_outputs(name):
  from multimodal.models.transformer import scanned_layout
  module, params = build(name)
  scanned, _ = build(name, scan_layers=True, remat=True)
  np.testing.assert_allclose(run(scanned, scanned_layout(flax.core.unfreeze(params)),
                                 features()).pooled,
                             run(module, params, features()).pooled, rtol=1e-5, atol=1e-6)


def test_modality_dropout_removes_one_modality_at_the_rate():
  dropped = missing_modalities.sample_dropped(jax.random.key(0), ["image", "text"], 10_000, 0.3)
  image, text = np.asarray(dropped["image"]), np.asarray(dropped["text"])
  assert not np.any(image & text)
  assert (image | text).mean() == pytest.approx(0.3, abs=0.02)
  assert image.mean() == pytest.approx(0.15, abs=0.02)
  none = missing_modalities.sample_dropped(jax.random.key(0), ["image", "text"], 100, 0.0)
  assert not np.any(none["image"] | none["text"])
  with pytest.raises(ValueError, match="modality_dropout"):
    missing_modalities.sample_dropped(jax.random.key(0), ["image"], 4, 1.5)
