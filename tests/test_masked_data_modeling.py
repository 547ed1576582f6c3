"""BEiT-3's masked data modeling: what is masked, that the model cannot see what it must
predict, the patch targets' layout, and the task's losses."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from multimodal.models import beit3_pretraining as mdm
from multimodal.tasks.masked_data_modeling import MaskedDataModelingTask, mask_id

ENCODER = dict(width=32, depth=1, num_heads=4, mlp_dim=64, patch_size=8, image_size=32,
               max_text_positions=16)


def test_text_mask_skips_bos_and_padding_and_masks_every_example():
  text_mask = np.arange(10)[None] < np.array([[10], [4], [2], [1]])
  masks = np.stack([mdm.draw_text_mask(jax.random.key(i), text_mask, 0.5) for i in range(200)])
  assert not masks[:, :, 0].any() and not (masks & ~text_mask).any()
  assert masks[:, :3].sum(axis=2).min() >= 1  # even a text of BOS and one token
  assert not masks[:, 3].any()  # BOS alone: nothing to mask
  np.testing.assert_allclose(masks[:, 0, 1:].mean(), 0.5, atol=0.05)


def test_patch_mask_takes_exactly_the_rate():
  masks = mdm.draw_patch_mask(jax.random.key(0), 5, 16, 0.4)
  assert masks.shape == (5, 16) and np.all(np.sum(masks, axis=1) == 6)
  assert len({tuple(m) for m in np.asarray(masks)}) == 5


def test_patch_pixels_follow_the_encoders_row_major_patches():
  image = np.random.default_rng(0).normal(size=(2, 16, 24, 3)).astype(np.float32)
  pixels = np.asarray(mdm.patch_pixels(jnp.asarray(image), 8))
  assert pixels.shape == (2, 6, 192)
  for r in range(2):
    for c in range(3):
      np.testing.assert_array_equal(pixels[:, r * 3 + c],
                                    image[:, 8 * r:8 * r + 8, 8 * c:8 * c + 8].reshape(2, -1))
  normed = mdm.normalize_patches(jnp.asarray(pixels))
  np.testing.assert_allclose(normed.mean(-1), 0, atol=1e-5)
  np.testing.assert_allclose(normed.std(-1), 1, atol=1e-3)


def test_what_is_masked_cannot_be_seen():
  model = mdm.Beit3MaskedDataModeling(ENCODER, vocab_size=50, mask_id=4)
  rng = np.random.default_rng(0)
  batch = dict(image=rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32),
               text_tokens=rng.integers(5, 50, (2, 10)).astype(np.int32),
               text_mask=np.arange(10)[None] < np.array([[10], [6]]))
  params = model.init(jax.random.key(1), batch, train=False)
  out = model.apply(params, batch, train=False)  # evaluation: the masks of a fixed key
  masked_text, masked_patches = out["text_weights"] > 0, out["image_weights"] > 0
  assert masked_text.any() and masked_patches.sum() == 2 * 6
  np.testing.assert_array_equal(out["text_targets"], batch["text_tokens"])
  # Other tokens at the masked positions, other pixels in the masked patches: the same
  # predictions everywhere (only the image targets change).
  tokens = np.where(masked_text, (batch["text_tokens"] + 7) % 50, batch["text_tokens"])
  pixel_mask = np.repeat(np.repeat(np.asarray(masked_patches).reshape(2, 4, 4), 8, 1), 8, 2)
  image = np.where(pixel_mask[..., None], -batch["image"], batch["image"])
  changed = model.apply(params, dict(batch, text_tokens=tokens, image=image), train=False)
  for key in ("text_logits", "image_predictions"):
    np.testing.assert_allclose(changed[key], out[key], rtol=1e-5, atol=1e-5)
  # What is not masked is seen.
  seen = np.where(~masked_text & batch["text_mask"], (batch["text_tokens"] + 7) % 50,
                  batch["text_tokens"])
  other = model.apply(params, dict(batch, text_tokens=seen), train=False)
  assert np.max(np.abs(other["text_logits"] - out["text_logits"])) > 1e-4


def test_losses_as_computed_by_hand():
  task = MaskedDataModelingTask("shapes_vl", image_loss_weight=0.5)
  rng = np.random.default_rng(0)
  outputs = dict(text_logits=jnp.asarray(rng.normal(size=(2, 3, 7)), jnp.float32),
                 text_targets=jnp.array([[1, 2, 3], [4, 5, 6]]),
                 text_weights=jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]),
                 image_predictions=jnp.ones((2, 2, 4)), image_targets=jnp.zeros((2, 2, 4)),
                 image_weights=jnp.array([[1.0, 0.0], [1.0, 1.0]]))
  loss, metrics = task.loss(outputs, {})
  ce = optax.softmax_cross_entropy_with_integer_labels(outputs["text_logits"],
                                                       outputs["text_targets"])
  text_loss = (ce[0, 1] + ce[0, 2] + ce[1, 0]) / 3
  np.testing.assert_allclose(metrics["text_loss"], text_loss, rtol=1e-6)
  np.testing.assert_allclose(metrics["image_loss"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(loss, text_loss + 0.5, rtol=1e-6)
  predicted = task.predict(outputs, {})
  np.testing.assert_array_equal(predicted["text_masked"], [2, 1])
  assert task.model_kwargs()["mask_id"] == mask_id("shapes_vl")


def test_a_tokenizer_without_a_mask_piece_is_refused():
  with pytest.raises(ValueError, match="no '<mask>' piece"):
    mask_id("shapes")
