"""Memory per device of a model's train step on several meshes, from XLA's compiled memory
analysis: nothing is allocated or run, so a base-size model's report takes minutes on a CPU.

  python -m multimodal.benchmarks.memory

For each layout the trainer's step is lowered with abstract inputs (shapes and shardings) and
compiled, and the table gives per device: the step's arguments (params + optimizer state +
batch), of which params + optimizer state summed from the shards of the state's shardings,
XLA's temporaries (activations kept for the backward pass, gradients, ...), the outputs (the
new state, written in place of the donated one), and params + optimizer state against one
device: under FSDP it falls as 1/N. Runs on 8 simulated CPU devices unless XLA_FLAGS says
otherwise; the temporaries are the CPU compiler's (a GPU or TPU compiler fuses differently).
"""
from __future__ import annotations

import os
import time

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

from multimodal.benchmarks import compiled_step  # noqa: E402

LAYOUTS = ["1", "fsdp=2", "fsdp=4", "fsdp=8", "data=8", "fsdp=4,model=2"]

_PRESET = flags.DEFINE_enum("preset", "base", list(compiled_step.PRESETS), "The model.")
_LAYOUTS = flags.DEFINE_multi_string("layout", LAYOUTS, "Device layouts ('1': one device; "
                                     "'fsdp=4,model=2': a mesh), repeat the flag for several.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch (0: the preset's).")
_RES = flags.DEFINE_integer("res", 0, "Image resolution (0: the preset's).")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"],
                           "Compute dtype (default: the config's).")
_CONFIG_ARGS = flags.DEFINE_string(
    "config_args", "", "More arguments for the config file, e.g. 'remat=true,scan=true'.")

MIB = 2**20


def memory_row(setup: compiled_step.StepSetup, layout: str) -> dict[str, float]:
  """Per-device bytes of the step on `layout`, from the compiled step and the shardings."""
  step = compiled_step.lower_step(setup, compiled_step.layout_mesh(layout))
  stats = step.lowered.compile().memory_analysis()
  return {"arguments": stats.argument_size_in_bytes,
          "state": compiled_step.bytes_per_device((step.state.params, step.state.opt_state)),
          "batch": compiled_step.bytes_per_device(step.batch),
          "temp": stats.temp_size_in_bytes, "output": stats.output_size_in_bytes,
          "aliased": stats.alias_size_in_bytes}


def main(argv: list[str]) -> None:
  del argv
  preset = compiled_step.PRESETS[_PRESET.value]
  setup = compiled_step.build(preset, _BATCH_SIZE.value or None, _RES.value or None,
                              _DTYPE.value, _CONFIG_ARGS.value)
  rows = {}
  for layout in _LAYOUTS.value:
    start = time.perf_counter()
    rows[layout] = memory_row(setup, layout)
    print(f"{layout}: compiled in {time.perf_counter() - start:.0f} s", flush=True)
  image = setup.batch["image"].shape
  args = f" + {_CONFIG_ARGS.value}" if _CONFIG_ARGS.value else ""
  print(f"\n{_PRESET.value} ({preset.config}{args}, compute {setup.model.dtype}), batch "
        f"{image[0]} at {image[1]}x{image[2]}; MiB per device, "
        f"{jax.devices()[0].device_kind}:\n")
  print("| layout | devices | arguments | of which params + opt state | of which batch | "
        "temp | output (in place) | params + opt vs the first row |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|")
  reference = next(iter(rows.values()))["state"]
  for layout, r in rows.items():
    print(f"| {'1 device' if layout == '1' else layout} | "
          f"{compiled_step.layout_devices(layout)} | "
          f"{r['arguments'] / MIB:,.0f} | {r['state'] / MIB:,.0f} | {r['batch'] / MIB:,.1f} | "
          f"{r['temp'] / MIB:,.0f} | {r['output'] / MIB:,.0f} ({r['aliased'] / MIB:,.0f}) | "
          f"{r['state'] / reference:.3f} (1/{reference / r['state']:.2f}) |")


if __name__ == "__main__":
  app.run(main)
