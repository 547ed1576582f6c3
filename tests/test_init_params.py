"""Starting a run from pretrained params: exact values, kept shardings, skipped prefixes,
mismatches named; a resumed run takes its checkpoint, not the file; older workdirs resume."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import shapes_vqa
from multimodal.training import init_params, sharding, workdir_config
from multimodal.training import trainer as trainer_lib


def sharded_params():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
  return {"encoder": {"kernel": jax.device_put(jnp.zeros((8, 3)), split),
                      "bias": jax.device_put(jnp.zeros((3,)), sharding.replicated(mesh))},
          "head": {"kernel": jax.device_put(jnp.ones((3, 2)), sharding.replicated(mesh))}}


def test_merge_replaces_values_keeps_shardings_and_skipped_prefixes():
  params = sharded_params()
  pretrained = {"encoder/kernel": np.arange(24, dtype=np.float64).reshape(8, 3),
                "encoder/bias": np.full(3, 7.0)}
  merged = init_params.merge(params, pretrained, skip=("head",))
  np.testing.assert_array_equal(merged["encoder"]["kernel"], pretrained["encoder/kernel"])
  assert merged["encoder"]["kernel"].dtype == jnp.float32
  assert merged["encoder"]["kernel"].sharding == params["encoder"]["kernel"].sharding
  assert merged["head"]["kernel"] is params["head"]["kernel"]  # Skipped: kept as initialised.


def test_merge_names_every_mismatch():
  pretrained = {"encoder/kernel": np.zeros((8, 4)), "decoder/kernel": np.zeros(2)}
  with pytest.raises(ValueError) as error:
    init_params.merge(sharded_params(), pretrained)
  message = str(error.value)
  assert "in the file, not a param of the model: decoder/kernel" in message
  assert "a param of the model, not in the file: encoder/bias (3,)" in message
  assert "shape of encoder/kernel: file (8, 4), model (8, 3)" in message
  assert "head/kernel" in message


def test_workdirs_of_older_configs_resume_but_real_changes_are_refused():
  old = {"optimizer": {"learning_rate": 0.001}}
  assert workdir_config.differences(old, {**old, "init": {"params": None, "skip": []}}) == []
  assert workdir_config.differences(old, {**old, "init": {"params": "x.npz", "skip": []}}) == [
      "init.params: (unset) -> x.npz"]


def test_a_run_starts_from_the_file_and_resumes_from_its_checkpoint(tmp_path):
  config = shapes_vqa.get_config("tiny=true")
  config.data.data_dir = str(tmp_path / "tfds")
  random_init = trainer_lib.Trainer(config, str(tmp_path / "random"))
  flat = traverse_util.flatten_dict(jax.device_get(random_init.state.params), sep="/")
  pretrained = {k: np.asarray(v) + 0.5 for k, v in flat.items()}
  np.savez(tmp_path / "pretrained.npz", **pretrained)

  config.init.params = str(tmp_path / "pretrained.npz")
  trainer = trainer_lib.Trainer(config, str(tmp_path / "run"))
  assert trainer.train(stop_at=0) == 0  # Initialises, trains nothing.
  got = traverse_util.flatten_dict(jax.device_get(trainer.state.params), sep="/")
  for path, value in pretrained.items():
    np.testing.assert_allclose(got[path], value, rtol=1e-6)

  assert trainer.train(stop_at=1) == 1  # One step, checkpointed.
  trained = traverse_util.flatten_dict(jax.device_get(trainer.state.params), sep="/")
  np.savez(tmp_path / "pretrained.npz", **{k: v - 9.0 for k, v in pretrained.items()})
  resumed = trainer_lib.Trainer(config, str(tmp_path / "run"))
  assert resumed.train(stop_at=1) == 1  # The checkpoint wins over the (changed) file.
  again = traverse_util.flatten_dict(jax.device_get(resumed.state.params), sep="/")
  for path, value in trained.items():
    np.testing.assert_array_equal(again[path], value)


def test_merge_can_load_only_some_prefixes_and_ignore_the_rest_of_the_file():
  params = sharded_params()
  pretrained = {"encoder/kernel": np.ones((8, 3)), "encoder/bias": np.full(3, 7.0),
                "object/kernel": np.zeros((4, 1))}  # another model's head: ignored
  merged = init_params.merge(params, pretrained, load=("encoder",))
  np.testing.assert_array_equal(merged["encoder"]["bias"], 7.0)
  assert merged["head"]["kernel"] is params["head"]["kernel"]
  with pytest.raises(ValueError, match="not in the file: encoder/bias"):
    init_params.merge(params, {"encoder/kernel": np.ones((8, 3))}, load=("encoder",))
  with pytest.raises(ValueError, match="no params under"):
    init_params.merge(params, pretrained, load=("image_encoder",))


def test_a_whole_run_loads_under_a_prefix_with_its_model_state(tmp_path):
  """"ours=" puts another run's whole model (params and model state, e.g. a VQ codebook)
  under one of our prefixes; "ours=theirs" renames a prefix."""
  from multimodal.training.checkpoint import Checkpointer
  from multimodal.training.train_state import TrainState
  run = {"encoder": {"kernel": np.full((2, 3), 5.0, np.float32)}}
  codebook = {"bottleneck": {"embedding": np.arange(8, dtype=np.float32).reshape(4, 2)}}
  checkpointer = Checkpointer(str(tmp_path / "checkpoints"), every_steps=1, keep=1)
  checkpointer.save(3, TrainState(step=jnp.int32(3), params=run, opt_state={},
                                  skipped_steps=jnp.int32(0), model_state={"codebook": codebook}))
  checkpointer.wait()
  checkpointer.close()

  ours = {"image_tokenizer": {"encoder": {"kernel": jnp.zeros((2, 3))}},
          "head": {"kernel": jnp.ones((3,))}}
  merged = init_params.merge(ours, init_params.load_flat(str(tmp_path)),
                             load=("image_tokenizer=",))
  np.testing.assert_array_equal(merged["image_tokenizer"]["encoder"]["kernel"], 5.0)
  assert merged["head"]["kernel"] is ours["head"]["kernel"]
  renamed = init_params.merge({"enc": {"kernel": jnp.zeros((2, 3))}}, {"encoder/kernel": run[
      "encoder"]["kernel"]}, load=("enc=encoder",))
  np.testing.assert_array_equal(renamed["enc"]["kernel"], 5.0)

  state = init_params.load_model_state(str(tmp_path))
  assert set(state) == {"codebook/bottleneck/embedding"}
  our_state = {"codebook": {"image_tokenizer": {"bottleneck": {"embedding": jnp.zeros((4, 2))}}},
               "other": {"head": {"count": jnp.zeros(())}}}
  loaded = init_params.merge_model_state(our_state, state, load=("image_tokenizer=",))
  np.testing.assert_array_equal(loaded["codebook"]["image_tokenizer"]["bottleneck"]["embedding"],
                                codebook["bottleneck"]["embedding"])
  assert loaded["other"] is our_state["other"]  # nothing under the prefix: kept
  assert init_params.merge_model_state(our_state, state) is our_state  # no `load`: params only
  assert init_params.load_model_state(str(tmp_path / "pretrained.npz")) == {}
  with pytest.raises(ValueError, match="(?s)collection 'codebook'.*a model state array of the "
                                       "model, not in the file: image_tokenizer/bottleneck"):
    init_params.merge_model_state(our_state, {}, load=("image_tokenizer=",))
