"""The scene parser: object_grid targets, the object_attributes task and evaluator, and the
parser as an NLVR model's image encoder (object tokens), loaded from its run and kept frozen."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from flax import traverse_util

from configs import shapes_nlvr, shapes_scene_parser
from multimodal import models
from multimodal.data import pp
from multimodal.evaluators.object_attributes import summarize
from multimodal.models.scene_parser import (cell_centers, distinct_objects, likeliest_cells,
                                            reading_tokens)
from multimodal.tasks.object_attributes import ObjectAttributesTask, decode_objects
from multimodal.training import trainer as trainer_lib

GRID = 4  # 4x4 cells of 16 px on a 64-px image.
# Two objects: (shape, color, size, x, y) with x, y in [0, 1], y down.
OBJECTS = [(2, 5, 1, 0.30, 0.10), (0, 1, 0, 0.90, 0.60)]
CELLS = [0 * GRID + 1, 2 * GRID + 3]  # row-major: (row 0, col 1) and (row 2, col 3)


def grid_targets() -> dict[str, np.ndarray]:
  shape, color, size, x, y = (np.array(v) for v in zip(*OBJECTS))
  example = {"objects": {"shape": tf.constant(shape, tf.int64),
                         "color": tf.constant(color, tf.int64),
                         "size": tf.constant(size, tf.int64),
                         "x": tf.constant(x, tf.float32), "y": tf.constant(y, tf.float32)}}
  out = pp.parse(f"object_grid(grid={GRID})")(example)
  return {k: v.numpy() for k, v in out.items() if k.startswith("grid_")}


def test_object_grid_puts_each_object_in_the_cell_of_its_center():
  t = grid_targets()
  assert t["grid_object"].shape == (GRID * GRID,) and t["grid_offset"].shape == (GRID ** 2, 2)
  np.testing.assert_array_equal(np.flatnonzero(t["grid_object"]), CELLS)
  for cell, (shape, color, size, x, y) in zip(CELLS, OBJECTS):
    assert (t["grid_shape"][cell], t["grid_color"][cell], t["grid_size"][cell]) == (
        shape, color, size)
    np.testing.assert_allclose(t["grid_offset"][cell], [x * GRID % 1, y * GRID % 1], atol=1e-6)
  empty = np.ones(GRID * GRID, bool)
  empty[CELLS] = False
  assert not t["grid_shape"][empty].any() and not t["grid_offset"][empty].any()


def perfect_outputs(t: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Scene-parser outputs for a batch of one that read the targets exactly."""
  one_hot = lambda values, n: jnp.asarray(np.eye(n)[values][None] * 20.0)
  return {"object": jnp.asarray(np.where(t["grid_object"], 20.0, -20.0)[None]),
          "offset": jnp.asarray(t["grid_offset"][None]),
          "shape": one_hot(t["grid_shape"], 3), "color": one_hot(t["grid_color"], 6),
          "size": one_hot(t["grid_size"], 2)}


def task_batch(t: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  return {"image": jnp.zeros((1, 64, 64, 3)), **{k: jnp.asarray(v[None]) for k, v in t.items()}}


def test_a_perfect_reading_counts_every_object_right_and_decodes_to_the_scene():
  t = grid_targets()
  task = ObjectAttributesTask()
  outputs, batch = perfect_outputs(t), task_batch(t)
  counts = task.predict(outputs, batch)
  for key in ("objects", "detected", "found", "all_right", "shape_right", "color_right"):
    assert float(counts[key][0]) == 2.0, key
  assert float(counts["correct"][0]) == 1.0
  assert float(counts["position_error"][0]) == pytest.approx(0.0, abs=1e-5)
  loss, metrics = task.loss(outputs, batch)
  assert float(loss) < 1e-3 and float(metrics["recall"]) == 1.0

  scene = decode_objects(jax.device_get(counts), image_size=64)[0]
  assert [(o["shape"], o["color"], o["size"]) for o in scene] == [
      ("triangle", "cyan", "large"), ("circle", "green", "small")]
  np.testing.assert_allclose([(o["x"], o["y"]) for o in scene],
                             [(x * 64, y * 64) for *_, x, y in OBJECTS], atol=1e-4)


def test_mistakes_are_counted_where_they_are():
  t = grid_targets()
  outputs = perfect_outputs(t)
  outputs["color"] = outputs["color"].at[0, CELLS[0]].set(jnp.eye(6)[0] * 20.0)  # wrong color
  outputs["object"] = outputs["object"].at[0, 5].set(20.0)  # an invented object
  outputs["offset"] = outputs["offset"].at[0, CELLS[1], 0].add(0.25)  # 4 px off at 16 px cells
  counts = ObjectAttributesTask().predict(outputs, task_batch(t))
  assert float(counts["detected"][0]) == 3.0 and float(counts["found"][0]) == 2.0
  assert float(counts["color_right"][0]) == 1.0 and float(counts["shape_right"][0]) == 2.0
  assert float(counts["all_right"][0]) == 1.0 and float(counts["correct"][0]) == 0.0
  assert float(counts["position_error"][0]) == pytest.approx(4.0, abs=1e-4)

  totals = {k: float(np.asarray(v).sum()) for k, v in counts.items() if np.ndim(v) == 1}
  metrics = summarize(totals, count_exact=0.0, num_images=1)
  assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == 1.0
  assert metrics["object_accuracy"] == 0.5 and metrics["color_accuracy"] == 0.5
  assert metrics["position_error_px"] == pytest.approx(2.0, abs=1e-4)
  assert metrics["scene_accuracy"] == 0.0 and metrics["count_accuracy"] == 0.0


def test_the_model_gives_one_reading_per_patch():
  spec = dict(type="scene_parser", image=dict(
      type="vit", variant=None, width=32, depth=1, mlp_dim=64, num_heads=4, patch_size=16,
      pool_type="none"), hidden_dim=32)
  model = models.MODELS.build(spec, **ObjectAttributesTask().model_kwargs())
  batch = {"image": jnp.zeros((2, 64, 64, 3))}
  outputs, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), batch,
                                                             train=False))
  assert {k: v.shape for k, v in outputs.items()} == {
      "object": (2, 16), "offset": (2, 16, 2), "shape": (2, 16, 3), "color": (2, 16, 6),
      "size": (2, 16, 2)}


def test_missing_targets_are_named():
  with pytest.raises(KeyError, match="grid_object"):
    ObjectAttributesTask().loss(perfect_outputs(grid_targets()), {"image": jnp.zeros((1,))})
  with pytest.raises(ValueError, match="grid"):
    pp.parse("object_grid(grid=0)")


def flat_params(trainer) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(jax.device_get(trainer.state.params), sep="/").items()}


def test_nlvr_starts_from_a_scene_parser_run_and_keeps_its_encoder_frozen(tmp_path):
  data_dir = str(tmp_path / "tfds")
  parser_config = shapes_scene_parser.get_config("tiny=true")
  parser_config.update(total_steps=3, evals={})
  parser_config.data.data_dir = data_dir
  parser = trainer_lib.Trainer(parser_config, str(tmp_path / "parser"))
  parser.train()
  parsed = flat_params(parser)

  config = shapes_nlvr.get_config(
      f"tiny=true,image=object_tokens,image_init={tmp_path / 'parser'},freeze_image=true")
  config.update(total_steps=2, evals={})
  config.data.data_dir = data_dir
  nlvr = trainer_lib.Trainer(config, str(tmp_path / "nlvr"))
  initial = flat_params(nlvr)
  nlvr.train()
  trained = flat_params(nlvr)
  encoder = [k for k in trained if k.startswith("image_encoder/")]
  assert encoder and set(encoder) == {k for k in parsed if k.startswith("image_encoder/")}
  for key in encoder:  # loaded from the parser, then left alone by training
    np.testing.assert_array_equal(trained[key], parsed[key])
  assert any(not np.array_equal(trained[k], initial[k]) for k in trained
             if k.startswith("text_encoder/"))

  # The encoder keeps exactly the cells the parser reads as holding an object, and with
  # max_tokens the same tokens, gathered into fewer places.
  spec = {**config.model.image.to_dict(), "max_tokens": None}
  reader = models.ENCODERS.build(spec)
  variables = {"params": traverse_util.unflatten_dict(
      {k[len("image_encoder/"):]: v for k, v in parsed.items() if k in encoder}, sep="/")}
  images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3), minval=-1.0)
  features = reader.apply(variables, images, train=False)
  _, reading = reader.apply(variables, images, train=False, method=reader.read)
  kept = distinct_objects(reading["object"], cell_centers(reading["offset"]), spec["threshold"],
                          spec["min_separation"])
  assert spec["min_separation"] is not None
  np.testing.assert_array_equal(features.mask, kept)
  kept = int(np.max(np.sum(features.mask, axis=1)))
  few = models.ENCODERS.build({**spec, "max_tokens": max(kept, 1)}).apply(
      variables, images, train=False)
  assert few.tokens.shape[1] == max(kept, 1) < features.tokens.shape[1]
  for i in range(2):
    np.testing.assert_array_equal(few.tokens[i][few.mask[i]], features.tokens[i][features.mask[i]])
  np.testing.assert_allclose(few.pooled, features.pooled, rtol=1e-6)


def test_reading_tokens_hold_the_attribute_probabilities_and_the_center():
  t = grid_targets()
  tokens = reading_tokens(perfect_outputs(t), ["shape", "color", "size"], frequencies=(1.0,))
  assert tokens.shape == (1, GRID * GRID, 3 + 6 + 2 + 4)
  for cell, (shape, color, size, x, y) in zip(CELLS, OBJECTS):
    token = np.asarray(tokens[0, cell])
    np.testing.assert_allclose(token[:3], np.eye(3)[shape], atol=1e-6)
    np.testing.assert_allclose(token[3:9], np.eye(6)[color], atol=1e-6)
    np.testing.assert_allclose(token[9:11], np.eye(2)[size], atol=1e-6)
    # sin(pi x), sin(pi y), cos(pi x), cos(pi y) of the center in image coordinates
    np.testing.assert_allclose(token[11:], [np.sin(np.pi * x), np.cos(np.pi * x),
                                            np.sin(np.pi * y), np.cos(np.pi * y)], atol=1e-5)


def test_max_tokens_keeps_the_likeliest_kept_cells_in_grid_order():
  tokens = jnp.arange(6, dtype=jnp.float32).reshape(1, 6, 1) * jnp.ones((2, 1, 1))
  mask = jnp.asarray([[True, True, False, True, True, False], [False, True, False, False, False,
                                                               False]])
  logits = jnp.asarray([[0.1, 3.0, 9.0, 2.0, 5.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
  kept, kept_mask = likeliest_cells(tokens, mask, logits, 3)
  # Cells 1, 3, 4 (cell 2 is likelier but not kept), in grid order; the second example has
  # one real cell and two padding ones.
  np.testing.assert_array_equal(kept[0, :, 0], [1, 3, 4])
  assert bool(np.all(kept_mask[0])) and int(np.sum(kept_mask[1])) == 1
  np.testing.assert_array_equal(kept[1][kept_mask[1]][:, 0], [1])
  with pytest.raises(ValueError, match="max_tokens"):
    likeliest_cells(tokens, mask, logits, 0)


def greedy_suppression(prob: np.ndarray, centers: np.ndarray, threshold: float,
                       min_separation: float) -> np.ndarray:
  """A plain reference: per image, visit the cells likeliest first and keep one above the
  threshold unless it lies closer than min_separation to one kept before."""
  keep = np.zeros(prob.shape, bool)
  for b in range(prob.shape[0]):
    for i in np.argsort(-prob[b], kind="stable"):
      near_kept = np.linalg.norm(centers[b, keep[b]] - centers[b, i], axis=-1) < min_separation
      keep[b, i] = prob[b, i] > threshold and not near_kept.any()
  return keep


def test_distinct_objects_keeps_the_likeliest_reading_of_each_object():
  # 4x4 cells of 16 px: one object on the border of cells 0 and 1, read from both (centers
  # 2 px apart); two objects 12 px apart in the diagonal neighbours 10 and 15.
  offset = np.full((1, GRID * GRID, 2), 0.5, np.float32)
  offset[0, 0] = (0.95, 0.5)
  offset[0, 1] = (0.07, 0.5)
  offset[0, 10] = (0.7, 0.7)   # center (43.2, 43.2) px
  offset[0, 15] = (0.23, 0.23)  # center (51.7, 51.7) px: 12 px from cell 10's
  logits = np.full((1, GRID * GRID), -5.0, np.float32)
  logits[0, [0, 1, 10, 15]] = [0.2, 0.6, 2.0, 1.0]  # probabilities 0.55, 0.65, 0.88, 0.73
  centers = cell_centers(jnp.asarray(offset))
  keep = np.asarray(distinct_objects(jnp.asarray(logits), centers, 0.5, 6 / 64))
  np.testing.assert_array_equal(np.flatnonzero(keep[0]), [1, 10, 15])
  without = np.asarray(distinct_objects(jnp.asarray(logits), centers, 0.5, None))
  np.testing.assert_array_equal(np.flatnonzero(without[0]), [0, 1, 10, 15])
  higher = np.asarray(distinct_objects(jnp.asarray(logits), centers, 0.7, 6 / 64))
  np.testing.assert_array_equal(np.flatnonzero(higher[0]), [10, 15])


def test_distinct_objects_equals_a_plain_greedy_suppression():
  rng = np.random.default_rng(0)
  logits = rng.normal(0.0, 2.0, (16, 64)).astype(np.float32)
  offset = rng.uniform(0.0, 1.0, (16, 64, 2)).astype(np.float32)
  centers = cell_centers(jnp.asarray(offset))
  for threshold, separation in ((0.3, 0.1), (0.5, 0.2), (0.1, 0.05)):
    got = np.asarray(distinct_objects(jnp.asarray(logits), centers, threshold, separation))
    want = greedy_suppression(1 / (1 + np.exp(-logits)), np.asarray(centers), threshold,
                              separation)
    np.testing.assert_array_equal(got, want)
    assert want.sum() > 16  # something kept and something dropped in each setting
    assert want.sum() < np.sum(1 / (1 + np.exp(-logits)) > threshold)


def test_with_min_separation_an_object_read_from_the_neighbouring_cell_is_found():
  t = grid_targets()
  outputs = perfect_outputs(t)
  # The first object (center at x = 19.2 px, 3.2 px into cell 1) is read from cell 0 instead,
  # its center 1 px off (at 18.2 px: an offset of 1.14 cells from cell 0), and again, less
  # surely, from its own cell.
  cell, neighbour = CELLS[0], CELLS[0] - 1
  for name, n in (("shape", 3), ("color", 6), ("size", 2)):
    outputs[name] = outputs[name].at[0, neighbour].set(outputs[name][0, cell])
  outputs["offset"] = outputs["offset"].at[0, neighbour].set(
      outputs["offset"][0, cell] + jnp.asarray([1.0 - 1 / 16, 0.0]))
  outputs["object"] = outputs["object"].at[0, neighbour].set(3.0).at[0, cell].set(0.5)
  batch = task_batch(t)
  by_cell = ObjectAttributesTask().predict(outputs, batch)
  assert float(by_cell["detected"][0]) == 3.0 and float(by_cell["correct"][0]) == 0.0
  by_center = ObjectAttributesTask(min_separation=6 / 64).predict(outputs, batch)
  for key in ("objects", "detected", "found", "all_right"):
    assert float(by_center[key][0]) == 2.0, key
  assert float(by_center["correct"][0]) == 1.0
  assert float(by_center["position_error"][0]) == pytest.approx(1.0, abs=1e-4)
  # Read from the neighbour only and too far off (7 px), it is a miss and an invention.
  far = outputs["offset"].at[0, neighbour, 0].add(-6 / 16)
  outputs = {**outputs, "offset": far, "object": outputs["object"].at[0, cell].set(-20.0)}
  missed = ObjectAttributesTask(min_separation=6 / 64).predict(outputs, batch)
  assert float(missed["found"][0]) == 1.0 and float(missed["detected"][0]) == 2.0
  with pytest.raises(ValueError, match="min_separation"):
    ObjectAttributesTask(min_separation=3.0)
