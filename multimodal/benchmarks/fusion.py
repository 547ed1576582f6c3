"""Fusion benchmark: every fusion module trained on Shapes VQA with the same config, budget
and seed, side by side.

  python -m multimodal.benchmarks.fusion --workdir=/tmp/fusion
  python -m multimodal.benchmarks.fusion --workdir=/tmp/fusion --modules=early,gated \\
      --override=--config.total_steps=1500

Each module trains as the real main job in a subprocess
(`--config=CONFIG:fusion=NAME,eval_missing=true --workdir=DIR/NAME`, its output in
DIR/NAME/main.log), all reading one TFDS data dir (DIR/tfds) generated before the first, so
the training minutes exclude data generation. A run that fails is reported as failed, with
its log, and the others go on; running the command again skips the modules whose
DIR/NAME/results.json exists, and a module that was stopped (killed, or failed) resumes from
its last checkpoint, appending to its log, its training minutes the sum of both parts. Then,
in this process, on one device: the parameters, XLA's FLOP counts of the forward pass and of
the train step, the train step's median time on a synthetic batch of the training batch size,
and its peak memory (XLA's memory analysis).

Writes DIR/fusion_benchmark.csv, DIR/fusion_benchmark.md (validation accuracy overall, per
question type, and with the image or the question removed; the costs; the training minutes;
the machine each module trained on) and DIR/accuracy_vs_time.png, and prints the table.
`--export=RESULTS` also copies each finished run without its checkpoints (results, record,
config, log, TensorBoard events: about 100 KB) and the tables to RESULTS, a folder to keep or
share; a benchmark whose workdir starts as a copy of it skips those modules. `load_results`,
`markdown_table` and `plot_accuracy_vs_time` read a benchmark folder back
(colabs/fusion_benchmark.ipynb).
"""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import shutil
import time
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from absl import app, flags  # noqa: E402

from multimodal.benchmarks import compiled_step, machine, main_job  # noqa: E402
from multimodal.data import pipeline  # noqa: E402
from multimodal.training import sharding  # noqa: E402
from multimodal.training.train_state import create_sharded_state  # noqa: E402

MODULES = ("early", "late", "hybrid", "weighted_sum", "concat_mlp", "gated", "cross_attention",
           "co_attention", "bottleneck", "multiway")
# Every run also evaluates with each modality removed (the `missing` evaluator).
RUN_ARGS = "eval_missing=true"
RECORD = "fusion_benchmark.json"  # per module, beside its run: how it ran and what it costs
LOG = "main.log"
CSV, MARKDOWN, PLOT = "fusion_benchmark.csv", "fusion_benchmark.md", "accuracy_vs_time.png"
VALIDATION, MISSING = "validation/vqa/", "missing/vqa/"
MIB = 2**20

_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs, their data and the tables go.")
_MODULES = flags.DEFINE_list("modules", list(MODULES), "Fusion modules to train, in order.")
_CONFIG = flags.DEFINE_string("config", "configs/shapes_vqa.py",
                              "The config file (taking a fusion=NAME argument).")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "--config.KEY=VALUE for every run, "
                                       "e.g. --override=--config.total_steps=1500.")
_EXPORT = flags.DEFINE_string("export", None, "Also copy each finished run without its "
                              "checkpoints, and the tables, to this folder.")
_TIMED_STEPS = flags.DEFINE_integer("timed_steps", 10, "Train steps timed per module, after "
                                    "a warm-up step.")


def read_json(path: str) -> Any:
  """The file's contents, or None if there is no such file."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_json(path: str, value: Any) -> None:
  """Writes `value` to `path`, creating its folder."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(value, f, indent=2)


def run_spec(config: str, name: str) -> str:
  """The config spec a module trains with."""
  return compiled_step.with_args(config, f"fusion={name},{RUN_ARGS}")


def prepare_data(config: str, overrides: Sequence[str]) -> None:
  """Generates the config's dataset (if not there yet), so that no run's clock includes it."""
  tfds.disable_progress_bar()
  start = time.perf_counter()
  builder = pipeline.get_builder(compiled_step.load_config(config, overrides).data)
  print(f"data: {builder.info.full_name} in {builder.data_dir} "
        f"({time.perf_counter() - start:.0f} s)", flush=True)


def measure(spec: str, overrides: Sequence[str], timed_steps: int) -> dict[str, float]:
  """The costs of the train step of `spec` on one device, at the training batch size."""
  config = compiled_step.load_config(spec, overrides)
  # The input shapes as the training pipeline makes them (resolution, question length).
  inputs = pipeline.make_dataset(pipeline.get_builder(config.data), split=config.data.split,
                                 pp=config.pp_train, batch_size=config.batch_size,
                                 train=True).element_spec
  preset = compiled_step.Preset(spec, batch_size=config.batch_size,
                                res=inputs["image"].shape[1],
                                max_len=inputs["question_tokens"].shape[1])
  setup = compiled_step.build(preset, overrides=overrides)
  mesh = compiled_step.layout_mesh("1")
  step = compiled_step.lower_step(setup, mesh)
  compiled = step.lowered.compile()
  state, _ = create_sharded_state(setup.model, setup.optimizer, setup.batch,
                                  jax.random.key(config.seed), mesh, sharding.DEFAULT_RULES)
  batch = jax.device_put(compiled_step.random_batch(setup.batch), sharding.batch_sharding(mesh))
  seconds = compiled_step.median_step_seconds(compiled, state, batch, timed_steps)
  measures = {
      "params": compiled_step.num_params(step.state.params),
      "forward_gflops_per_example":
          compiled_step.forward_flops(setup, step) / config.batch_size / 1e9,
      "train_step_gflops_per_example": step.model_flops() / config.batch_size / 1e9,
      "train_step_ms": seconds * 1e3,
      "peak_memory_mib": compiled_step.peak_bytes(compiled) / MIB}
  jax.clear_caches()
  return measures


def earlier_segments(record: dict[str, Any], log: str) -> main_job.Segments:
  """The spans a module trained in before this attempt: those of a run that failed, and of one
  stopped without notice (killed with this process, its machine gone), which ends when its log
  was last written."""
  if "segments" in record:
    segments = [list(span) for span in record["segments"]]
  elif "start" in record:  # A record written before segments were kept.
    segments = [[record["start"], record["end"]]]
  else:
    segments = []
  if "running_since" in record and os.path.exists(log):
    segments.append([record["running_since"], os.path.getmtime(log)])
  return segments


def benchmark_module(workdir: str, name: str, config: str, overrides: Sequence[str],
                     timed_steps: int) -> dict[str, Any]:
  """Trains one module (unless its results.json exists) and measures its train step (unless
  measured before); returns and saves its record (DIR/NAME/fusion_benchmark.json)."""
  run_dir = os.path.join(workdir, name)
  spec = run_spec(config, name)
  record = read_json(os.path.join(run_dir, RECORD)) or {"module": name, "config": spec,
                                                        "overrides": list(overrides)}
  if os.path.exists(os.path.join(run_dir, "results.json")):
    print(f"[{name}] {run_dir}/results.json exists: not training again", flush=True)
  else:
    # A run stopped or failed before resumes from its checkpoint; its time so far is kept.
    segments = earlier_segments(record, os.path.join(run_dir, LOG))
    record = {"module": name, "config": spec, "overrides": list(overrides),
              "segments": segments, "running_since": time.time()}
    write_json(os.path.join(run_dir, RECORD), record)
    run = main_job.run_main_job(name, spec, run_dir, os.path.join(run_dir, LOG), overrides,
                                append_log=bool(segments))
    segments = segments + [[run.start, run.end]]
    record = {"module": name, "config": spec, "overrides": list(overrides),
              "start": segments[0][0], "end": run.end, "segments": segments,
              "returncode": run.returncode, "log": run.log, "machine": machine.describe()}
    write_json(os.path.join(run_dir, RECORD), record)
    if not run.ok:
      return record
  if "measures" not in record:
    start = time.perf_counter()
    try:
      record["measures"] = measure(spec, overrides, timed_steps)
      record.pop("measure_error", None)
      m = record["measures"]
      print(f"[{name}] {m['params']:,} params, {m['forward_gflops_per_example']:.4g} GFLOPs/"
            f"example forward, train step {m['train_step_ms']:.1f} ms, peak "
            f"{m['peak_memory_mib']:.1f} MiB (measured in "
            f"{time.perf_counter() - start:.0f} s)", flush=True)
    except Exception as e:  # noqa: BLE001  (one module's failure must not end the benchmark)
      record["measure_error"] = f"{type(e).__name__}: {e}"
      print(f"[{name}] measuring the train step FAILED: {record['measure_error']}", flush=True)
    write_json(os.path.join(run_dir, RECORD), record)
  return record


def run_config(workdir: str, name: str) -> ml_collections.ConfigDict:
  """The config that module `name` was trained with (e.g. to restore it with a Trainer)."""
  record = read_json(os.path.join(workdir, name, RECORD))
  if record is None:
    raise FileNotFoundError(f"No fusion benchmark run {name!r} in {workdir} (no "
                            f"{os.path.join(workdir, name, RECORD)}).")
  return compiled_step.load_config(record["config"], record["overrides"])


def benchmarked_modules(workdir: str) -> list[str]:
  """The modules with a run in `workdir`: the known ones in their order, then the rest."""
  found = [name for name in sorted(os.listdir(workdir))
           if os.path.exists(os.path.join(workdir, name, RECORD))
           or os.path.exists(os.path.join(workdir, name, "results.json"))]
  return ([name for name in MODULES if name in found] +
          [name for name in found if name not in MODULES])


def record_segments(record: dict[str, Any]) -> main_job.Segments:
  """The spans a finished module trained in (one unless it was stopped and resumed)."""
  return record.get("segments") or [[record["start"], record["end"]]]


def module_row(workdir: str, name: str) -> dict[str, Any]:
  """One module's row; a value that is not there (yet) is NaN."""
  record = read_json(os.path.join(workdir, name, RECORD)) or {}
  results = read_json(os.path.join(workdir, name, "results.json"))
  finished = results is not None
  if not finished:
    status = "failed" if record.get("returncode") else "not run"
  elif "measure_error" in record:
    status = f"ok (cost not measured: {record['measure_error']})"
  else:
    status = "ok"
  results = results or {}
  row: dict[str, Any] = {"module": name, "status": status,
                         "accuracy": results.get(f"{VALIDATION}accuracy", math.nan)}
  prefix = f"{VALIDATION}accuracy/"
  row.update({f"accuracy/{key[len(prefix):]}": value for key, value in sorted(results.items())
              if key.startswith(prefix)})
  for modality in ("image", "text"):
    row[f"missing_{modality}_accuracy"] = results.get(
        f"{MISSING}missing_{modality}/accuracy", math.nan)
  measures = record.get("measures", {})
  for key in ("params", "forward_gflops_per_example", "train_step_gflops_per_example",
              "train_step_ms", "peak_memory_mib"):
    row[key] = measures.get(key, math.nan)
  timed = finished and "start" in record
  row["train_minutes"] = (main_job.training_seconds(record_segments(record)) / 60 if timed
                          else math.nan)
  # The log beside the run when it is there (also in an exported or moved copy).
  local_log = os.path.join(workdir, name, LOG)
  row["log"] = local_log if os.path.exists(local_log) else record.get("log", "")
  row["machine"] = machine.summary(record.get("machine", {})) if timed else ""
  return row


def question_types(rows: list[dict[str, Any]]) -> list[str]:
  return sorted({key.split("/", 1)[1] for row in rows for key in row
                 if key.startswith("accuracy/")})


def load_results(workdir: str, modules: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """One row per module (default: every module run in `workdir`), all with the same keys:
  module, status ("ok", "failed", "not run"), accuracy, accuracy/TYPE for every question
  type, missing_image_accuracy, missing_text_accuracy, params, forward_gflops_per_example,
  train_step_gflops_per_example, train_step_ms, peak_memory_mib, train_minutes, log,
  machine (one line; empty for a run that did not finish)."""
  rows = [module_row(workdir, name) for name in modules or benchmarked_modules(workdir)]
  types = question_types(rows)

  def with_every_type(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
      if not key.startswith("accuracy/"):
        out[key] = value
      if key == "accuracy":
        out.update({f"accuracy/{t}": row.get(f"accuracy/{t}", math.nan) for t in types})
    return out

  return [with_every_type(row) for row in rows]


def _cell(value: Any, fmt: str) -> str:
  if isinstance(value, float) and math.isnan(value):
    return ""
  return format(value, fmt)


def markdown_table(rows: list[dict[str, Any]]) -> str:
  """The rows as a Markdown table (blank: not measured)."""
  types = question_types(rows)
  header = (["module", "status", "accuracy", *types, "image missing", "text missing",
             "params", "forward GFLOPs/example", "train step ms", "peak memory MiB",
             "train minutes"])
  lines = ["| " + " | ".join(header) + " |",
           "|---|---|" + "---:|" * (len(header) - 2)]
  for row in rows:
    status = row["status"] if row["status"] != "failed" else f"failed (log: {row['log']})"
    cells = [row["module"], status, _cell(row["accuracy"], ".3f")]
    cells += [_cell(row[f"accuracy/{t}"], ".3f") for t in types]
    cells += [_cell(row["missing_image_accuracy"], ".3f"),
              _cell(row["missing_text_accuracy"], ".3f"), _cell(row["params"], ","),
              _cell(row["forward_gflops_per_example"], ".4g"),
              _cell(row["train_step_ms"], ".1f"), _cell(row["peak_memory_mib"], ".1f"),
              _cell(row["train_minutes"], ".1f")]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def machines_note(rows: list[dict[str, Any]]) -> str:
  """Which machine the finished runs trained on, naming the modules when there are several
  (then their minutes, step times and, a little, their accuracies do not compare)."""
  by_machine: dict[str, list[str]] = {}
  for row in rows:
    if row["machine"]:
      by_machine.setdefault(row["machine"], []).append(row["module"])
  if len(by_machine) <= 1:
    return "".join(f"Trained on {name}." for name in by_machine)
  return "Trained on several machines: " + "; ".join(
      f"{name} ({', '.join(modules)})" for name, modules in by_machine.items()) + "."


def export_run(workdir: str, name: str, dest: str) -> None:
  """Copies run `name` without its checkpoints or predictions to DEST/NAME; `load_results`
  and `plot_accuracy_vs_time` read the copy."""
  source, target = os.path.join(workdir, name), os.path.join(dest, name)
  os.makedirs(target, exist_ok=True)
  files = [os.path.join(source, f) for f in ("results.json", "config.json", LOG, RECORD)]
  for path in files + glob.glob(os.path.join(source, "events.out.tfevents.*")):
    if os.path.exists(path):
      shutil.copy2(path, target)


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
      writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v
                       for k, v in row.items()})


def plot_accuracy_vs_time(workdir: str, path: str, modules: Sequence[str] | None = None
                          ) -> str:
  """Validation accuracy against training minutes (from the TensorBoard events; a run stopped
  and resumed without its pause), one line per module; saved to `path` (PNG), which is
  returned."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  figure = Figure(figsize=(7, 4.5))
  FigureCanvasAgg(figure)
  ax = figure.add_subplot()
  for name in modules or benchmarked_modules(workdir):
    record = read_json(os.path.join(workdir, name, RECORD)) or {}
    if "start" not in record:
      continue
    segments = record_segments(record)
    points = [(main_job.training_seconds(segments, until=wall) / 60, metrics["accuracy"])
              for wall, _, metrics in main_job.read_evals(os.path.join(workdir, name), VALIDATION)
              if "accuracy" in metrics]
    if points:
      ax.plot(*zip(*points), marker="o", label=name)
  ax.set_xlabel("training minutes (compilation and evaluations included; a resumed run's "
                "pause left out)")
  ax.set_ylabel("validation accuracy")
  ax.set_title("Validation accuracy against training time")
  ax.grid(alpha=0.3)
  if ax.lines:
    ax.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  return path


def write_tables(workdir: str, modules: Sequence[str], header: str,
                 export: str | None = None) -> list[dict[str, Any]]:
  """Writes the CSV, the Markdown table (under `header`) and the plot of `modules` in
  `workdir` (and copies them to `export`); returns the rows."""
  rows = load_results(workdir, modules)
  write_csv(rows, os.path.join(workdir, CSV))
  with open(os.path.join(workdir, MARKDOWN), "w") as f:
    f.write(f"{header}\n\n{markdown_table(rows)}\n\n{machines_note(rows)}\n")
  plot_accuracy_vs_time(workdir, os.path.join(workdir, PLOT), modules)
  if export:
    os.makedirs(export, exist_ok=True)
    for output in (CSV, MARKDOWN, PLOT):
      shutil.copy2(os.path.join(workdir, output), export)
  return rows


def run_benchmark(workdir: str, modules: Sequence[str] = MODULES,
                  config: str = "configs/shapes_vqa.py", overrides: Sequence[str] = (),
                  timed_steps: int = 10, export: str | None = None) -> list[dict[str, Any]]:
  """Trains and measures every module in `workdir`, writes the CSV, Markdown and plot there
  (after each module, so a benchmark stopped midway leaves its table so far), prints the
  table; returns the rows. With `export`, copies each finished run (`export_run`) and the CSV,
  Markdown and plot there too."""
  if not modules:
    raise ValueError("No fusion modules to benchmark.")
  os.makedirs(workdir, exist_ok=True)
  data_dir = os.path.abspath(os.path.join(workdir, "tfds"))
  overrides = [f"--config.data.data_dir={data_dir}", *overrides]
  header = f"Fusion benchmark: {config} {' '.join(overrides)}"
  prepare_data(config, overrides)
  for i, name in enumerate(modules, 1):
    print(f"\n=== [{i}/{len(modules)}] {name}", flush=True)
    benchmark_module(workdir, name, config, overrides, timed_steps)
    if export and os.path.exists(os.path.join(workdir, name, "results.json")):
      export_run(workdir, name, export)
    rows = write_tables(workdir, modules, header, export)
  failed = [row["module"] for row in rows if row["status"] != "ok"]
  print(f"\n{markdown_table(rows)}\n\n{machines_note(rows)}\nWrote {CSV}, {MARKDOWN} and "
        f"{PLOT} in {workdir}" + (f" and {export}" if export else "") +
        (f"; not ok: {', '.join(failed)}" if failed else ""), flush=True)
  return rows


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  run_benchmark(_WORKDIR.value, _MODULES.value, _CONFIG.value, _OVERRIDES.value,
                _TIMED_STEPS.value, _EXPORT.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
