"""What a benchmark ran on, recorded beside its numbers.

Step times depend on the machine, and so do the accuracies to a smaller degree: XLA's CPU
kernels differ between processors and releases, so the same config and seed can end a few
points apart on two machines. A table that combines runs made on different machines says so.
"""
from __future__ import annotations

import os
import platform

import jax
import jaxlib


def cpu_model() -> str:
  """The processor's model name (from /proc/cpuinfo on Linux), else platform's guess."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown"


def describe() -> dict[str, str | int]:
  """The host and the accelerator of this process: cpu, cores, devices, jax, jaxlib."""
  devices = jax.devices()
  return {"cpu": cpu_model(), "cores": os.cpu_count() or 0,
          "devices": f"{len(devices)} x {devices[0].device_kind}",
          "jax": jax.__version__, "jaxlib": jaxlib.__version__}


def summary(description: dict[str, str | int]) -> str:
  """One line, e.g. 'AMD EPYC, 2 cores, 1 x cpu, jax 0.10.2'."""
  if not description:
    return "unknown machine"
  return (f"{description.get('cpu', '?')}, {description.get('cores', '?')} cores, "
          f"{description.get('devices', '?')}, jax {description.get('jax', '?')}")
