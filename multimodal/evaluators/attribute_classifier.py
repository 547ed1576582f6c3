"""The attribute classifier that judges generated images: the scene parser of a
configs/shapes_scene_parser.py run, loaded from its workdir (config.json and the latest
checkpoint), reading every object of an image and giving its pooled ViT features (FID's).

It was trained on real rendered scenes at its own resolution; images of another size are
resized to it on the device (`jax.image.resize`, linear). It runs jitted on one device of
each process (every process reads all the images it is given).
"""
from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import traverse_util

from multimodal import models, tasks
from multimodal.models.features import masked_mean
from multimodal.models.fusion_vqa import compute_dtype
from multimodal.models.scene_parser import SceneReader
from multimodal.tasks.object_attributes import decode_objects
from multimodal.training import init_params, workdir_config

_HOW = "train one with python -m multimodal.main --config=configs/shapes_scene_parser.py"
_ENCODER = "image_encoder"  # SceneParser's SceneReader: its params' prefix


def resolution(pp_train: str) -> int:
  """The image side a scene-parser run trained at: its pp's `resize(N)`."""
  found = re.search(r"resize\(\s*(\d+)", pp_train)
  if found is None:
    raise ValueError(f"The classifier run's pp_train {pp_train!r} has no resize(N): cannot "
                     "tell its image resolution.")
  return int(found.group(1))


class AttributeClassifier:
  """Attributes:
    resolution: the side of the images it reads (its training resolution).
  Args:
    workdir: the scene-parser run's workdir.
    batch_size: images per compiled call.
  """

  def __init__(self, workdir: str, batch_size: int = 64):
    path = epath.Path(workdir)
    if not (path / workdir_config.FILENAME).exists() or not (path / "checkpoints").is_dir():
      raise FileNotFoundError(f"The attribute classifier's workdir {workdir!r} has no "
                              f"{workdir_config.FILENAME} and checkpoints/: {_HOW}.")
    config = workdir_config.read(workdir)
    if config["model"].get("type") != "scene_parser":
      raise ValueError(f"The attribute classifier's run {workdir!r} trained a "
                       f"{config['model'].get('type')!r} model, not a scene_parser: {_HOW}.")
    self.task = tasks.TASKS.build(config["task"])
    parser = models.MODELS.build(config["model"], **self.task.model_kwargs())
    # The parser's own reader (SceneParser builds the same one), whose `read` also gives the
    # ViT's features.
    self.reader = SceneReader(parser.image, parser.attributes, parser.hidden_dim,
                              dtype=compute_dtype(parser.dtype))
    self.resolution = resolution(config["pp_train"])
    self.batch_size = batch_size
    self.params = self._load(workdir)
    self._forward = jax.jit(self._apply)

  def _load(self, workdir: str) -> Any:
    """The run's latest `image_encoder` params, checked against the reader's."""
    flat = init_params.checkpoint_params(workdir)
    prefix = _ENCODER + "/"
    params = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    images = jnp.zeros((1, self.resolution, self.resolution, 3))
    expected = jax.eval_shape(lambda: nn.meta.unbox(self.reader.init(
        jax.random.key(0), images, train=False, method=SceneReader.read))["params"])
    expected = {k: tuple(v.shape) for k, v in
                traverse_util.flatten_dict(expected, sep="/").items()}
    got = {k: tuple(v.shape) for k, v in params.items()}
    if got != expected:
      wrong = sorted(set(got.items()) ^ set(expected.items()))[:8]
      raise ValueError(f"The classifier checkpoint in {workdir!r} does not fit its config's "
                       f"model: (path, shape) differing: {wrong}.")
    return jax.device_put(traverse_util.unflatten_dict(params, sep="/"))

  def _apply(self, params: Any, images: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """float[B, H, W, 3] in [-1, 1] -> (pooled features float32[B, D], the task's reading)."""
    r = self.resolution
    if images.shape[1:3] != (r, r):
      images = jax.image.resize(images, (images.shape[0], r, r, images.shape[3]), "linear")
    features, reading = self.reader.apply({"params": params}, images, train=False,
                                          method=SceneReader.read)
    pooled = masked_mean(features.tokens.astype(jnp.float32), features.mask)
    return pooled, self.task.predict(reading, {})  # no targets: the reading alone

  def read(self, images: np.ndarray) -> tuple[list[list[dict[str, Any]]], np.ndarray]:
    """float[N, H, W, 3] in [-1, 1] -> (per image the objects found: `decode_objects`'
    dicts, x and y in pixels at `resolution`; pooled features float32[N, D])."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
      raise ValueError(f"The classifier reads square RGB images [N, S, S, 3]; got "
                       f"{images.shape}.")
    found, features = [], []
    for start in range(0, len(images), self.batch_size):
      chunk = images[start:start + self.batch_size]
      n = len(chunk)
      padded = np.concatenate([chunk, np.zeros((self.batch_size - n,) + chunk.shape[1:],
                                               np.float32)])  # one compiled shape
      pooled, reading = jax.device_get(self._forward(self.params, padded))
      found.extend(decode_objects({k: v[:n] for k, v in reading.items()}, self.resolution))
      features.append(pooled[:n])
    return found, np.concatenate(features) if features else np.zeros((0, 0), np.float32)
