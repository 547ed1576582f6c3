"""AdamW with warmup + cosine decay, clipping, a weight-decay mask, layer decay and frozen
params."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from multimodal.config_utils import base_config
from multimodal.training.optimizer import (decay_mask, frozen_labels, layer_ids,
                                           learning_rate_schedule, make_optimizer)


def test_schedule_warms_up_linearly_then_decays_by_cosine():
  config = base_config().optimizer
  config.update(learning_rate=1.0, warmup_steps=10, end_lr_fraction=0.0)
  schedule = learning_rate_schedule(config, total_steps=110)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(0.5, abs=1e-6)  # half way through the cosine
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-6)


def test_weight_decay_applies_to_matrices_only():
  params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}, "ln": {"scale": jnp.ones(3)}}
  assert decay_mask(params) == {"dense": {"kernel": True, "bias": False}, "ln": {"scale": False}}
  config = base_config().optimizer
  config.update(learning_rate=0.1, warmup_steps=0, weight_decay=0.5, grad_clip_norm=0.0)
  optimizer = make_optimizer(config, total_steps=100)
  zero_grads = {"dense": {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)},
                "ln": {"scale": jnp.zeros(3)}}
  updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
  np.testing.assert_allclose(updates["dense"]["kernel"], -0.1 * 0.5 * np.ones((2, 3)), rtol=1e-6)
  np.testing.assert_allclose(updates["dense"]["bias"], 0.0)
  np.testing.assert_allclose(updates["ln"]["scale"], 0.0)


def test_gradients_are_clipped_to_the_global_norm():
  config = base_config().optimizer
  config.update(learning_rate=1.0, warmup_steps=0, weight_decay=0.0, grad_clip_norm=1.0)
  clipped = optax.clip_by_global_norm(1.0)
  grads = {"w": jnp.full((4,), 10.0)}
  out, _ = clipped.update(grads, clipped.init(grads))
  assert float(optax.tree.norm(out)) == pytest.approx(1.0)
  optimizer = make_optimizer(config, total_steps=10)
  params = {"w": jnp.zeros(4)}
  # Adam normalises the step, so clipping shows only in the moments: mu = (1 - b1) * clipped.
  _, state = optimizer.update(grads, optimizer.init(params), params)
  np.testing.assert_allclose(state[1][0].mu["w"], 0.1 * out["w"], rtol=1e-6)


def test_weight_decay_skips_the_layers_axis_of_scanned_blocks():
  params = {"blocks": {"dense": {"kernel": jnp.ones((4, 2, 3)), "bias": jnp.ones((4, 3))}},
            "pos": jnp.ones((5, 3))}
  assert decay_mask(params) == {"blocks": {"dense": {"kernel": True, "bias": False}},
                                "pos": True}


def test_layer_ids_count_embeddings_blocks_and_heads_as_beit_does():
  paths = ["beit3/image_embed/patch/kernel", "beit3/text_embed/embedding/embedding",
           "beit3/block0/mlp_image/fc1/kernel", "beit3/block1/ln_self_text/scale",
           "beit3/vl_block0/mlp_vl/fc2/bias", "beit3/ln_final_image/scale", "head/dense2/kernel"]
  assert layer_ids(paths) == {
      "beit3/image_embed/patch/kernel": 0, "beit3/text_embed/embedding/embedding": 0,
      "beit3/block0/mlp_image/fc1/kernel": 1, "beit3/block1/ln_self_text/scale": 2,
      "beit3/vl_block0/mlp_vl/fc2/bias": 3, "beit3/ln_final_image/scale": 4,
      "head/dense2/kernel": 4}


def test_layer_decay_scales_each_layers_update():
  params = {"image_embed": {"w": jnp.ones(3)}, "block0": {"w": jnp.ones(3)},
            "block1": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(3)}}
  grads = {k: {"w": jnp.array([1.0, -2.0, 3.0])} for k in params}
  config = base_config().optimizer
  config.update(learning_rate=0.1, warmup_steps=0, weight_decay=0.0, grad_clip_norm=0.0)
  plain = make_optimizer(config, total_steps=10)
  want, _ = plain.update(grads, plain.init(params), params)
  config.layer_decay = 0.5
  decayed = make_optimizer(config, total_steps=10)
  got, _ = decayed.update(grads, decayed.init(params), params)
  for name, scale in (("image_embed", 0.125), ("block0", 0.25), ("block1", 0.5), ("head", 1.0)):
    np.testing.assert_allclose(got[name]["w"], scale * want[name]["w"], rtol=1e-6)
  config.layer_decay = 1.5
  with pytest.raises(ValueError, match="layer_decay must lie in"):
    make_optimizer(config, total_steps=10)


def test_frozen_params_never_change_and_the_others_train_as_without_freezing():
  params = {"image_encoder": {"block0": {"kernel": jnp.ones((2, 3))}},
            "head": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
  config = base_config().optimizer
  config.update(learning_rate=0.1, warmup_steps=0, weight_decay=0.5, grad_clip_norm=1.0)
  plain = make_optimizer(config, total_steps=10)
  want, _ = plain.update({"head": grads["head"]}, plain.init({"head": params["head"]}),
                         {"head": params["head"]})
  config.frozen = ("image_encoder",)
  frozen = make_optimizer(config, total_steps=10)
  got, _ = frozen.update(grads, frozen.init(params), params)
  np.testing.assert_array_equal(got["image_encoder"]["block0"]["kernel"], 0.0)
  for key in ("kernel", "bias"):  # clipped over the trained params only, as if alone
    np.testing.assert_allclose(got["head"][key], want["head"][key], rtol=1e-6)
  assert frozen_labels(params, ("image_encoder/block0",)) == {
      "image_encoder": {"block0": {"kernel": "frozen"}},
      "head": {"kernel": "trained", "bias": "trained"}}
  config.frozen = ("text_encoder",)
  with pytest.raises(ValueError, match="no params under"):
    make_optimizer(config, total_steps=10).init(params)
