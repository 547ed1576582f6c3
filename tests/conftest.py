"""Every test sees 8 simulated CPU devices, so sharded and unsharded runs can be compared.

XLA compiles the tests' programs with LLVM's optimisations off
(--xla_backend_optimization_level=0) and with its older elemental emitters for fusions
instead of the MLIR fusion emitters (--xla_cpu_use_fusion_emitters=false): the tests' models
are tiny, so compiling dominates their time. Unoptimised code compiles several times faster
(a tiny UNet's init: 18 s against 76 s), and the older emitters about twice as fast again (the
small VQA model's train step of tests/test_sharding.py: 3.5 s against 6.5 s), while computing
the same float32 operations. Set XLA_FLAGS to choose otherwise.

The whole session (this process and the main jobs the tests start as subprocesses) shares one
persistent JAX compilation cache in a fresh temporary folder, removed at the end: many tests
compile the same tiny programs, and a main job that finds its step already compiled starts in
half the time. Executables are keyed by their HLO, options and devices, so results are unchanged.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0 "
                      "--xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE_DIR = tempfile.mkdtemp(prefix="multimodal-tests-jax-cache-")
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import sys  # noqa: E402

# Tests import the shipped configs (configs/*.py) as modules.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def fusion_sweep(tmp_path_factory):
  """The tiny fusion benchmark of tests/fusion_sweep.py, run once for the session."""
  from tests import fusion_sweep as sweep  # Imports JAX: only when a test asks for it.
  return sweep.run(str(tmp_path_factory.mktemp("fusion_sweep")))
