"""Every colab runs end to end in its tiny setting (MULTIMODAL_COLAB_TINY=1), from the repo root."""
import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.fusion_sweep import XDIST_GROUP

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "colabs", "*.ipynb")))


def _param(path: str):
  """The fusion colab reads the session's sweep: it runs in the sweep's xdist worker."""
  marks = ([pytest.mark.xdist_group(XDIST_GROUP)]
           if os.path.basename(path) == "fusion_benchmark.ipynb" else [])
  return pytest.param(path, id=os.path.basename(path), marks=marks)


@pytest.mark.parametrize("path", [_param(p) for p in NOTEBOOKS])
def test_colab_runs(path, tmp_path, monkeypatch, request):
  # The kernel inherits this process's environment (8 simulated devices from conftest.py).
  monkeypatch.setenv("MULTIMODAL_COLAB_TINY", "1")
  monkeypatch.setenv("MULTIMODAL_COLAB_WORKDIR", str(tmp_path))
  if os.path.basename(path) == "fusion_benchmark.ipynb":
    # Reads the session's tiny benchmark (tests/fusion_sweep.py) instead of training its own.
    monkeypatch.setenv("MULTIMODAL_FUSION_RESULTS", request.getfixturevalue("fusion_sweep").workdir)
  notebook = nbformat.read(path, as_version=4)
  client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": REPO}})
  client.execute()  # Raises CellExecutionError, with the cell and its traceback, on any error.


def test_colabs_exist():
  assert NOTEBOOKS, "no notebooks under colabs/"
