"""Rematerialised and scanned transformer stacks compute what the plain Python loop computes."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from multimodal import models
from multimodal.models.transformer import Encoder, remat_policy, scanned_layout

ENCODER = dict(variant=None, width=32, depth=1, mlp_dim=64, num_heads=4)
FUSION = dict(width=32, depth=2, num_heads=4, mlp_dim=64)
BATCH = dict(image=np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32),
             question_tokens=np.arange(12, dtype=np.int32).reshape(2, 6) + 1,
             question_mask=np.arange(6)[None] < np.array([[6], [3]]))


def vqa_model(fusion: str, dropout: float = 0.0, **stacking):
  """A small VQA model whose every transformer stack (ViT, text, fusion) runs with `stacking`."""
  encoder = dict(ENCODER, dropout=dropout, **stacking)
  return models.MODELS.build(
      dict(type="fusion_vqa", image=dict(type="vit", patch_size=8, **encoder),
           text=dict(type="text_encoder", **encoder),
           fusion=dict(type=fusion, dropout=dropout, **FUSION, **stacking),
           head=dict(type="classifier", hidden_dim=32)),
      num_answers=5, vocab_size=40)


def init_params(model):
  init = jax.jit(functools.partial(model.init, train=False))
  return nn.meta.unbox(init(jax.random.key(0), BATCH)["params"])


def abstract_params(model):
  """The params' shapes and logical axis names, without computing them."""
  init = functools.partial(model.init, train=False)
  return jax.eval_shape(init, jax.random.key(0), BATCH)["params"]


def logits_and_grads(model, params, train=False):
  """The logits and the gradient of their sum with respect to the params."""
  def loss(params):
    logits = model.apply({"params": params}, BATCH, train=train,
                         rngs={"dropout": jax.random.key(1)})
    return logits.sum(), logits
  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return logits, grads


def count_remat_calls(model, params):
  apply = functools.partial(model.apply, train=False)
  eqns = jax.make_jaxpr(apply)({"params": params}, BATCH).eqns
  return sum("remat" in e.primitive.name or "checkpoint" in e.primitive.name for e in eqns)


def assert_trees_close(actual, expected, atol):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol),
               actual, expected)


def test_remat_keeps_params_outputs_and_gradients():
  plain = vqa_model("cross_attention", dropout=0.1)
  remat = vqa_model("cross_attention", dropout=0.1, remat=True,
                    remat_policy="dots_with_no_batch_dims_saveable")
  params = init_params(plain)
  assert jax.tree.structure(params) == jax.tree.structure(nn.meta.unbox(abstract_params(remat)))
  # Every block of the ViT, the text encoder and the fusion stack is rematerialised.
  assert count_remat_calls(plain, params) == 0
  assert count_remat_calls(remat, params) == 2 * ENCODER["depth"] + FUSION["depth"]
  # train=True: dropout draws the same masks with and without remat.
  logits, grads = logits_and_grads(plain, params, train=True)
  remat_logits, remat_grads = logits_and_grads(remat, params, train=True)
  np.testing.assert_allclose(remat_logits, logits, rtol=1e-6, atol=1e-6)
  assert_trees_close(remat_grads, grads, atol=1e-6)


@pytest.mark.parametrize("fusion,remat", [("cross_attention", False), ("early", True)])
def test_scanned_layers_equal_the_loop_with_stacked_params(fusion, remat):
  loop, scanned = vqa_model(fusion), vqa_model(fusion, scan_layers=True, remat=remat)
  loop_params = init_params(loop)
  stacked = scanned_layout(loop_params)
  assert (jax.tree.map(np.shape, stacked)
          == jax.tree.map(np.shape, nn.meta.unbox(abstract_params(scanned))))
  logits, grads = logits_and_grads(loop, loop_params)
  scanned_logits, scanned_grads = logits_and_grads(scanned, stacked)
  np.testing.assert_allclose(scanned_logits, logits, atol=1e-6)
  assert_trees_close(scanned_grads, scanned_layout(grads), atol=1e-5)


def test_scanned_params_carry_the_layers_axis():
  model = vqa_model("cross_attention", scan_layers=True)
  specs = nn.get_partition_spec(abstract_params(model))
  assert specs["fusion"]["blocks"]["mlp"]["fc1"]["kernel"] == P("layers", "embed", "mlp")
  assert (specs["image_encoder"]["encoder"]["blocks"]["self_attention"]["query"]["kernel"]
          == P("layers", "embed", "heads", "kv"))
  assert specs["text_encoder"]["encoder"]["blocks"]["ln_mlp"]["scale"] == P("layers", "embed")
  assert specs["fusion"]["ln_final"]["scale"] == P("embed")


def test_scanned_layers_apply_dropout():
  encoder = Encoder(depth=2, num_heads=4, mlp_dim=64, dropout=0.5, scan_layers=True)
  x, mask = jax.random.normal(jax.random.key(3), (2, 5, 32)), jnp.ones((2, 5), bool)
  variables = encoder.init(jax.random.key(0), x, mask, train=False)
  apply = jax.jit(lambda key: encoder.apply(variables, x, mask, train=True,
                                            rngs={"dropout": key}))
  train, again, other = apply(jax.random.key(1)), apply(jax.random.key(1)), apply(jax.random.key(2))
  np.testing.assert_array_equal(train, again)
  assert not np.allclose(train, other)
  assert not np.allclose(train, encoder.apply(variables, x, mask, train=False))


def test_unknown_remat_policy_names_the_known_ones():
  with pytest.raises(ValueError, match="nothing_saveable"):
    remat_policy("nothing_savable")
