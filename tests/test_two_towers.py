"""Two towers: unit-norm embeddings, each tower alone equals the pair, padding changes nothing,
and one SigLIP step on the chunked loss equals one on the plain loss."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal.losses import contrastive
from multimodal.models import MODELS
from multimodal.training import sharding

IMAGE = {"type": "vit", "variant": None, "width": 32, "depth": 1, "mlp_dim": 64, "num_heads": 2,
         "patch_size": 8, "pool_type": "map"}
TEXT = {"type": "text_encoder", "variant": None, "width": 32, "depth": 1, "mlp_dim": 64,
        "num_heads": 2, "pool_type": "gap"}


@pytest.fixture(scope="module")
def model_and_params():
  model = MODELS.build({"type": "two_towers", "image": IMAGE, "text": TEXT, "embed_dim": 16},
                       vocab_size=30)
  params = model.init(jax.random.key(0), batch(8), train=False)["params"]
  return model, flax.linen.unbox(params)


def batch(n, length=6, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  lengths = jnp.arange(n) % (length - 1) + 2
  return {"image": jax.random.uniform(k1, (n, 16, 16, 3)),
          "text_tokens": jax.random.randint(k2, (n, length), 1, 30),
          "text_mask": jnp.arange(length)[None] < lengths[:, None]}


def test_embeddings_are_unit_norm_and_towers_run_alone(model_and_params):
  model, params = model_and_params
  b = batch(8)
  both = model.apply({"params": params}, b, train=False)
  np.testing.assert_allclose(jnp.linalg.norm(both["image"], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(both["text"], axis=-1), 1.0, rtol=1e-5)
  image_only = model.apply({"params": params}, {"image": b["image"]}, train=False)
  text_only = model.apply({"params": params}, {k: b[k] for k in ("text_tokens", "text_mask")},
                          train=False)
  np.testing.assert_allclose(image_only["image"], both["image"], atol=1e-6)
  np.testing.assert_allclose(text_only["text"], both["text"], atol=1e-6)
  assert "text" not in image_only and "image" not in text_only
  assert float(both["temperature"]) == pytest.approx(10.0, rel=1e-5)
  assert float(both["bias"]) == -10.0
  with pytest.raises(ValueError, match="need an `image` or `text_tokens`"):
    model.apply({"params": params}, {}, train=False)


def test_text_padding_changes_nothing(model_and_params):
  model, params = model_and_params
  b = batch(4)
  padded = {**b, "text_tokens": jnp.where(b["text_mask"], b["text_tokens"], 7)}
  np.testing.assert_allclose(model.apply({"params": params}, padded, train=False)["text"],
                             model.apply({"params": params}, b, train=False)["text"], atol=1e-5)


def test_chunked_siglip_gradients_equal_the_plain_ones(model_and_params):
  model, params = model_and_params
  mesh = sharding.make_mesh({"data": 8})
  b = batch(16)

  def loss(params, b, chunked):
    out = model.apply({"params": params}, b, train=False)
    if chunked:
      return contrastive.chunked_sigmoid_loss(out["image"], out["text"], out["temperature"],
                                              out["bias"], mesh=mesh)
    return contrastive.sigmoid_loss(out["image"], out["text"], out["temperature"], out["bias"])

  want = jax.grad(loss)(params, b, False)
  sharded = jax.device_put(b, sharding.batch_sharding(mesh))
  got = jax.jit(jax.grad(loss), static_argnums=2)(params, sharded, True)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=2e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
