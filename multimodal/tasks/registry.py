"""The task registry: `config.task.type` names one of these.

A task owns everything the trainer must not know: what the model needs from the data
(`model_kwargs`), the loss, and what prediction means. Contrastive, generative and diffusion
tasks plug in here without touching the train loop.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

from multimodal.registry import Registry

Batch = dict[str, jax.Array]


class Task(Protocol):

  def model_kwargs(self) -> dict[str, Any]:
    """Settings the model takes from the data (vocabulary sizes, number of classes)."""

  def loss(self, outputs: Any, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(scalar loss, scalar metrics) for one global batch; runs inside jit."""

  def predict(self, outputs: Any, batch: Batch) -> dict[str, jax.Array]:
    """Per-example predictions; runs inside jit."""


@runtime_checkable
class GenerativeTask(Protocol):
  """A task whose predictions are decoded (many forward passes), not read off one."""

  def generate(self, model: Any, params: Any, batch: Batch) -> dict[str, jax.Array]:
    """Per-example predictions decoded on the device; runs inside jit. For a model with
    state (`TrainState.model_state`), it is also passed as `model_state=` (a dict of
    collections, for `model.apply({"params": params, **model_state}, ...)`)."""


TASKS = Registry("task")
