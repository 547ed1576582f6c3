"""Joining a multi-host run: one process per host, all running the same program.

Settings come from flags or the environment, in this order:
  1. explicit settings (`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`,
     or the variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID): used as given;
  2. `--distributed` with no settings: JAX detects the cluster (Cloud TPU pod slices, SLURM,
     Open MPI, Kubernetes) and finds the coordinator itself;
  3. neither: a single process, nothing to initialise.
"""
from __future__ import annotations

import dataclasses
import os

import jax
from absl import logging


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  auto_detect: bool = False

  @classmethod
  def from_env(cls, auto_detect: bool = False, **flags: str | int | None
               ) -> DistributedSettings:
    """Flag values win; unset ones fall back to JAX_COORDINATOR_ADDRESS etc."""
    def pick(name: str, env: str, cast=str):
      value = flags.get(name)
      if value is None and os.environ.get(env):
        value = os.environ[env]
      return None if value is None else cast(value)
    return cls(coordinator_address=pick("coordinator_address", "JAX_COORDINATOR_ADDRESS"),
               num_processes=pick("num_processes", "JAX_NUM_PROCESSES", int),
               process_id=pick("process_id", "JAX_PROCESS_ID", int),
               auto_detect=auto_detect)

  @property
  def explicit(self) -> bool:
    return any(v is not None for v in
               (self.coordinator_address, self.num_processes, self.process_id))


def initialize(settings: DistributedSettings) -> None:
  """Starts JAX's multi-controller runtime if the settings ask for it (see module doc)."""
  if not (settings.explicit or settings.auto_detect):
    return
  if settings.explicit:
    missing = [name for name in ("coordinator_address", "num_processes", "process_id")
               if getattr(settings, name) is None]
    if missing:
      raise ValueError(f"A multi-host run needs coordinator_address, num_processes and "
                       f"process_id; missing: {', '.join(missing)} (flags --NAME or the "
                       f"variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).")
    if not 0 <= settings.process_id < settings.num_processes:
      raise ValueError(f"process_id {settings.process_id} is not in "
                       f"[0, num_processes={settings.num_processes}).")
  # CPU devices of different processes talk through gloo; GPUs and TPUs ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=settings.coordinator_address,
                             num_processes=settings.num_processes,
                             process_id=settings.process_id)
  logging.info("Process %d of %d; %d local and %d global devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def is_initialized() -> bool:
  """Whether this process joined a multi-host run (and has JAX's preemption service)."""
  return jax.distributed.is_initialized()


def wait_for_all_processes(name: str, timeout_s: float) -> None:
  """A barrier that holds every process until all have reached `name`, for up to `timeout_s`.

  It goes through JAX's coordination service, not through a collective. A collective is the
  wrong tool for a long wait: on CPU the first one sets up gloo, which gives up when another
  process is more than 30 s late (a host still preparing a dataset, for example). Each `name`
  must be used once per run.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # the client has no public accessor
  jax_distributed.global_state.client.wait_at_barrier(name, int(timeout_s * 1000))
