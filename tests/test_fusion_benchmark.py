"""The fusion benchmark end to end on the tiny config: two modules and one that cannot train."""
import csv
import json
import math
import os
import shutil

import jax
import pytest

from multimodal.benchmarks import fusion, main_job
from tests.fusion_sweep import CONFIG, MODULES, OVERRIDES, XDIST_GROUP

# Under pytest-xdist (--dist loadgroup) every reader of the session's sweep runs in one worker,
# so the sweep runs once.
pytestmark = pytest.mark.xdist_group(XDIST_GROUP)


@pytest.fixture
def sweep(fusion_sweep):
  return fusion_sweep.workdir, fusion_sweep.rows


def test_writes_the_table_csv_and_plot(sweep):
  workdir, rows = sweep
  assert list(rows) == MODULES
  with open(os.path.join(workdir, fusion.CSV)) as f:
    assert [row["module"] for row in csv.DictReader(f)] == MODULES
  with open(os.path.join(workdir, fusion.MARKDOWN)) as f:
    table = f.read()
  assert all(f"| {name} |" in table for name in MODULES)
  assert os.path.getsize(os.path.join(workdir, fusion.PLOT)) > 1000
  assert fusion.markdown_table(fusion.load_results(workdir, MODULES)) in table
  # Read back without naming them: the known modules in their order, then the others.
  assert [row["module"] for row in fusion.load_results(workdir)] == [
      "gated", "cross_attention", "no_such_module"]


def test_trained_modules_have_accuracies_and_costs(sweep):
  _, rows = sweep
  trained = [rows["gated"], rows["cross_attention"]]
  for row in trained:
    assert row["status"] == "ok"
    accuracies = {k: v for k, v in row.items() if "accuracy" in k}
    assert {"accuracy/count", "missing_image_accuracy", "missing_text_accuracy"} <= set(
        accuracies)
    assert all(0 <= v <= 1 for v in accuracies.values()), accuracies
    assert row["forward_gflops_per_example"] > 0
    # The step is forward, backward and the update: about three forward passes.
    assert 2 < row["train_step_gflops_per_example"] / row["forward_gflops_per_example"] < 4
    assert row["train_step_ms"] > 0 and row["peak_memory_mib"] > 0
    assert row["train_minutes"] > 0
  assert trained[0]["params"] > 0 and trained[1]["params"] > 0
  assert trained[0]["params"] != trained[1]["params"]


def test_a_failed_module_is_reported_with_its_log(sweep):
  workdir, rows = sweep
  row = rows["no_such_module"]
  assert row["status"] == "failed"
  assert math.isnan(row["accuracy"]) and math.isnan(row["params"])
  with open(row["log"]) as f:
    assert "Unknown fusion module 'no_such_module'" in f.read()
  with open(os.path.join(workdir, fusion.MARKDOWN)) as f:
    assert f"failed (log: {row['log']})" in f.read()


def test_run_config_is_what_the_module_trained_with(sweep):
  workdir, _ = sweep
  config = fusion.run_config(workdir, "gated")
  assert config.model.fusion.type == "gated" and config.total_steps == 4
  assert "missing" in config.evals


def test_a_rerun_skips_finished_modules(sweep, capsys):
  workdir, _ = sweep
  record = os.path.join(workdir, "gated", fusion.RECORD)
  with open(record) as f:
    before = json.load(f)
  rows = fusion.run_benchmark(workdir, ["gated"], CONFIG, OVERRIDES)
  assert "results.json exists: not training again" in capsys.readouterr().out
  with open(record) as f:
    assert json.load(f) == before  # neither trained nor measured again
  assert [row["module"] for row in rows] == ["gated"] and rows[0]["status"] == "ok"


def test_rows_name_the_machine(sweep):
  workdir, rows = sweep
  assert f"jax {jax.__version__}" in rows["gated"]["machine"]
  assert rows["gated"]["machine"] == rows["cross_attention"]["machine"]
  assert rows["no_such_module"]["machine"] == ""
  with open(os.path.join(workdir, fusion.MARKDOWN)) as f:
    assert f"Trained on {rows['gated']['machine']}." in f.read()


def test_machines_note_names_the_modules_of_each_machine():
  rows = [{"module": "early", "machine": "A"}, {"module": "late", "machine": "B"},
          {"module": "gated", "machine": "A"}, {"module": "broken", "machine": ""}]
  assert fusion.machines_note(rows) == (
      "Trained on several machines: A (early, gated); B (late).")
  assert fusion.machines_note(rows[:1]) == "Trained on A."
  assert fusion.machines_note(rows[3:]) == ""


def test_the_export_has_the_results_without_checkpoints(fusion_sweep, tmp_path):
  workdir, rows = fusion_sweep.workdir, fusion_sweep.rows
  export = fusion_sweep.export
  assert sorted(os.listdir(export)) == sorted(
      ["gated", "cross_attention", fusion.CSV, fusion.MARKDOWN, fusion.PLOT])
  assert not os.path.exists(os.path.join(export, "gated", "checkpoints"))
  exported = {row["module"]: row for row in fusion.load_results(export)}
  for name in ("gated", "cross_attention"):
    assert exported[name]["log"] == os.path.join(export, name, fusion.LOG)
    assert os.path.exists(exported[name]["log"])
    assert {**exported[name], "log": ""} == {**rows[name], "log": ""}
  # The plot reads the copied TensorBoard events.
  plot = fusion.plot_accuracy_vs_time(export, str(tmp_path / "plot.png"))
  assert os.path.getsize(plot) > 1000
  # A benchmark started on a copy of the export skips those modules.
  resumed = str(tmp_path / "resumed")
  shutil.copytree(export, resumed)
  shutil.copytree(os.path.join(workdir, "tfds"), os.path.join(resumed, "tfds"))
  again = fusion.run_benchmark(resumed, ["gated"], CONFIG, OVERRIDES)
  assert {**again[0], "log": ""} == {**rows["gated"], "log": ""}


def test_training_seconds_leave_out_the_pauses():
  segments = [[100.0, 160.0], [1000.0, 1030.0]]
  assert main_job.training_seconds(segments) == 90.0
  assert main_job.training_seconds(segments, until=130.0) == 30.0
  assert main_job.training_seconds(segments, until=500.0) == 60.0  # in the pause
  assert main_job.training_seconds(segments, until=1010.0) == 70.0


def test_a_stopped_module_resumes_and_counts_both_parts(tmp_path, monkeypatch):
  run_dir = tmp_path / "late"
  run_dir.mkdir()
  # A first attempt killed without notice: its record says since when it ran, its log when
  # it last wrote.
  (run_dir / fusion.RECORD).write_text(json.dumps({"module": "late", "running_since": 1000.0}))
  log = run_dir / fusion.LOG
  log.write_text("step 50/1200\n")
  os.utime(log, (1120.0, 1120.0))
  calls = []

  def resumed_run(name, spec, workdir, log_path, overrides, append_log=False):
    calls.append(append_log)
    with open(log_path, "a" if append_log else "w") as f:
      f.write("Restored the checkpoint at step 50\n")
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({"validation/vqa/accuracy": 0.5}, f)
    return main_job.Run(name, [], 5000.0, 5300.0, 0, log_path)

  monkeypatch.setattr(main_job, "run_main_job", resumed_run)
  costs = {"params": 1, "forward_gflops_per_example": 0.1, "train_step_gflops_per_example": 0.3,
           "train_step_ms": 5.0, "peak_memory_mib": 10.0}
  monkeypatch.setattr(fusion, "measure", lambda *args: costs)
  record = fusion.benchmark_module(str(tmp_path), "late", CONFIG, OVERRIDES, timed_steps=1)
  assert calls == [True]  # the log keeps the first attempt's lines
  assert log.read_text() == "step 50/1200\nRestored the checkpoint at step 50\n"
  assert record["segments"] == [[1000.0, 1120.0], [5000.0, 5300.0]]
  assert "running_since" not in record
  row = fusion.module_row(str(tmp_path), "late")
  assert row["train_minutes"] == pytest.approx((120 + 300) / 60)
  assert row["status"] == "ok" and row["accuracy"] == 0.5


def test_a_new_module_records_since_when_it_runs(tmp_path, monkeypatch):
  seen = {}

  def first_run(name, spec, workdir, log_path, overrides, append_log=False):
    with open(os.path.join(workdir, fusion.RECORD)) as f:  # written before the run starts
      seen.update(json.load(f))
    return main_job.Run(name, [], 10.0, 20.0, 1, log_path)

  monkeypatch.setattr(main_job, "run_main_job", first_run)
  record = fusion.benchmark_module(str(tmp_path), "early", CONFIG, OVERRIDES, timed_steps=1)
  assert "running_since" in seen and seen["segments"] == []
  assert record["segments"] == [[10.0, 20.0]] and record["returncode"] == 1


def test_a_record_without_segments_counts_its_start_to_end():
  assert fusion.earlier_segments({"start": 10.0, "end": 70.0}, "/no/such/log") == [[10.0, 70.0]]
  assert fusion.earlier_segments({}, "/no/such/log") == []
