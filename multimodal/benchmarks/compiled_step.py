"""A config's train step compiled for a mesh from shapes alone (no data, nothing allocated).

What the memory and throughput benchmarks share: the model, task and optimizer built from a
config file as the trainer builds them, synthetic batch shapes, and the step lowered and
compiled with abstract inputs, so that XLA's memory and cost analyses can be read off it.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import statistics
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from absl import flags
from jax.sharding import Mesh
from ml_collections import config_flags

from multimodal import models, tasks
from multimodal.training import sharding
from multimodal.training.optimizer import learning_rate_schedule, make_optimizer
from multimodal.training.train_state import TrainState, abstract_sharded_state
from multimodal.training.train_step import make_train_step

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Preset:
  """A model to measure: a config file (`path[:args]`) and the batch it is fed.

  num_answers, vocab_size: for configs whose vocabularies are a user's files: the model is
  sized as given, and the task's loss built with the packaged vocabularies standing in (the
  loss does not read them).
  """
  config: str
  batch_size: int
  res: int
  max_len: int
  num_answers: int | None = None
  vocab_size: int | None = None


PRESETS: dict[str, Preset] = {
    # The CPU main job's model (width 128, depth 2, conv stem, 8x8 patches).
    "shapes_vqa": Preset("configs/shapes_vqa.py", batch_size=128, res=64, max_len=16),
    # ViT-B/16 image encoder, base text encoder, 4-layer cross-attention fusion; VQAv2-sized
    # answer vocabulary (3129) and a 32k sentencepiece vocabulary.
    "base": Preset("configs/jsonl_vqa.py:variant=base", batch_size=8, res=224, max_len=32,
                   num_answers=3129, vocab_size=32_000),
}


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """`configs/NAME.py[:ARGS]` (relative to the working directory or the repository), with
  `--config.KEY=VALUE` overrides parsed as the main job parses them."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    path = os.path.join(REPO, path)
  module_spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  if not overrides:
    return config
  argv = ["load_config", *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_dict("config", config, flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def with_args(spec: str, config_args: str) -> str:
  """The config spec with more arguments: ("configs/x.py", "b=2") -> "configs/x.py:b=2",
  ("configs/x.py:a=1", "b=2") -> "configs/x.py:a=1,b=2"."""
  if not config_args:
    return spec
  return spec + ("," if ":" in spec else ":") + config_args


@dataclasses.dataclass
class StepSetup:
  """Everything the train step is made of.

  batch: global batch shapes.
  tokens: tokens per example that each top-level module's parameters are applied to (for
    the 6 N D estimate): image patches, question tokens (the fusion's queries), 1 (the head).
  """
  model: nn.Module
  task: Any
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  batch: dict[str, jax.ShapeDtypeStruct]
  tokens: dict[str, int]


def batch_shapes(batch_size: int, res: int, max_len: int, num_answers: int
                 ) -> dict[str, jax.ShapeDtypeStruct]:
  """The VQA model inputs and targets, as the pipeline's pp ops produce them."""
  s = jax.ShapeDtypeStruct
  return {"image": s((batch_size, res, res, 3), np.float32),
          "question_tokens": s((batch_size, max_len), np.int32),
          "question_mask": s((batch_size, max_len), np.bool_),
          "answer_index": s((batch_size,), np.int32),
          "answer_scores": s((batch_size, num_answers), np.float32)}


def random_batch(shapes: dict[str, jax.ShapeDtypeStruct], seed: int = 0
                 ) -> dict[str, np.ndarray]:
  """A synthetic batch of `batch_shapes`: uniform images, random questions and answers."""
  rng = np.random.default_rng(seed)
  batch_size, max_len = shapes["question_tokens"].shape
  num_answers = shapes["answer_scores"].shape[1]
  index = rng.integers(0, num_answers, batch_size).astype(np.int32)
  lengths = rng.integers(1, max_len + 1, (batch_size, 1))
  return {"image": rng.uniform(-1, 1, shapes["image"].shape).astype(np.float32),
          "question_tokens": rng.integers(1, 100, (batch_size, max_len)).astype(np.int32),
          "question_mask": np.arange(max_len)[None] < lengths,
          "answer_index": index,
          "answer_scores": np.eye(num_answers, dtype=np.float32)[index]}


def build(preset: Preset, batch_size: int | None = None, res: int | None = None,
          dtype: str | None = None, config_args: str = "", overrides: Sequence[str] = ()
          ) -> StepSetup:
  """The preset's model, task and optimizer.

  dtype: the compute dtype (None: the config's).
  config_args: more of the config file's arguments, "key=value,...", e.g. "remat=true".
  overrides: `--config.KEY=VALUE` command-line overrides.
  """
  config = load_config(with_args(preset.config, config_args), overrides)
  task_spec = dict(config.task)
  if preset.num_answers is not None:
    task_spec.update(answers="shapes_vqa", tokenizer="shapes")
  task = tasks.TASKS.build(task_spec)
  sizes = task.model_kwargs()
  if preset.num_answers is not None:
    sizes.update(num_answers=preset.num_answers, vocab_size=preset.vocab_size)
  model_spec = dict(config.model)
  if dtype is not None:
    model_spec["dtype"] = dtype
  model = models.MODELS.build(model_spec, **sizes)
  res = res or preset.res
  patches = (res // config.model.image.patch_size) ** 2
  return StepSetup(
      model=model, task=task, optimizer=make_optimizer(config.optimizer, config.total_steps),
      schedule=learning_rate_schedule(config.optimizer, config.total_steps),
      batch=batch_shapes(batch_size or preset.batch_size, res, preset.max_len,
                         sizes["num_answers"]),
      tokens={"image_encoder": patches, "text_encoder": preset.max_len,
              "fusion": preset.max_len, "head": 1})


@dataclasses.dataclass
class LoweredStep:
  """The step lowered for one mesh, with the abstract inputs it was lowered with."""
  lowered: jax.stages.Lowered  # .compile() -> (state, batch) -> (state, metrics)
  state: TrainState  # jax.ShapeDtypeStructs carrying their shardings
  batch: dict[str, jax.ShapeDtypeStruct]

  def model_flops(self) -> float:
    """Floating-point operations in one step of the global batch (forward, backward and
    the optimizer update), counted by XLA on the program before it is partitioned over
    devices: the same for every layout.

    XLA counts a loop's body once: with `scan_layers` a stack counts as one layer, so the
    count is only right for unscanned models. With `remat` it includes the recomputed
    forward passes (hardware, not model, FLOPs).
    """
    return float(self.lowered.cost_analysis()["flops"])


def forward_flops(setup: StepSetup, step: LoweredStep) -> float:
  """XLA's count for the model's forward pass alone on the global batch (training mode)."""
  def forward(params: Any, batch: dict[str, jax.Array]) -> jax.Array:
    return setup.model.apply({"params": params}, batch, train=True,
                             rngs={"dropout": jax.random.key(0)})
  return float(jax.jit(forward).lower(step.state.params, step.batch).cost_analysis()["flops"])


def lower_step(setup: StepSetup, mesh: Mesh, rules: Any = sharding.DEFAULT_RULES
               ) -> LoweredStep:
  """The trainer's train step for `mesh`, lowered with abstract inputs (nothing runs)."""
  state, state_shardings = abstract_sharded_state(setup.model, setup.optimizer, setup.batch,
                                                  mesh, rules)
  batch_sharding = sharding.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
           for k, v in setup.batch.items()}
  step = make_train_step(setup.model, setup.task, setup.optimizer, setup.schedule,
                         jax.random.key(1), state_shardings, batch_sharding,
                         sharding.replicated(mesh))
  return LoweredStep(lowered=step.lower(state, batch), state=state, batch=batch)


def bytes_per_device(tree: Any) -> int:
  """Bytes one device holds of a tree of sharded arrays or ShapeDtypeStructs (the largest
  shard of each leaf: with uneven splits devices differ by at most that)."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


def peak_bytes(compiled: jax.stages.Compiled) -> int:
  """Peak bytes one device holds during the compiled step, by XLA's memory analysis: its
  arguments, outputs and temporaries, less the outputs written in place of (donated)
  arguments."""
  stats = compiled.memory_analysis()
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def median_step_seconds(compiled: jax.stages.Compiled, state: TrainState,
                        batch: dict[str, jax.Array], steps: int, min_seconds: float = 0.0
                        ) -> float:
  """The median time of the compiled train step over at least `steps` steps and
  `min_seconds`, after one warm-up step (the state is donated and carried along)."""
  state, _ = jax.block_until_ready(compiled(state, batch))
  times: list[float] = []
  while len(times) < steps or sum(times) < min_seconds:
    start = time.perf_counter()
    state, _ = jax.block_until_ready(compiled(state, batch))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def num_params(tree: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def six_nd_flops(params: Any, tokens: dict[str, int], batch_size: int) -> float:
  """The usual estimate of a training step's FLOPs: 6 per parameter and token (2 forward,
  4 backward), each top-level module's parameters times the tokens it sees. Embedding tables
  are lookups and are left out; so are attention scores and the fusion's keys and values of
  the image tokens, which makes this an underestimate."""
  total = 0
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    if any(getattr(key, "key", None) == "embedding" for key in path):
      continue
    total += x.size * tokens[path[0].key]
  return 6.0 * batch_size * total


def executed_flops(compiled: jax.stages.Compiled) -> float:
  """XLA's count of floating-point operations one device runs in a compiled (partitioned)
  step; times the devices, it exceeds the model's where work is replicated."""
  return float(compiled.cost_analysis()["flops"])


def parse_layout(layout: str) -> dict[str, int]:
  """"data=2,fsdp=4" -> {"data": 2, "fsdp": 4}; "1" -> one device."""
  if layout == "1":
    return {"data": 1}
  sizes = {}
  for item in layout.split(","):
    axis, _, size = item.partition("=")
    if axis not in sharding.MESH_AXES or not size.isdigit():
      raise ValueError(f"Layout {layout!r}: expected AXIS=SIZE,... over {sharding.MESH_AXES} "
                       "or 1.")
    sizes[axis] = int(size)
  return sizes


def layout_devices(layout: str) -> int:
  return math.prod(parse_layout(layout).values())


def layout_mesh(layout: str) -> Mesh:
  """The mesh of a layout over the first devices it needs."""
  return sharding.make_mesh(parse_layout(layout), jax.devices()[:layout_devices(layout)])
