"""Text-to-image evaluation: does the picture show what the prompt says, how close are the
pictures to real ones, and does the model use its prompt at all.

  - "text_to_image": generates images for the fixed prompt set (`data/shapes/t2i_prompts.py`)
    with `task.generate_images`, reads them with the attribute classifier (a scene-parser run,
    `attribute_classifier.py`) and reports the prompt-match accuracy (`prompt_match.py`) per
    prompt kind, the same matcher's accuracy on true renderings of the prompts (the
    classifier's ceiling), FID in the classifier's feature space against real validation
    images and real against real (the floor); writes a sample grid (prompts x samples).
  - "conditioning": the validation loss with the true, a shuffled and the empty prompt
    (`task.conditioning_losses`), no sampling needed.
Both call task methods through `EvalContext.task_fn`, which the trainer compiles.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Protocol, Sequence

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from multimodal.data import pipeline
from multimodal.data.builders.shapes_common import encode_png
from multimodal.data.shapes import t2i_prompts
from multimodal.data.shapes.render import render
from multimodal.evaluators import common, fid, prompt_match
from multimodal.evaluators.attribute_classifier import AttributeClassifier
from multimodal.evaluators.registry import EVALUATORS, EvalContext


class Reader(Protocol):
  """What judges images (`AttributeClassifier` is one)."""
  resolution: int  # the side of the images it reads; the objects' x, y are in its pixels

  def read(self, images: np.ndarray) -> tuple[list[list[dict[str, Any]]], np.ndarray]:
    """float[N, S, S, 3] in [-1, 1] -> (per image the objects found, features float[N, D])."""


def task_method(context: EvalContext, evaluator: str, method: str) -> Callable[..., Any]:
  """The compiled `task.METHOD` (variables, global batch, rng) -> outputs, or a clear error."""
  if not hasattr(context.task, method):
    raise ValueError(f"The {evaluator} evaluator calls task.{method}; the task "
                     f"{type(context.task).__name__} has none.")
  if context.task_fn is None:
    raise ValueError(f"The {evaluator} evaluator needs EvalContext.task_fn (the trainer's "
                     "compiled task methods).")
  return context.task_fn(method)


def to_unit(images: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [-1, 1], as the `value_range(-1, 1)` op maps them."""
  return images.astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
  return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def read_matches(prompts: Sequence[t2i_prompts.Prompt], images: np.ndarray, reader: Reader
                 ) -> tuple[list[bool], np.ndarray]:
  """Image i shows prompts[i]? -> (matched per image, the reader's features float[N, D])."""
  found, features = reader.read(images)
  return ([prompt_match.matches(p.spec, f, reader.resolution) for p, f in zip(prompts, found)],
          features)


def real_accuracy(prompts: Sequence[t2i_prompts.Prompt], reader: Reader, image_size: int
                  ) -> dict[str, float]:
  """The matcher's accuracy on true pictures of the prompts (each prompt's own scene rendered
  at image_size px, without noise, as shapes_captions renders): the ceiling of prompt_match
  for this reader. Keys `classifier_accuracy` and `classifier_accuracy/{kind}`."""
  images = np.stack([render(t2i_prompts.scaled(p.scene, image_size)) for p in prompts])
  matched, _ = read_matches(prompts, to_unit(images), reader)
  return prompt_match.accuracy([p.kind for p in prompts], matched, "classifier_accuracy")


def sample_grid(images: np.ndarray, gap: int = 2) -> np.ndarray:
  """uint8[R, C, H, W, 3] -> uint8[R * (H + gap) - gap, C * (W + gap) - gap, 3]: row r holds
  the C images of prompt r, on white."""
  rows, cols, h, w, _ = images.shape
  grid = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
  for r in range(rows):
    for c in range(cols):
      grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = images[r, c]
  return grid


@EVALUATORS.register("text_to_image")
class TextToImageEvaluator:
  """Reports `prompt_match` and `prompt_match/{kind}` (generated images the classifier reads
  as showing exactly what their prompt says), `classifier_accuracy` (/{kind}: the same on
  true renderings of the prompts, the ceiling), `fid` (generated against real images, in the
  classifier's pooled-feature space), `fid_real_floor` (the real images' two halves, every
  other image, against each other), `num_images` and `num_real`. Writes
  WORKDIR/samples/NAME_stepSTEP.png (rows: prompts, columns: samples) and .txt (the rows'
  prompts), and keeps the grid in `images` for the trainer's TensorBoard writer.

  Args:
    classifier_workdir: a configs/shapes_scene_parser.py run's workdir.
    real_pp: preprocessing of the real split into `image` float[S, S, 3] in [-1, 1] at the
      resolution the model generates, e.g. "decode|resize(32)|value_range(-1, 1)|keep('image')".
    real_split, max_real: the real images (the first max_real; None: all).
    prompts_per_kind: prompts of each kind (`t2i_prompts.KINDS`); prompt_seed: their seed.
    samples_per_prompt: images generated per prompt.
    batch_size: global batch of prompts per `generate_images` call.
    tokenizer, max_len: the prompts' tokenization (the training pp's `tok` settings).
    grid_prompts_per_kind, grid_samples: the grid's rows per kind and columns (at most
      prompts_per_kind and samples_per_prompt).
    seed: the sampling seed (each batch folds in its index).
    classifier_batch_size: images per classifier call.
    every_steps: how often the trainer runs it (0: only at the end).
  """

  def __init__(self, context: EvalContext, name: str, classifier_workdir: str, real_pp: str,
               real_split: str = "validation", max_real: int | None = None,
               prompts_per_kind: int = 20, samples_per_prompt: int = 4, batch_size: int = 64,
               tokenizer: str = "shapes_vl", max_len: int = 24, grid_prompts_per_kind: int = 2,
               grid_samples: int = 8, seed: int = 0,
               prompt_seed: int = t2i_prompts.DEFAULT_SEED, classifier_batch_size: int = 64,
               every_steps: int = 0):
    if samples_per_prompt < 1:
      raise ValueError(f"{name}: samples_per_prompt must be at least 1, got "
                       f"{samples_per_prompt}.")
    self.context = context
    self.name = name
    self.every_steps = every_steps
    self.generate = task_method(context, name, "generate_images")
    self.classifier = AttributeClassifier(classifier_workdir, classifier_batch_size)
    self.prompts = t2i_prompts.prompt_set(prompts_per_kind, prompt_seed)
    self.tokens, self.mask = t2i_prompts.tokenize([p.text for p in self.prompts], max_len,
                                                  tokenizer)
    self.samples = samples_per_prompt
    self.batch_size = batch_size
    self.seed = seed
    self.real_split = real_split if max_real is None else f"{real_split}[:{max_real}]"
    self.real_pp = real_pp
    # The prompt set holds prompts_per_kind of each kind in turn: the first few of each.
    self.grid_rows = [k * prompts_per_kind + j for k in range(len(t2i_prompts.KINDS))
                      for j in range(min(grid_prompts_per_kind, prompts_per_kind))]
    self.grid_cols = min(grid_samples, samples_per_prompt)
    self.images: dict[str, np.ndarray] = {}  # the last run's grid, for TensorBoard
    self._real_features: np.ndarray | None = None
    self._real_size: int | None = None  # this host's real images' side
    self._ceiling: dict[int, dict[str, float]] = {}  # by the generated images' size

  def _generated(self, variables: Any) -> np.ndarray:
    """float32[P * samples, S, S, 3]: row p * samples + s is sample s of prompt p."""
    rows = np.repeat(np.arange(len(self.prompts)), self.samples)
    local = pipeline.host_batch_size(self.batch_size)
    start = jax.process_index() * local
    out = []
    for b, first in enumerate(range(0, len(rows), self.batch_size)):
      ids = rows[np.minimum(np.arange(first, first + self.batch_size), len(rows) - 1)]
      ids = ids[start:start + local]  # this host's share; the tail repeats the last row
      batch = pipeline.to_global({"text_tokens": self.tokens[ids], "text_mask": self.mask[ids]},
                                 self.context.batch_sharding)
      rng = jax.random.fold_in(jax.random.key(self.seed), b)
      images = np.asarray(self.generate(variables, batch, rng), np.float32)
      out.append(images[:min(self.batch_size, len(rows) - first)])
    images = np.concatenate(out)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
      raise ValueError(f"{self.name}: generate_images must give float[B, S, S, 3]; got "
                       f"{images.shape}.")
    return images

  def _real(self) -> np.ndarray:
    """The real images' classifier features float[N, D] (every host's; read once)."""
    if self._real_features is None:
      ds = pipeline.make_dataset(self.context.builder, split=self.real_split, pp=self.real_pp,
                                 batch_size=pipeline.host_batch_size(self.batch_size),
                                 train=False)
      features = []
      for batch in ds.as_numpy_iterator():
        self._real_size = batch["image"].shape[1]
        features.append(self.classifier.read(batch["image"])[1])
      local = np.concatenate(features) if features else np.zeros((0, 0), np.float32)
      self._real_features = common.allgather_rows(local)
      if len(self._real_features) < 4:
        raise ValueError(f"{self.name}: FID needs at least 4 real images; "
                         f"{self.real_split} gave {len(self._real_features)}.")
    return self._real_features

  def run(self, variables: Any, step: int) -> dict[str, float]:
    images = self._generated(variables)
    prompts = [self.prompts[i] for i in np.repeat(np.arange(len(self.prompts)), self.samples)]
    matched, features = read_matches(prompts, images, self.classifier)
    metrics = prompt_match.accuracy([p.kind for p in prompts], matched)
    size = images.shape[1]
    if size not in self._ceiling:
      self._ceiling[size] = real_accuracy(self.prompts, self.classifier, size)
    real = self._real()
    if self._real_size not in (None, size):
      raise ValueError(f"{self.name}: real_pp gives {self._real_size}-px images, the model "
                       f"generates {size}-px ones; FID compares them at the same size.")
    metrics.update(self._ceiling[size], fid=fid.fid(features, real),
                   fid_real_floor=fid.fid(real[0::2], real[1::2]),
                   num_images=float(len(images)), num_real=float(len(real)))
    self._write_grid(images, step)
    return metrics

  def _write_grid(self, images: np.ndarray, step: int) -> None:
    """WORKDIR/samples/NAME_stepSTEP.png (and .txt, the rows' prompts); `images`."""
    cells = to_uint8(images).reshape(len(self.prompts), self.samples, *images.shape[1:])
    grid = sample_grid(cells[self.grid_rows, :self.grid_cols])
    self.images = {"samples": grid[None]}
    if jax.process_index() != 0:
      return
    folder = epath.Path(self.context.workdir) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{self.name}_step{step}.png"
    path.write_bytes(encode_png(grid))
    path.with_suffix(".txt").write_text(
        "".join(f"{self.prompts[i].text}\n" for i in self.grid_rows))
    logging.info("Wrote the sample grid %s", path)


@EVALUATORS.register("conditioning")
class ConditioningEvaluator(common.SplitEvaluator):
  """Reports `loss_true`, `loss_shuffled`, `loss_empty`: the means over the split's full
  batches of `task.conditioning_losses` (the validation loss with each example's own prompt,
  with the prompts rolled by one row, with the empty prompt), and `num_batches`. A partial
  last batch is left out (the task's losses are batch means, with no mask for padding).

  Args: as `common.SplitEvaluator`'s (pp gives the training inputs: image, text_tokens,
    text_mask), and seed: the losses' noise (each batch folds in its index).
  """

  def __init__(self, context: EvalContext, name: str, split: str, pp: str, batch_size: int,
               every_steps: int = 0, max_examples: int | None = None, seed: int = 0):
    super().__init__(context, name, split, pp, batch_size, every_steps, max_examples)
    self.losses = task_method(context, name, "conditioning_losses")
    self.seed = seed

  def run(self, variables: Any, step: int) -> dict[str, float]:
    del step
    local = pipeline.host_batch_size(self.batch_size)
    ds = pipeline.make_dataset(self.context.builder, split=self.split, pp=self.pp,
                               batch_size=local, train=False)
    totals: dict[str, float] = collections.defaultdict(float)
    batches = 0
    for batch in common.padded_batches(ds.as_numpy_iterator(), local):
      if not multihost_utils.process_allgather(np.int32(batch.pop("_valid").all())).all():
        break  # the last, partial batch (on some host)
      rng = jax.random.fold_in(jax.random.key(self.seed), batches)
      losses = jax.device_get(self.losses(
          variables, pipeline.to_global(batch, self.context.batch_sharding), rng))
      for key, value in losses.items():
        totals[key] += float(value)
      batches += 1
    if not batches:
      raise ValueError(f"{self.name}: {self.split} has no full batch of {self.batch_size}.")
    return {**{f"loss_{k}": v / batches for k, v in totals.items()},
            "num_batches": float(batches)}
