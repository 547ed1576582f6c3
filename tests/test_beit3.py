"""BEiT-3 behaviour beyond the release's numbers (tests/test_beit3_parity.py): drop path."""
import dataclasses

import flax.linen as nn
import jax
import numpy as np

from multimodal.models import beit3

CONFIG = beit3.Beit3Config(width=32, depth=3, num_heads=4, mlp_dim=64, patch_size=8,
                           image_size=32, vocab_size=50, max_text_positions=16)


def test_drop_path_acts_in_training_only_and_grows_with_depth():
  inputs = dict(image=np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32),
                text_tokens=np.ones((8, 5), np.int32))
  plain = beit3.Beit3Encoder(CONFIG)
  params = plain.init(jax.random.key(0), **inputs)
  dropping = beit3.Beit3Encoder(dataclasses.replace(CONFIG, drop_path_rate=0.5))
  apply = lambda model, train, seed=1: model.apply(
      params, **inputs, train=train, rngs={"dropout": jax.random.key(seed)}).hidden
  evaluated = apply(plain, False)
  np.testing.assert_allclose(apply(plain, True), evaluated, rtol=1e-6)
  np.testing.assert_allclose(apply(dropping, False), evaluated, rtol=1e-6)
  trained = apply(dropping, True)
  assert np.max(np.abs(trained - evaluated)) > 1e-3
  # Some examples differ and, at this rate, another seed drops other branches.
  assert np.max(np.abs(apply(dropping, True, seed=2) - trained)) > 1e-3
  # Block 0 never drops (rate 0 * 0.5 / 2): with one block, training changes nothing.
  one = dataclasses.replace(CONFIG, depth=1, drop_path_rate=0.5)
  one_params = beit3.Beit3Encoder(one).init(jax.random.key(0), **inputs)
  run = lambda train: beit3.Beit3Encoder(one).apply(
      one_params, **inputs, train=train, rngs={"dropout": jax.random.key(1)}).hidden
  np.testing.assert_allclose(run(True), run(False), rtol=1e-6)


def test_scanned_and_rematerialised_stacks_equal_the_loop():
  from multimodal.models.transformer import Stacking, scanned_layout
  inputs = dict(image=np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32),
                text_tokens=np.ones((2, 5), np.int32))
  config = dataclasses.replace(CONFIG, drop_path_rate=0.3)
  params = nn.meta.unbox(beit3.Beit3Encoder(config).init(jax.random.key(0), **inputs)["params"])
  want = beit3.Beit3Encoder(config).apply({"params": params}, **inputs).hidden
  scanned = dataclasses.replace(config, stacking=Stacking(remat=True, scan_layers=True))
  got = beit3.Beit3Encoder(scanned).apply({"params": scanned_layout(params)}, **inputs).hidden
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
