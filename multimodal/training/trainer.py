"""One train loop for every task: data -> sharded state -> jit step -> evals, logs, checkpoints.

Nothing task-specific lives here: the task gives the loss and predictions, the registries give
the model and the evaluators, and the config says which.
"""
from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from etils import epath

from multimodal import models, tasks
from multimodal.data import pipeline
from multimodal.evaluators import EVALUATORS, EvalContext
from multimodal.training import init_params, preemption, sharding, workdir_config
from multimodal.training.checkpoint import Checkpointer
from multimodal.training.optimizer import learning_rate_schedule, make_optimizer
from multimodal.training.progress import Progress, format_duration
from multimodal.training.task_methods import make_task_fn
from multimodal.training.train_state import create_sharded_state
from multimodal.training.train_step import make_predict, make_train_step


class Trainer:
  """Builds everything a run needs from a config; `train()` and `evaluate()` drive it."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               allow_config_change: bool = False):
    if config.on_nonfinite not in ("stop", "skip"):
      raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {config.on_nonfinite!r}.")
    self.ema_decay = float(config.get("ema_decay") or 0.0)
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"config.ema_decay must be in [0, 1) (0: no EMA), got {self.ema_decay}.")
    self.config = config
    self.workdir = workdir
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)  # local, gs://, ...
    workdir_config.check_and_record(config, workdir, allow_config_change)
    self.mesh = sharding.make_mesh(config.mesh)
    self.rules = tuple(tuple(rule) for rule in config.partition_rules)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    self.task = tasks.TASKS.build(config.task, offered=dict(mesh=self.mesh))
    self.model = models.MODELS.build(config.model, **self.task.model_kwargs())
    self.builder = pipeline.get_builder(config.data)
    pipeline.log_dataset(self.builder)
    self.local_batch_size = pipeline.host_batch_size(config.batch_size)
    self.optimizer = make_optimizer(config.optimizer, config.total_steps)
    self.checkpointer = Checkpointer(str(epath.Path(workdir) / "checkpoints"),
                                     config.checkpoint.every_steps, config.checkpoint.keep)
    rng = jax.random.key(config.seed)
    self.state, self.state_shardings = create_sharded_state(
        self.model, self.optimizer, self._example_batch(), jax.random.fold_in(rng, 0),
        self.mesh, self.rules, ema=self.ema_decay > 0)
    logging.info("Model %s: %s parameters.", config.model.type,
                 f"{sum(x.size for x in jax.tree.leaves(self.state.params)):,}")
    replicated = sharding.replicated(self.mesh)
    self.train_step = make_train_step(
        self.model, self.task, self.optimizer,
        learning_rate_schedule(config.optimizer, config.total_steps),
        jax.random.fold_in(rng, 1), self.state_shardings, self.batch_sharding, replicated,
        grad_accum_steps=config.grad_accum_steps,
        frozen=tuple(config.optimizer.get("frozen", ())), ema_decay=self.ema_decay)
    predict = make_predict(self.model, self.task, self.state_shardings.eval_variables(),
                           self.batch_sharding, replicated)
    context = EvalContext(builder=self.builder, task=self.task, predict=predict,
                          batch_sharding=self.batch_sharding, workdir=workdir,
                          task_fn=make_task_fn(self.model, self.task,
                                               self.state_shardings.eval_variables(),
                                               self.batch_sharding, replicated))
    self.evaluators = {name: EVALUATORS.build(spec, context=context, name=name)
                       for name, spec in config.evals.items()}
    self.writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0)

  def _dataset(self, skip_batches: int = 0):
    return pipeline.make_dataset(
        self.builder, split=self.config.data.split, pp=self.config.pp_train,
        batch_size=self.local_batch_size, train=True, seed=self.config.seed,
        shuffle_buffer=self.config.data.shuffle_buffer, skip_batches=skip_batches,
        num_shards=self.config.data.num_shards, where=self.config.data.get("where"))

  def _example_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    """Global-batch shapes of the model inputs, read off the pipeline without running it."""
    spec = self._dataset().element_spec
    return {k: jax.ShapeDtypeStruct((self.config.batch_size,) + tuple(v.shape[1:]),
                                    v.dtype.as_numpy_dtype)
            for k, v in spec.items() if v.dtype.is_floating or v.dtype.is_integer
            or v.dtype.is_bool}

  def restore(self, step: int | None = None) -> int:
    """Restores the latest (or given) checkpoint if any; returns the step it holds."""
    if step is None and self.checkpointer.latest_step() is None:
      return 0
    self.state = self.checkpointer.restore(self.state, step)
    step = int(self.state.step)
    logging.info("Restored the checkpoint at step %d from %s.", step,
                 self.checkpointer.directory)
    return step

  def train(self, stop_at: int | None = None) -> int:
    """Trains from the latest checkpoint to `total_steps`; returns the last step trained.

    stop_at: end this call after that step (saving a checkpoint there); a later call resumes.
    Raises:
      preemption.Preempted: after a SIGTERM, once the current step's checkpoint is saved.
      FloatingPointError: (on_nonfinite="stop") at a step whose loss or gradients are not
        finite; no checkpoint after the last good step is written.
    """
    config = self.config
    end = config.total_steps if stop_at is None else min(stop_at, config.total_steps)
    start = self.restore()
    if start == 0 and config.init.params:
      # With init.load, also the model state under the loaded prefixes (e.g. a frozen
      # tokenizer's codebook); else params only, the model state keeps its initialisation.
      load = config.init.get("load", ())
      params = init_params.merge(self.state.params, init_params.load_flat(config.init.params),
                                 config.init.skip, load)
      model_state = self.state.model_state
      if load and model_state:
        model_state = init_params.merge_model_state(
            model_state, init_params.load_model_state(config.init.params), config.init.skip,
            load)
      # The EMA starts at the loaded params: a copy, as the train step donates the state's
      # buffers (one buffer cannot be donated twice).
      ema = None if self.state.ema_params is None else jax.tree.map(jnp.copy, params)
      self.state = self.state.replace(params=params, ema_params=ema, model_state=model_state)
      logging.info("Initialised the params from %s (loaded: %s; kept random: %s).",
                   config.init.params, list(config.init.get("load", ())) or "all",
                   list(config.init.skip) or "none")
    if start >= end:
      logging.info("The run already reached step %d of %d: evaluating only.", start,
                   config.total_steps)
      return start
    batches = self._dataset(skip_batches=start).as_numpy_iterator()
    progress = Progress(start, config.total_steps)
    pending: list[tuple[int, dict[str, jax.Array]]] = []
    t0 = time.perf_counter()
    try:
      with preemption.StopSignal() as stop_signal:
        for step in range(start + 1, end + 1):
          batch = pipeline.to_global(next(batches), self.batch_sharding)
          self.state, metrics = self.train_step(self.state, batch)
          pending.append((step, metrics))
          preempted = stop_signal.requested(step)
          saving = preempted or step == end or self.checkpointer.due(step)
          if saving or step % config.log_every_steps == 0:
            self._log_train_metrics(jax.device_get(pending), progress)
            pending = []
          for name, evaluator in self.evaluators.items():
            if (evaluator.every_steps and step % evaluator.every_steps == 0
                and step < config.total_steps):
              tic = time.perf_counter()
              self._write_eval(step, self._run_eval(name, step))
              progress.pause(time.perf_counter() - tic)
          if saving:
            self.checkpointer.save(step, self.state)
          if preempted:
            self.checkpointer.wait()
            self.writer.flush()
            raise preemption.Preempted(step, self.checkpointer.directory)
    finally:
      # Stop tf.data's threads now: on a preemption the exception's traceback would keep
      # the iterator alive until interpreter exit, where destroying it can abort the
      # process ("terminate called without an active exception") after the save.
      batches = None
    self.checkpointer.wait()
    logging.info("Trained steps %d to %d in %s.", start + 1, end,
                 format_duration(time.perf_counter() - t0))
    return end

  def _log_train_metrics(self, steps: list[tuple[int, dict[str, np.ndarray]]],
                         progress: Progress) -> None:
    """Writes the means over `steps` of each metric; acts on non-finite steps among them."""
    bad = [(step, m) for step, m in steps if m["nonfinite"]]
    if bad and self.config.on_nonfinite == "stop":
      self.checkpointer.wait()
      step, m = bad[0]
      names = ", ".join(f"{k}={float(v)}" for k, v in sorted(m.items())
                        if not np.isfinite(v))
      raise FloatingPointError(
          f"Non-finite values at step {step}: {names}. The run stopped; its last good "
          f"checkpoint is step {self.checkpointer.latest_step()} in "
          f"{self.checkpointer.directory}. (on_nonfinite='skip' skips such steps instead.)")
    if bad:
      logging.warning("Skipped non-finite steps %s (%d skipped so far in this run).",
                      [step for step, _ in bad], int(steps[-1][1]["skipped_steps"]))
    good = [m for _, m in steps if not m["nonfinite"]] or [m for _, m in steps]
    means = {k: float(np.mean([m[k] for m in good])) for k in good[0] if k != "nonfinite"}
    means["skipped_steps"] = float(steps[-1][1]["skipped_steps"])
    step = steps[-1][0]
    means.update(progress.report(step, means))
    self.writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})

  def _run_eval(self, name: str, step: int) -> dict[str, float]:
    evaluator = self.evaluators[name]
    metrics = evaluator.run(self.state.eval_variables(), step)
    self._write_eval_images(name, step)
    # Keyed by the evaluator's name (by convention its split, e.g. "validation").
    return {f"{name}/{self.config.evals[name].type}/{k}": v for k, v in metrics.items()}

  def _write_eval_images(self, name: str, step: int) -> None:
    """Writes what the evaluator drew in its last run (`evaluator.images`: name ->
    uint8[N, H, W, 3], e.g. a sample grid), if anything, as TensorBoard images."""
    images = getattr(self.evaluators[name], "images", None)
    if images:
      prefix = f"{name}/{self.config.evals[name].type}"
      self.writer.write_images(step, {f"{prefix}/{k}": v for k, v in images.items()})

  def _write_eval(self, step: int, metrics: dict[str, float]) -> None:
    self.writer.write_scalars(step, metrics)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "num_examples" not in k)
    logging.info("eval at step %d: %s", step, shown)

  def evaluate(self, step: int) -> dict[str, float]:
    """Runs every evaluator, writes WORKDIR/results.json, and returns its contents."""
    results: dict[str, float] = {"step": step}
    for name in self.evaluators:
      results.update(self._run_eval(name, step))
    self._write_eval(step, {k: v for k, v in results.items() if k != "step"})
    self.writer.flush()
    if jax.process_index() == 0:
      path = epath.Path(self.workdir) / "results.json"
      path.write_text(json.dumps(results, indent=2, sort_keys=True))
      logging.info("Wrote %s", path)
    return results

  def close(self) -> None:
    self.checkpointer.close()
    self.writer.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       allow_config_change: bool = False) -> dict[str, float]:
  """The main job: train (or resume) to `total_steps`, evaluate, write results.json."""
  trainer = Trainer(config, workdir, allow_config_change)
  try:
    return trainer.evaluate(trainer.train())
  finally:
    trainer.close()


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: int | None = None, allow_config_change: bool = False
                        ) -> dict[str, float]:
  """Evaluation only: restores the latest (or given) checkpoint in the workdir."""
  trainer = Trainer(config, workdir, allow_config_change)
  try:
    if step is None and trainer.checkpointer.latest_step() is None:
      raise FileNotFoundError(f"No checkpoint to evaluate in {trainer.checkpointer.directory}.")
    return trainer.evaluate(trainer.restore(step))
  finally:
    trainer.close()
