"""Object readings computed once: a frozen scene parser's reading of every image of a dataset,
stored as a TFDS dataset of its own, as LXMERT, UNITER and OSCAR read bottom-up-attention
region features extracted before training.

A reasoning model over a frozen parser (`configs/shapes_nlvr.py:image=object_readings`) spends
most of each step running the parser again on images it has read before: on `shapes_nlvr`
the parser's forward pass is most of the train step. With

  config.data.objects = dict(parser=PARSER_WORKDIR, pp=IMAGE_PP, max_tokens=8, threshold=0.2,
                             min_separation=6 / 64)

the input pipeline reads `<name>_objects` instead of `<name>`: the same examples, splits and
features, except that every image feature is the parser's reading of the image (`pp` decodes
and resizes it first): float32[max_tokens, D] tokens, `scene_parser.reading_tokens` (each
attribute's probabilities and the center's position), a cell not read as holding an object
all zeros. `min_separation` (optional, default None) is the `object_tokens` encoder's:
duplicate readings of one object dropped. The model reads them with the `precomputed` image
encoder
(models/precomputed.py). The readings equal those the `object_readings` encoder computes on
the fly (tests/test_object_features.py).

The dataset is built on first use, by process 0 (the others wait), under
PARSER_WORKDIR/objects/, its config named after the source config and a digest of the
parser's params and the settings above: a parser trained further, or other settings, get
readings of their own and never stale ones.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from flax import traverse_util

from multimodal.data import pipeline
from multimodal.data import pp as pp_lib
from multimodal.models.scene_parser import SceneReader
from multimodal.training import distributed, init_params, workdir_config

SUFFIX = "_objects"
VERSION = "1.0.0"
BATCH_SIZE = 256  # images per parser call while extracting
CHUNK = 2048  # examples read at a time, their distinct images read once
LOG_EVERY_S = 15.0  # progress of the extraction


def image_keys(builder: tfds.core.DatasetBuilder) -> list[str]:
  """The dataset's top-level image features (`image`; NLVR's `left_image`, `right_image`)."""
  return [name for name, feature in builder.info.features.items()
          if isinstance(feature, tfds.features.Image)]


def load_parser(parser: str, max_tokens: int, threshold: float,
                min_separation: float | None = None) -> tuple[SceneReader, dict[str, Any], str]:
  """A configs/shapes_scene_parser.py workdir -> (its `SceneReader` handing on readings, the
  reader's params from the latest checkpoint, a digest of those params)."""
  model = workdir_config.read(parser)["model"]
  if model.get("type") != "scene_parser":
    raise ValueError(f"data.objects.parser: {parser} is a {model.get('type')!r} run; it must "
                     "be a scene_parser run (configs/shapes_scene_parser.py).")
  flat = init_params.checkpoint_params(parser)
  prefix = "image_encoder/"
  params = {path[len(prefix):]: value for path, value in flat.items()
            if path.startswith(prefix)}
  digest = hashlib.sha1()
  for path in sorted(params):
    digest.update(path.encode())
    digest.update(np.ascontiguousarray(params[path]).tobytes())
  reader = SceneReader(image=model["image"], hidden_dim=model["hidden_dim"], tokens="reading",
                       threshold=threshold, max_tokens=max_tokens,
                       min_separation=min_separation)
  return reader, traverse_util.unflatten_dict(params, sep="/"), digest.hexdigest()


def read_objects(reader: SceneReader, params: dict[str, Any]):
  """A jitted function: images float[B, H, W, 3] -> readings float32[B, max_tokens, D], the
  tokens of cells not read as holding an object set to zeros."""
  @jax.jit
  def read(images: jax.Array) -> jax.Array:
    features = reader.apply({"params": params}, images, train=False)
    return jnp.where(features.mask[..., None], features.tokens, 0).astype(jnp.float32)
  return read


def derived_config(source_config: str | None, digest: str, objects: Mapping[str, Any]) -> str:
  """The derived dataset's config name: the source's, and a digest of the parser's params
  and the extraction settings."""
  settings = json.dumps({"params": digest, "pp": objects["pp"],
                         "max_tokens": objects["max_tokens"],
                         "threshold": objects["threshold"],
                         "min_separation": objects.get("min_separation")}, sort_keys=True)
  return f"{source_config or 'default'}-{hashlib.sha1(settings.encode()).hexdigest()[:10]}"


def read_distinct(images: np.ndarray, read: Callable[[np.ndarray], Any]) -> np.ndarray:
  """images float[N, H, W, 3] -> readings [N, ...], the parser run once per distinct image
  (VQA's questions about one scene share its image; an NLVR pair and its false partner share
  one) in calls of BATCH_SIZE images (the last padded), so that it compiles once."""
  first: dict[bytes, int] = {}
  inverse = np.array([first.setdefault(hashlib.sha1(image.tobytes()).digest(), len(first))
                      for image in images])
  distinct = images[np.unique(inverse, return_index=True)[1]]
  out = []
  for start in range(0, len(distinct), BATCH_SIZE):
    part = distinct[start:start + BATCH_SIZE]
    padded = np.concatenate([part, np.zeros((BATCH_SIZE - len(part), *part.shape[1:]),
                                            part.dtype)])
    out.append(np.asarray(read(padded))[:len(part)])
  return np.concatenate(out)[inverse]


def _examples(source: tfds.core.DatasetBuilder, split: str, pp: str, keys: list[str],
              read: Callable[[np.ndarray], Any]) -> Iterator[tuple[int, dict[str, Any]]]:
  """(index, example) of a split in its order, each image feature replaced by its reading."""
  ds = _preprocessed(source, split, pp).batch(CHUNK)
  total = source.info.splits[split].num_examples
  index, start, logged = 0, time.time(), 0.0
  for batch in tfds.as_numpy(ds):
    size = len(batch[keys[0]])
    images = np.concatenate([batch[key] for key in keys])
    readings = np.split(read_distinct(images, read), len(keys))
    for i in range(size):
      example = {name: values[i] for name, values in batch.items()
                 if name in source.info.features}
      example.update({key: reading[i] for key, reading in zip(keys, readings)})
      yield index, example
      index += 1
    elapsed = time.time() - start
    if elapsed - logged >= LOG_EVERY_S or index == total:
      logged = elapsed
      logging.info("Object readings of %s[%s]: %d / %d examples, %.0f s, ETA %.0f s",
                   source.info.name, split, index, total, elapsed,
                   elapsed / index * (total - index))


def get_builder(data: Any, prepare_timeout_s: float) -> tfds.core.DatasetBuilder:
  """`data` (a pipeline data config with `objects`) -> the builder of its object readings,
  extracted first where they are not on disk yet."""
  objects = dict(data.objects)
  missing = sorted({"parser", "pp", "max_tokens", "threshold"} - set(objects))
  unknown = sorted(set(objects) - {"parser", "pp", "max_tokens", "threshold", "min_separation"})
  if missing or unknown:
    raise ValueError(f"data.objects lacks {missing} / has unknown {unknown}: it takes parser "
                     "(a scene-parser workdir), pp (the images' preprocessing), max_tokens, "
                     "threshold and optionally min_separation.")
  source = pipeline.prepared_builder(data, prepare_timeout_s)
  keys = image_keys(source)
  if not keys:
    raise ValueError(f"data.objects: {source.info.full_name} has no image feature to read.")
  reader, params, digest = load_parser(objects["parser"], objects["max_tokens"],
                                       objects["threshold"], objects.get("min_separation"))
  name = f"{source.info.name}{SUFFIX}/{derived_config(data.get('config'), digest, objects)}"
  data_dir = str(epath.Path(objects["parser"]) / "objects")
  if jax.process_index() == 0 and not _prepared(name, data_dir):
    _extract(source, name, data_dir, objects, keys, read_objects(reader, params))
  distributed.wait_for_all_processes(f"object readings {name}", prepare_timeout_s)
  return tfds.builder(name, data_dir=data_dir)


def _prepared(name: str, data_dir: str) -> bool:
  try:
    tfds.builder(name, data_dir=data_dir)
    return True
  except tfds.core.registered.DatasetNotFoundError:
    return False


def _extract(source: tfds.core.DatasetBuilder, name: str, data_dir: str,
             objects: Mapping[str, Any], keys: list[str],
             read: Callable[[np.ndarray], Any]) -> None:
  """Writes the derived dataset: every split of `source` with its images read."""
  first = _preprocessed(source, next(iter(source.info.splits)), objects["pp"]).take(1)
  example = next(iter(tfds.as_numpy(first.batch(1))))
  shape = read_distinct(example[keys[0]], read).shape[1:]
  features = tfds.features.FeaturesDict({
      key: (tfds.features.Tensor(shape=shape, dtype=np.float32) if key in keys else feature)
      for key, feature in source.info.features.items()})
  dataset_name, config = name.split("/")
  start = time.time()
  tfds.dataset_builders.store_as_tfds_dataset(
      name=dataset_name, version=VERSION, features=features, config=config,
      data_dir=data_dir, disable_shuffling=True,
      split_datasets={split: _examples(source, split, objects["pp"], keys, read)
                      for split in source.info.splits},
      description=f"{source.info.full_name} with each image ({', '.join(keys)}) replaced by "
                  f"the reading of the scene parser at {objects['parser']}: "
                  f"{json.dumps(objects, sort_keys=True)}")
  logging.info("Object readings %s written to %s in %.0f s.", name, data_dir,
               time.time() - start)


def _preprocessed(source: tfds.core.DatasetBuilder, split: str, pp: str) -> Any:
  """A split's examples in order, with `pp` applied (it decodes the images)."""
  ds = source.as_dataset(split=split, shuffle_files=False,
                         decoders=pipeline.skip_image_decoding(source))
  return ds.map(pp_lib.parse(pp))
