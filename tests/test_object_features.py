"""Object readings computed once (data/object_features.py): a derived dataset that keeps every
example, split and feature of its source, holds exactly what the frozen parser reads on the
fly, gives the same model outputs, and is built once per parser and settings."""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import traverse_util

from configs import shapes_nlvr, shapes_scene_parser, shapes_vqa
from multimodal import models
from multimodal.data import object_features, pipeline
from multimodal.data import pp as pp_lib
from multimodal.training import init_params
from multimodal.training import trainer as trainer_lib

pytestmark = pytest.mark.xdist_group("object_features")


@pytest.fixture(scope="module")
def parser_run(tmp_path_factory):
  """(a tiny scene-parser workdir trained 3 steps, the TFDS data_dir of the source data)."""
  root = tmp_path_factory.mktemp("object_features")
  config = shapes_scene_parser.get_config("tiny=true")
  config.update(total_steps=3, evals={})
  config.data.data_dir = str(root / "tfds")
  trainer_lib.Trainer(config, str(root / "parser")).train()
  return str(root / "parser"), str(root / "tfds")


def flat(tree) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(jax.device_get(tree), sep="/").items()}


def nlvr_config(arg: str, data_dir: str):
  config = shapes_nlvr.get_config(f"tiny=true,{arg}")
  config.update(total_steps=2, evals={})
  config.data.data_dir = data_dir
  return config


def test_nlvr_on_precomputed_readings_equals_nlvr_on_the_frozen_parser(parser_run, tmp_path):
  parser, data_dir = parser_run
  source = pipeline.get_builder(nlvr_config("", data_dir).data)
  live = nlvr_config(f"image=object_readings,image_init={parser},freeze_image=true", data_dir)
  raw = next(iter(tfds.as_numpy(source.as_dataset(split="validation", decoders=(
      pipeline.skip_image_decoding(source))).map(pp_lib.parse(live.pp_train)).batch(16))))
  parsed = {k: v for k, v in init_params.checkpoint_params(parser).items()
            if k.startswith("image_encoder/")}
  variables = {"params": traverse_util.unflatten_dict(
      {k[len("image_encoder/"):]: v for k, v in parsed.items()}, sep="/")}
  # A parser trained 3 steps is unsure everywhere: a threshold that some cells pass.
  reader = models.ENCODERS.build(live.model.image.to_dict())
  _, reading = reader.apply(variables, raw["left_image"], train=False, method=reader.read)
  threshold = float(np.quantile(jax.nn.sigmoid(reading["object"]), 0.95))
  live.model.image.threshold = threshold

  cached_config = nlvr_config(f"image=object_readings,image_init={parser},precompute=true",
                              data_dir)
  cached_config.data.objects.threshold = threshold
  cached = trainer_lib.Trainer(cached_config, str(tmp_path / "cached"))
  derived = cached.builder
  assert derived.info.name == "shapes_nlvr_objects"
  assert ({s: i.num_examples for s, i in derived.info.splits.items()}
          == {s: i.num_examples for s, i in source.info.splits.items()})
  features = derived.info.features
  assert features["left_image"].shape == (8, 23) and features["right_image"].shape == (8, 23)
  assert features["template"].names == source.info.features["template"].names

  # The same examples in the same order, each image replaced by its reading ...
  read = next(iter(tfds.as_numpy(derived.as_dataset(split="validation").map(
      pp_lib.parse(cached_config.pp_train)).batch(16))))
  np.testing.assert_array_equal(raw["text_tokens"], read["text_tokens"])
  np.testing.assert_array_equal(raw["label"], read["label"])
  params = flat(cached.state.params)
  assert not any(k.startswith("image_encoder/") for k in params)

  # ... what the frozen parser reads on the fly ...
  precompute = models.ENCODERS.build({"type": "precomputed"})
  for key in ("left_image", "right_image"):
    on_the_fly = models.ENCODERS.build(live.model.image.to_dict()).apply(
        variables, raw[key], train=False)
    precomputed = precompute.apply({}, read[key], train=False)
    assert 0 < int(np.sum(on_the_fly.mask)) < on_the_fly.mask.size
    np.testing.assert_array_equal(precomputed.mask, on_the_fly.mask)
    mask = np.asarray(on_the_fly.mask)
    np.testing.assert_allclose(precomputed.tokens[mask], on_the_fly.tokens[mask], rtol=1e-5,
                               atol=1e-6)
    assert not np.any(read[key][~mask])  # the cells not read as objects: zeros

  # ... so the model on them gives the logits of the model that runs the parser.
  live_model = models.MODELS.build(live.model.to_dict(), **cached.task.model_kwargs())
  cached_model = models.MODELS.build(cached_config.model.to_dict(),
                                     **cached.task.model_kwargs())
  live_params = traverse_util.unflatten_dict({**params, **parsed}, sep="/")
  expected = live_model.apply({"params": live_params}, raw, train=False)
  got = cached_model.apply({"params": cached.state.params}, read, train=False)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  cached.train()  # and it trains

  # Built once: another run with this parser and these settings reads the same files.
  objects = sorted(pathlib.Path(parser).glob("objects/shapes_nlvr_objects/*"))
  again = trainer_lib.Trainer(cached_config, str(tmp_path / "again"))
  assert again.builder.data_dir == derived.data_dir
  assert sorted(pathlib.Path(parser).glob("objects/shapes_nlvr_objects/*")) == objects


def test_vqa_trains_on_precomputed_readings(parser_run, tmp_path):
  parser, data_dir = parser_run
  config = shapes_vqa.get_config(
      f"tiny=true,tokenizer=shapes_vl,image=object_readings,image_init={parser},precompute=true")
  config.update(total_steps=2, evals={})
  config.data.data_dir = data_dir
  trainer = trainer_lib.Trainer(config, str(tmp_path / "vqa"))
  assert trainer.builder.info.name == "shapes_vqa_objects"
  assert trainer.builder.info.features["image"].shape == (8, 23)
  trainer.train()


def test_bad_settings_are_named(parser_run, tmp_path):
  parser, data_dir = parser_run
  with pytest.raises(ValueError, match="image_init=PARSER_WORKDIR"):
    shapes_nlvr.get_config("tiny=true,image=object_readings,precompute=true")
  with pytest.raises(ValueError, match="image=object_readings"):
    shapes_vqa.get_config(f"tiny=true,image=vit,image_init={parser},precompute=true")
  (tmp_path / "config.json").write_text(json.dumps({"model": {"type": "fusion_nlvr"}}))
  config = nlvr_config(f"image=object_readings,image_init={tmp_path},precompute=true",
                       data_dir)
  with pytest.raises(ValueError, match="must be a scene_parser run"):
    pipeline.get_builder(config.data)
  with pytest.raises(ValueError, match="Precomputed features must be"):
    models.ENCODERS.build({"type": "precomputed"}).apply({}, np.zeros((2, 64, 64, 3)),
                                                         train=False)


def test_each_distinct_image_is_read_once_in_full_batches():
  rng = np.random.default_rng(0)
  distinct = rng.uniform(size=(300, 4, 4, 3)).astype(np.float32)
  images = distinct[rng.integers(300, size=700)]  # repeats, as VQA's questions about a scene
  calls = []

  def read(batch: np.ndarray) -> np.ndarray:
    calls.append(batch.shape[0])
    return batch.sum(axis=(1, 2))  # [B, 3]

  out = object_features.read_distinct(images, read)
  np.testing.assert_allclose(out, images.sum(axis=(1, 2)), rtol=1e-6)
  used = len({image.tobytes() for image in images})
  assert calls == [object_features.BATCH_SIZE] * -(-used // object_features.BATCH_SIZE)
