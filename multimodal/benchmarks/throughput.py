"""Train-step throughput (examples/s) and model FLOPs utilisation (MFU) per model and layout.

  nice -n 5 python -m multimodal.benchmarks.throughput

For each preset model (`compiled_step.PRESETS`) and device layout: the compiled train step on
a random batch already on the devices, timed after a warm-up step (the median of at least
--steps steps and --min_seconds); model FLOPs per step (XLA's count of the whole step,
forward, backward and optimizer, before it is partitioned); and MFU = model FLOPs / step time
/ peak, the peak being a large matmul's FLOP/s measured here in the same dtype. (XLA counts
a scanned stack's layers once: leave --config_args without scan=true for MFU.)

Each device count runs in its own subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=N, so that one command covers 1 and 8
simulated CPU devices. Simulated devices share the machine's cores: the peak is the
machine's, measured on one device and with a matmul sharded over all N, the larger used.
On a GPU (one device; the layouts that need more are skipped), ViT-B/16 in bfloat16 against
a bfloat16 matmul large enough to time:

  python -m multimodal.benchmarks.throughput --preset=base --layout=1 --dtype=bfloat16 \\
      --batch_size=64 --peak_size=8192
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from multimodal.benchmarks import compiled_step  # noqa: E402
from multimodal.training import sharding  # noqa: E402
from multimodal.training.train_state import create_sharded_state  # noqa: E402

LAYOUTS = ["1", "data=8", "fsdp=8", "data=2,fsdp=4", "data=4,model=2", "data=2,fsdp=2,model=2"]

_PRESETS = flags.DEFINE_list("preset", list(compiled_step.PRESETS), "Models to measure.")
_LAYOUTS = flags.DEFINE_multi_string("layout", LAYOUTS, "Device layouts ('1': one device; "
                                     "'data=2,fsdp=4': a mesh), repeat the flag for several.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Compute dtype of the models and of the peak matmul.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Global batch (0: each preset's).")
_RES = flags.DEFINE_integer("res", 0, "Image resolution (0: each preset's).")
_CONFIG_ARGS = flags.DEFINE_string(
    "config_args", "", "More arguments for the config file, e.g. 'remat=true,scan=true'.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps at least, after one warm-up step.")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 10.0, "Time steps for at least this long.")
_PEAK_SIZE = flags.DEFINE_integer("peak_size", 2048, "N of the N x N x N peak matmul.")
_MEMORY_FRACTION = flags.DEFINE_float(
    "memory_fraction", 0.8, "Skip a layout whose devices together need more than this "
    "fraction of the available host memory (simulated CPU devices share it).")
_DEVICE_COUNT = flags.DEFINE_integer("device_count", 0, "Internal: measure the layouts with "
                                     "this many devices in this process (0: all, in children).")

RESULT = "RESULT "  # the prefix of a child's result lines on stdout


def matmul_peak(devices: list[jax.Device], size: int, dtype: str, repeats: int = 8) -> float:
  """GFLOP/s of a size^3 matmul, rows split over `devices` (best of `repeats`)."""
  mesh = Mesh(np.asarray(devices), ("d",))
  rows, whole = NamedSharding(mesh, PartitionSpec("d")), NamedSharding(mesh, PartitionSpec())
  keys = jax.random.split(jax.random.key(0))
  a = jax.device_put(jax.random.normal(keys[0], (size, size), dtype), rows)
  b = jax.device_put(jax.random.normal(keys[1], (size, size), dtype), whole)
  matmul = jax.jit(jnp.dot, out_shardings=rows)
  matmul(a, b).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best / 1e9


def available_memory() -> int:
  """Bytes of host memory available now (Linux; otherwise no limit)."""
  try:
    with open("/proc/meminfo") as f:
      info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024
  except (OSError, KeyError):
    return sys.maxsize


def measure(preset: str, setup: compiled_step.StepSetup, layout: str) -> dict[str, Any]:
  """Compiles, initialises and times one preset on one layout."""
  row: dict[str, Any] = {"preset": preset, "layout": layout,
                         "devices": compiled_step.layout_devices(layout),
                         "batch": setup.batch["image"].shape[0]}
  if row["devices"] > jax.device_count():
    return dict(row, skipped=f"needs {row['devices']} devices, {jax.device_count()} here")
  mesh = compiled_step.layout_mesh(layout)
  start = time.perf_counter()
  lowered = compiled_step.lower_step(setup, mesh)
  compiled = lowered.lowered.compile()
  row["compile_s"] = time.perf_counter() - start
  row["model_flops"] = lowered.model_flops()
  row["executed_flops"] = compiled_step.executed_flops(compiled) * row["devices"]
  if jax.devices()[0].platform == "cpu":
    needed = compiled_step.peak_bytes(compiled) * row["devices"]
    if needed > _MEMORY_FRACTION.value * available_memory():
      return dict(row, skipped=f"needs {needed / 2**30:.0f} GiB of host memory")
  state, _ = create_sharded_state(setup.model, setup.optimizer, setup.batch,
                                  jax.random.key(0), mesh, sharding.DEFAULT_RULES)
  batch = jax.device_put(compiled_step.random_batch(setup.batch),
                         sharding.batch_sharding(mesh))
  row["step_s"] = compiled_step.median_step_seconds(compiled, state, batch, _STEPS.value,
                                                    _MIN_SECONDS.value)
  logging.info("%s", row)
  return row


def run_layouts(device_count: int) -> None:
  """The child: this process's device count's peak and layouts, as RESULT lines."""
  def emit(record: dict[str, Any]) -> None:
    print(RESULT + json.dumps(record), flush=True)

  devices = jax.devices()[:device_count]
  emit({"peak": matmul_peak(devices, _PEAK_SIZE.value, _DTYPE.value),
        "devices": len(devices), "platform": devices[0].platform,
        "device_kind": devices[0].device_kind})
  layouts = [layout for layout in _LAYOUTS.value
             if compiled_step.layout_devices(layout) == device_count]
  for name in _PRESETS.value:
    setup = compiled_step.build(compiled_step.PRESETS[name], _BATCH_SIZE.value or None,
                                _RES.value or None, _DTYPE.value, _CONFIG_ARGS.value)
    if device_count == 1:  # the per-preset facts, once
      lowered = compiled_step.lower_step(setup, compiled_step.layout_mesh("1"))
      emit({"preset": name, "params": compiled_step.num_params(lowered.state.params),
            "model_flops": lowered.model_flops(),
            "forward_flops": compiled_step.forward_flops(setup, lowered),
            "six_nd": compiled_step.six_nd_flops(lowered.state.params, setup.tokens,
                                                 setup.batch["image"].shape[0])})
    for layout in layouts:
      emit(measure(name, setup, layout))


def run_children() -> list[dict[str, Any]]:
  """One subprocess per device count, with that many simulated CPU devices."""
  records = []
  for count in sorted({compiled_step.layout_devices(layout) for layout in _LAYOUTS.value}):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                        f" --xla_force_host_platform_device_count={count}").strip()
    cmd = [sys.executable, "-m", "multimodal.benchmarks.throughput", *sys.argv[1:],
           f"--device_count={count}"]
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    records += [json.loads(line[len(RESULT):]) for line in out.splitlines()
                if line.startswith(RESULT)]
  return records


def report(records: list[dict[str, Any]]) -> str:
  peaks = [r for r in records if "peak" in r]
  peak = max(r["peak"] for r in peaks)
  facts = [r for r in records if "params" in r]
  kind = peaks[0]["device_kind"]
  lines = [f"\nmatmul peak ({_DTYPE.value}, {_PEAK_SIZE.value}^3, {kind}): " + ", ".join(
      f"{r['peak']:,.0f} GFLOP/s on {r['devices']} device(s)" for r in peaks) +
           f"; MFU against {peak:,.0f} GFLOP/s",
           "", ("| model | layout | batch | compile (s) | step (s) | examples/s | "
                "model GFLOP/step | XLA GFLOP/step, all devices | GFLOP/s | MFU |"),
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in records:
    if "layout" not in r:
      continue
    cells = [r["preset"], "1 device" if r["layout"] == "1" else r["layout"], str(r["batch"])]
    if "skipped" in r:
      cells += [f"{r['compile_s']:.0f}" if "compile_s" in r else "", f"skipped: {r['skipped']}"]
      cells += [""] * 5
    else:
      achieved = r["model_flops"] / r["step_s"] / 1e9
      cells += [f"{r['compile_s']:.0f}", f"{r['step_s']:.3f}", f"{r['batch'] / r['step_s']:,.1f}",
                f"{r['model_flops'] / 1e9:,.1f}", f"{r['executed_flops'] / 1e9:,.1f}",
                f"{achieved:,.1f}", f"{achieved / peak:.1%}"]
    lines.append("| " + " | ".join(cells) + " |")
  for f in facts:
    lines.append(f"\n{f['preset']}: {f['params'] / 1e6:,.1f}M parameters; model FLOPs/step "
                 f"{f['model_flops'] / 1e9:,.1f} G = {f['model_flops'] / f['forward_flops']:.2f}"
                 f" x the forward pass ({f['forward_flops'] / 1e9:,.1f} G) = "
                 f"{f['model_flops'] / f['six_nd']:.2f} x the 6 N D estimate "
                 f"({f['six_nd'] / 1e9:,.1f} G).")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  if _DEVICE_COUNT.value:
    run_layouts(_DEVICE_COUNT.value)
    return
  start, load = time.perf_counter(), os.getloadavg()[0]
  records = run_children()
  print(report(records))
  # Other processes on the machine slow the steps and the peak matmul alike.
  print(f"\n(total {time.perf_counter() - start:.0f} s; load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
  app.run(main)
