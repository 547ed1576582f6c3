"""The relation-network fusion module against the formula written out pair by pair, and the
property it is chosen for: blind to the objects' order (a set of objects, not a sequence)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal.models.features import Features
from multimodal.models.fusion import FUSION

B, T, D, H, W = 3, 5, 6, 16, 8


def module(**settings):
  return FUSION.build(dict(type="relation_network", width=W, depth=2, mlp_dim=H, **settings))


def inputs(seed: int = 0, mask=None):
  rng = np.random.default_rng(seed)
  mask = np.asarray(mask if mask is not None else [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1],
                                                   [1, 0, 0, 0, 0]], bool)
  return {"image": Features(jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32),
                            jnp.asarray(mask)),
          "text": Features(jnp.asarray(rng.normal(size=(B, 4, D)), jnp.float32),
                           jnp.ones((B, 4), bool))}


def randomized(variables, seed: int = 1):
  """Every param drawn at random (FiLM's and the same-object flag's start at zero)."""
  leaves, tree = jax.tree.flatten(variables)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(tree, [jnp.asarray(rng.normal(size=x.shape) * 0.5, jnp.float32)
                                   for x in leaves])


def reference(params, feats, film: bool) -> np.ndarray:
  """f(sum over real pairs (i, j) of g([o_i, o_j, q, i == j])) / T, one pair at a time."""
  P = jax.tree.map(np.asarray, params)
  o, mask = np.asarray(feats["image"].tokens), np.asarray(feats["image"].mask)
  text = feats["text"]
  q = np.asarray(text.tokens).mean(axis=1)  # no pooled vector: the mean of its tokens
  kernel = np.concatenate([P["g0_first"]["kernel"], P["g0_second"]["kernel"],
                           P["g0_query"]["kernel"], P["g0_same_object"][None]], axis=0)
  bias = P["g0_first"]["bias"] + P["g0_second"]["bias"] + P["g0_query"]["bias"]
  relu = lambda x: np.maximum(x, 0)

  def film_layer(h, b, layer):
    if not film:
      return h
    gb = q[b] @ P[f"g{layer}_film"]["kernel"] + P[f"g{layer}_film"]["bias"]
    return h * (1 + gb[:H]) + gb[H:]

  pooled = []
  for b in range(B):
    total = np.zeros(H)
    for i in range(T):
      for j in range(T):
        if not (mask[b, i] and mask[b, j]):
          continue
        h = np.concatenate([o[b, i], o[b, j], q[b], [float(i == j)]]) @ kernel + bias
        h = relu(film_layer(h, b, 0))
        h = relu(film_layer(h @ P["g1"]["kernel"] + P["g1"]["bias"], b, 1))
        total += h
    x = relu(total / T @ P["f0"]["kernel"] + P["f0"]["bias"])
    x = x @ P["f1"]["kernel"] + P["f1"]["bias"]
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-6)
    pooled.append(x * P["ln_final"]["scale"] + P["ln_final"]["bias"])
  return np.stack(pooled)


@pytest.mark.parametrize("conditioning", ["concat", "film"])
def test_pooled_vector_equals_the_formula_pair_by_pair(conditioning):
  m, feats = module(conditioning=conditioning), inputs()
  variables = randomized(jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x,
                                      m.init(jax.random.key(0), feats, train=False),
                                      is_leaf=lambda x: hasattr(x, "unbox")))
  out = m.apply(variables, feats, train=False)
  np.testing.assert_allclose(out.pooled, reference(variables["params"], feats,
                                                   conditioning == "film"),
                             rtol=2e-4, atol=2e-4)
  assert out.tokens.shape == (B, T, H) and np.array_equal(out.mask, feats["image"].mask)


def test_order_of_the_objects_changes_nothing():
  m, feats = module(conditioning="film"), inputs()
  variables = randomized(m.init(jax.random.key(0), feats, train=False))
  apply = jax.jit(lambda f: m.apply(variables, f, train=False))
  base, image = apply(feats), feats["image"]
  order = np.random.default_rng(3).permutation(T)
  shuffled = apply({**feats, "image": Features(image.tokens[:, order], image.mask[:, order])})
  np.testing.assert_allclose(shuffled.pooled, base.pooled, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(shuffled.tokens, base.tokens[:, order], rtol=1e-5, atol=1e-5)


def test_bad_settings_are_refused():
  feats = inputs()
  with pytest.raises(ValueError, match="depth >= 1"):
    FUSION.build(dict(type="relation_network", width=W, depth=0, mlp_dim=H)).init(
        jax.random.key(0), feats, train=False)
  with pytest.raises(ValueError, match="conditioning"):
    module(conditioning="sum").init(jax.random.key(0), feats, train=False)
  with pytest.raises(KeyError, match="relation_network fusion needs modalities"):
    module().init(jax.random.key(0), {"image": feats["image"]}, train=False)
