"""The memory and throughput benchmarks' measures, read off a tiny model's train step."""
import jax
import pytest

from multimodal.benchmarks import compiled_step, memory
from multimodal.training import sharding
from multimodal.training.train_state import abstract_sharded_state

TINY = compiled_step.Preset("configs/shapes_vqa.py:tiny=true", batch_size=16, res=32,
                            max_len=16)


@pytest.fixture(scope="module")
def setup():
  return compiled_step.build(TINY)


def state_leaves(setup, layout):
  state, _ = abstract_sharded_state(setup.model, setup.optimizer, setup.batch,
                                    compiled_step.layout_mesh(layout), sharding.DEFAULT_RULES)
  return jax.tree.leaves((state.params, state.opt_state))


def test_fsdp_divides_params_and_optimizer_state_per_device(setup):
  one, eight = state_leaves(setup, "1"), state_leaves(setup, "fsdp=8")
  split = [(a, b) for a, b in zip(one, eight) if not b.sharding.is_fully_replicated]
  assert len(split) > len(one) / 2
  unsplit_bytes = compiled_step.bytes_per_device([a for a, _ in split])
  assert compiled_step.bytes_per_device([b for _, b in split]) * 8 == unsplit_bytes
  # Convolution kernels and the answer classes (on the `model` axis) stay whole.
  ratio = compiled_step.bytes_per_device(eight) / compiled_step.bytes_per_device(one)
  assert 1 / 8 < ratio < 0.2


def test_compiled_arguments_are_the_state_and_batch_shards(setup):
  row = memory.memory_row(setup, "fsdp=8")
  assert 0 <= row["arguments"] - row["state"] - row["batch"] <= 64  # + the step counters
  assert row["output"] == pytest.approx(row["aliased"], abs=4096)  # the state, in place
  assert row["temp"] > 0


def test_step_flops_count_forward_and_backward(setup):
  step = compiled_step.lower_step(setup, compiled_step.layout_mesh("1"))
  flops = step.model_flops()
  # The backward pass costs about twice the forward.
  assert 2.5 < flops / compiled_step.forward_flops(setup, step) < 3.5
  six_nd = compiled_step.six_nd_flops(step.state.params, setup.tokens, TINY.batch_size)
  assert 1.0 < flops / six_nd < 2.0
