"""Scale-out and reliability of the main job, run as real processes.

One reference run (one process, 4 simulated devices) is compared with: the same run as two
processes of 2 devices each (jax.distributed on 127.0.0.1, gloo collectives); a run stopped by
SIGTERM at some step and resumed; and a run SIGKILLed while writing a checkpoint and resumed.
All share `data.num_shards=2`, which makes the global batches the same on one host and on two.
The module runs in one xdist worker, so that the reference run is made once.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from multimodal.training.preemption import PREEMPTED_EXIT_CODE
from tests.main_runs import (
  REPO,
  main_command,
  main_env,
  read_params,
  read_scalars,
  run_main,
)

pytestmark = pytest.mark.xdist_group("multihost")

STEPS = 8
FLAGS = (f"--config.total_steps={STEPS}", "--config.log_every_steps=1",
         "--config.data.num_shards=2", "--config.checkpoint.every_steps=4")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("reference"))
  result = run_main(workdir, data_dir, *FLAGS, num_devices=4)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch_two_processes(workdir, data_dir, log_dir):
  """Starts the main job as processes 0 and 1 of a two-host run; their logs go to files (a
  pipe that nobody reads could fill up and stall one host, and with it the other)."""
  address = f"127.0.0.1:{free_port()}"
  logs = [str(log_dir / f"process{i}.log") for i in range(2)]
  procs = []
  for i, log in enumerate(logs):
    with open(log, "w") as f:
      procs.append(subprocess.Popen(
          main_command(workdir, data_dir, *FLAGS, f"--coordinator_address={address}",
                       "--num_processes=2", f"--process_id={i}"),
          cwd=REPO, env=main_env(num_devices=2), stdout=f, stderr=subprocess.STDOUT))
  return procs, logs


def finish(procs, logs):
  """Waits for the processes; returns their logs."""
  for p in procs:
    p.wait(timeout=600)
  return [open(log).read() for log in logs]


def wait_for_log(proc, log, pattern):
  """Polls a process's log file until a line matches."""
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline:
    if re.search(pattern, open(log).read()):
      return
    assert proc.poll() is None, open(log).read()[-3000:]
    time.sleep(0.05)
  raise AssertionError(f"{pattern!r} never appeared:\n" + open(log).read()[-3000:])


def assert_same_params(got, want, **tolerance):
  assert got.keys() == want.keys()
  for name in want:
    if tolerance:
      np.testing.assert_allclose(got[name], want[name], err_msg=name, **tolerance)
    else:
      np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_two_processes_equal_one_process(tmp_path, data_dir, reference):
  workdir = str(tmp_path / "two_processes")
  procs, logs = launch_two_processes(workdir, data_dir, tmp_path)
  outputs = finish(procs, logs)
  for p, err in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  assert "Process 1 of 2; 2 local and 4 global devices" in outputs[1]

  want, got = read_scalars(reference, "train/loss"), read_scalars(workdir, "train/loss")
  assert sorted(got) == list(range(1, STEPS + 1))
  np.testing.assert_allclose([got[s] for s in sorted(want)], [want[s] for s in sorted(want)],
                             rtol=1e-5)
  assert_same_params(read_params(workdir, STEPS), read_params(reference, STEPS),
                     rtol=1e-5, atol=1e-5)
  # Evaluation combines both hosts' halves of the validation split.
  assert (read_scalars(workdir, "validation/vqa/num_examples")[STEPS] ==
          read_scalars(reference, "validation/vqa/num_examples")[STEPS] == 64)

  # The two-process checkpoint restores in a one-process run (here on 1 device).
  evaluated = run_main(workdir, data_dir, *FLAGS, "--eval_only", num_devices=1)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert f"Restored the checkpoint at step {STEPS}" in evaluated.stderr


def wait_for_line(proc, pattern):
  """Reads the process's stderr until a line matches; returns the match and all text read."""
  seen = []
  for line in proc.stderr:
    seen.append(line)
    if match := re.search(pattern, line):
      return match, "".join(seen)
  raise AssertionError(f"{pattern!r} never appeared:\n" + "".join(seen)[-3000:])


def test_sigterm_saves_and_the_resumed_run_is_bit_identical(tmp_path, data_dir, reference):
  workdir = str(tmp_path / "preempted")
  proc = subprocess.Popen(main_command(workdir, data_dir, *FLAGS), cwd=REPO,
                          env=main_env(num_devices=4), stderr=subprocess.PIPE, text=True)
  wait_for_line(proc, r"step 2/8 ")
  proc.send_signal(signal.SIGTERM)
  _, rest = proc.communicate(timeout=300)
  assert proc.returncode == PREEMPTED_EXIT_CODE, rest[-3000:]
  stopped = int(re.search(r"Stopped by a preemption notice after step (\d+)", rest).group(1))
  assert 2 <= stopped < STEPS
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(stopped)))

  resumed = run_main(workdir, data_dir, *FLAGS, num_devices=4)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Restored the checkpoint at step {stopped}" in resumed.stderr
  assert_same_params(read_params(workdir, STEPS), read_params(reference, STEPS))


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, data_dir,
                                                                    reference):
  workdir = str(tmp_path / "killed")
  checkpoints = os.path.join(workdir, "checkpoints")
  proc = subprocess.Popen(
      main_command(workdir, data_dir, *FLAGS, "--config.checkpoint.every_steps=1"), cwd=REPO,
      env=main_env(num_devices=4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  killed_during = None
  deadline = time.monotonic() + 300
  while proc.poll() is None and time.monotonic() < deadline:
    writing = [name for name in (os.listdir(checkpoints) if os.path.isdir(checkpoints) else [])
               if "tmp" in name and int(name.split(".")[0]) >= 3]
    if writing:
      proc.send_signal(signal.SIGKILL)
      killed_during = writing[0]
      break
    time.sleep(0.001)
  proc.wait(timeout=60)
  assert killed_during, "the run finished before a checkpoint write could be interrupted"
  assert proc.returncode == -signal.SIGKILL

  resumed = run_main(workdir, data_dir, *FLAGS, num_devices=4)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  restored = int(re.search(r"Restored the checkpoint at step (\d+)", resumed.stderr).group(1))
  assert restored < int(killed_during.split(".")[0])
  assert_same_params(read_params(workdir, STEPS), read_params(reference, STEPS))


def test_sigterm_to_one_host_stops_both_at_one_step_and_resumes_on_one_host(
    tmp_path, data_dir, reference):
  workdir = str(tmp_path / "two_hosts_preempted")
  procs, logs = launch_two_processes(workdir, data_dir, tmp_path)
  wait_for_log(procs[0], logs[0], r"step 2/8 ")
  procs[1].send_signal(signal.SIGTERM)  # a preemption notice reaching one host only
  outputs = finish(procs, logs)
  stopped = set()
  for p, err in zip(procs, outputs):
    assert p.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
    stopped.add(int(re.search(r"preemption notice after step (\d+)", err).group(1)))
  assert len(stopped) == 1 and stopped.pop() < STEPS

  resumed = run_main(workdir, data_dir, *FLAGS, num_devices=4)  # now on one host
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert_same_params(read_params(workdir, STEPS), read_params(reference, STEPS),
                     rtol=1e-5, atol=1e-5)


PREPARE_DELAY_S = 35  # longer than gloo waits for a late process (30 s)


@pytest.fixture(scope="module", autouse=True)
def slow_prepare_pair(tmp_path_factory):
  """Two processes whose process 0 takes PREPARE_DELAY_S to prepare its dataset
  (tests/slow_prepare_process.py), started when the module starts: they mostly sleep, so
  they run beside the other tests, and the test at the end reads their output."""
  address = f"127.0.0.1:{free_port()}"
  folder = tmp_path_factory.mktemp("slow_prepare")
  procs, logs = [], [folder / f"process{i}.log" for i in range(2)]
  for i, log in enumerate(logs):
    with open(log, "w") as f:
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "tests.slow_prepare_process", address, str(i),
           str(PREPARE_DELAY_S), str(folder)], cwd=REPO, env=main_env(num_devices=1),
          stdout=f, stderr=subprocess.STDOUT))
  yield procs, logs
  for p in procs:
    if p.poll() is None:
      p.kill()
    p.wait()


def test_hosts_wait_for_a_dataset_prepared_longer_than_gloo_waits(slow_prepare_pair):
  """Process 1 waits out process 0's 35 s of dataset preparation (a gloo collective alone
  gives up after 30 s), and the two processes' collectives work afterwards."""
  procs, logs = slow_prepare_pair
  outputs = finish(procs, logs)
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
    assert "gathered [0, 1]" in out, out[-3000:]
  waited = float(re.search(r"waited ([\d.]+) s", outputs[1]).group(1))
  assert waited >= PREPARE_DELAY_S, outputs[1][-3000:]
