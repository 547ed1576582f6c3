"""The fusion benchmark end to end on the tiny config: two modules and one that cannot train."""
import csv
import json
import math
import os
import shutil

import jax
import pytest

from multimodal.benchmarks import fusion

MODULES = ["early", "no_such_module", "cross_attention"]
CONFIG = "configs/shapes_vqa.py:tiny=true"
OVERRIDES = ["--config.total_steps=4", "--config.evals.validation.every_steps=2"]


def exported_to(tmp_path_factory) -> str:
  return os.path.join(str(tmp_path_factory.getbasetemp()), "fusion_export")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("fusion"))
  export = exported_to(tmp_path_factory)
  rows = fusion.run_benchmark(workdir, MODULES, CONFIG, OVERRIDES, timed_steps=2, export=export)
  return workdir, {row["module"]: row for row in rows}


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
      "early", "cross_attention", "no_such_module"]


def test_trained_modules_have_accuracies_and_costs(sweep):
  _, rows = sweep
  trained = [rows["early"], rows["cross_attention"]]
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
  config = fusion.run_config(workdir, "early")
  assert config.model.fusion.type == "early" and config.total_steps == 4
  assert "missing" in config.evals


def test_a_rerun_skips_finished_modules(sweep, capsys):
  workdir, _ = sweep
  record = os.path.join(workdir, "early", fusion.RECORD)
  with open(record) as f:
    before = json.load(f)
  rows = fusion.run_benchmark(workdir, ["early"], CONFIG, OVERRIDES)
  assert "results.json exists: not training again" in capsys.readouterr().out
  with open(record) as f:
    assert json.load(f) == before  # neither trained nor measured again
  assert [row["module"] for row in rows] == ["early"] and rows[0]["status"] == "ok"


def test_rows_name_the_machine(sweep):
  workdir, rows = sweep
  assert f"jax {jax.__version__}" in rows["early"]["machine"]
  assert rows["early"]["machine"] == rows["cross_attention"]["machine"]
  assert rows["no_such_module"]["machine"] == ""
  with open(os.path.join(workdir, fusion.MARKDOWN)) as f:
    assert f"Trained on {rows['early']['machine']}." in f.read()


def test_machines_note_names_the_modules_of_each_machine():
  rows = [{"module": "early", "machine": "A"}, {"module": "late", "machine": "B"},
          {"module": "gated", "machine": "A"}, {"module": "broken", "machine": ""}]
  assert fusion.machines_note(rows) == (
      "Trained on several machines: A (early, gated); B (late).")
  assert fusion.machines_note(rows[:1]) == "Trained on A."
  assert fusion.machines_note(rows[3:]) == ""


def test_the_export_has_the_results_without_checkpoints(sweep, tmp_path, tmp_path_factory):
  workdir, rows = sweep
  export = exported_to(tmp_path_factory)
  assert sorted(os.listdir(export)) == sorted(
      ["early", "cross_attention", fusion.CSV, fusion.MARKDOWN, fusion.PLOT])
  assert not os.path.exists(os.path.join(export, "early", "checkpoints"))
  exported = {row["module"]: row for row in fusion.load_results(export)}
  for name in ("early", "cross_attention"):
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
  again = fusion.run_benchmark(resumed, ["early"], CONFIG, OVERRIDES)
  assert {**again[0], "log": ""} == {**rows["early"], "log": ""}
