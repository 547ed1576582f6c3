"""Running the main job as a real subprocess, and reading what it wrote."""
import glob
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main_command(workdir, data_dir, *flags, config_arg="tiny=true", config="shapes_vqa.py"):
  return [sys.executable, "-m", "multimodal.main",
          f"--config={REPO}/configs/{config}:{config_arg}", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", *flags]


def main_env(num_devices=None):
  """The environment for a main job: this one's, with `num_devices` simulated CPU devices
  if given (the other XLA flags kept)."""
  env = dict(os.environ)
  if num_devices:
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([f"--xla_force_host_platform_device_count={num_devices}",
                                 *flags])
  return env


def run_main(workdir, data_dir, *flags, num_devices=None, config_arg="tiny=true",
             config="shapes_vqa.py"):
  return subprocess.run(main_command(workdir, data_dir, *flags, config_arg=config_arg,
                                     config=config),
                        cwd=REPO, capture_output=True, text=True, timeout=600,
                        env=main_env(num_devices))


def read_scalars(workdir, tag):
  """{step: value} of one scalar from the run's TensorBoard event files."""
  values = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def read_params(workdir, step):
  """The params of checkpoint `step` as a tree of numpy arrays."""
  path = os.path.join(workdir, "checkpoints", str(step), "default")
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata.tree
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one_device), metadata)
    state = checkpointer.restore(path, target)
  return {k: np.asarray(v) for k, v in flatten(state["params"]).items()}


def flatten(tree, prefix=""):
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(flatten(value, f"{prefix}{key}/"))
    return out
  return {prefix[:-1]: tree}
