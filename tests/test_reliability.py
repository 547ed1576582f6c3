"""Non-finite steps, multi-host settings: the run stops (or skips) with a clear message."""
import re

import jax
import numpy as np
import pytest

from configs import shapes_vqa
from multimodal.training import distributed
from multimodal.training import trainer as trainer_lib
from tests.main_runs import read_scalars


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def exploding_config(data_dir, on_nonfinite):
  """A learning rate so large that the params overflow after the first update."""
  config = shapes_vqa.get_config("tiny=true")
  config.data.data_dir = data_dir
  config.total_steps, config.log_every_steps = 6, 1
  config.optimizer.learning_rate, config.optimizer.warmup_steps = 1e36, 0
  config.checkpoint.every_steps = 1
  config.on_nonfinite = on_nonfinite
  return config


def test_nonfinite_loss_stops_the_run_keeping_the_last_good_checkpoint(tmp_path, data_dir):
  trainer = trainer_lib.Trainer(exploding_config(data_dir, "stop"), str(tmp_path))
  with pytest.raises(FloatingPointError,
                     match=r"Non-finite values at step (\d+): .*loss=(nan|inf).*last good "
                           r"checkpoint is step (\d+)") as error:
    trainer.train()
  trainer.close()
  bad_step = int(re.search(r"step (\d+)", str(error.value)).group(1))
  assert bad_step >= 2  # step 1 starts from finite params
  checkpoints = trainer_lib.Trainer(exploding_config(data_dir, "stop"), str(tmp_path))
  assert checkpoints.checkpointer.latest_step() == bad_step - 1
  state_step = checkpoints.restore()
  assert state_step == bad_step - 1
  params = [np.asarray(x) for x in jax.tree.leaves(checkpoints.state.params)]
  assert all(np.isfinite(x).all() for x in params)
  checkpoints.close()


def test_nonfinite_steps_can_be_skipped_and_counted(tmp_path, data_dir):
  trainer = trainer_lib.Trainer(exploding_config(data_dir, "skip"), str(tmp_path))
  assert trainer.train() == 6
  skipped = int(trainer.state.skipped_steps)
  assert skipped >= 1
  leaves = jax.tree.leaves(trainer.state.params)
  assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
  trainer.close()
  assert read_scalars(str(tmp_path), "train/skipped_steps")[6] == skipped


def test_unknown_on_nonfinite_is_an_error(tmp_path, data_dir):
  with pytest.raises(ValueError, match="on_nonfinite must be 'stop' or 'skip'"):
    trainer_lib.Trainer(exploding_config(data_dir, "ignore"), str(tmp_path))


def test_multihost_settings_come_from_flags_then_environment(monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
  settings = distributed.DistributedSettings.from_env(process_id=3)
  assert settings == distributed.DistributedSettings("10.0.0.1:1234", 4, 3)
  assert settings.explicit


def test_incomplete_multihost_settings_name_what_is_missing(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  with pytest.raises(ValueError, match="missing: num_processes, process_id"):
    distributed.initialize(distributed.DistributedSettings.from_env(
        coordinator_address="127.0.0.1:1"))
  with pytest.raises(ValueError, match=r"process_id 2 is not in \[0, num_processes=2\)"):
    distributed.initialize(distributed.DistributedSettings("127.0.0.1:1", 2, 2))
  distributed.initialize(distributed.DistributedSettings.from_env())  # one process: a no-op
  assert not distributed.is_initialized()
