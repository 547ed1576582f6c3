"""The decoding benchmark end to end at the tiny size: it runs, prints a well-formed table and
writes it, and greedy decoding agrees with HF's on every token (timings are not checked)."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from multimodal.benchmarks import decoding  # noqa: E402

BATCH_SIZES = [2]  # one compile: the imports and it take most of the ~30 s
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(stdout, the .md file, the .json record) of one tiny run with one repeat."""
  output = str(tmp_path_factory.mktemp("decoding") / "decoding")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
  cmd = [sys.executable, "-m", "multimodal.benchmarks.decoding", "--size=tiny",
         f"--batch_sizes={','.join(map(str, BATCH_SIZES))}", "--prompt_length=6",
         f"--new_tokens={NEW_TOKENS}", "--repeats=1", "--torch_threads=1", f"--output={output}"]
  result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(output + ".md") as f:
    markdown = f.read()
  with open(output + ".json") as f:
    record = json.load(f)
  return result.stdout, markdown, record


def table_rows(text):
  """The table's lines split into cells: the header, then one list per row."""
  lines = [line for line in text.splitlines() if line.startswith("|")]
  assert set(lines[1].replace("|", "")) <= {"-", ":"}  # the separator line
  return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[:1] + lines[2:]]


def test_prints_one_row_per_batch_size_with_every_column(run):
  stdout, markdown, _ = run
  header, *rows = table_rows(stdout)
  assert header == list(decoding.COLUMNS)
  assert [row[:3] for row in rows] == [["tiny", str(b), str(NEW_TOKENS)] for b in BATCH_SIZES]
  for row in rows:
    assert len(row) == len(header)
    assert all(float(cell.replace(",", "")) > 0 for cell in row[3:])
  assert "Machine: " in stdout and "load average" in stdout
  assert markdown.strip() in stdout


def test_greedy_tokens_agree_with_hf(run):
  stdout, _, record = run
  assert [row["tokens_agree"] for row in record["rows"]] == [1.0] * len(BATCH_SIZES)
  assert [row[-1] for row in table_rows(stdout)[1:]] == ["100.0"] * len(BATCH_SIZES)
  assert record["machine"]["torch_threads"] == 1
