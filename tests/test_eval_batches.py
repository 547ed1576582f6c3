"""Evaluation batches: padded to the batch size, with padding that evaluators can read."""
import numpy as np

from multimodal.evaluators import common


def test_the_last_batch_is_padded_with_zeros_and_empty_strings():
  batches = [{"x": np.arange(6).reshape(3, 2), "_text": np.array([b"a", b"b", b"c"], object)},
             {"x": np.array([[6, 7]]), "_text": np.array([b"d|e"], object)}]
  out = list(common.padded_batches(iter(batches), batch_size=3))
  assert len(out) == 2
  np.testing.assert_array_equal(out[0]["_valid"], [True, True, True])
  np.testing.assert_array_equal(out[1]["_valid"], [True, False, False])
  np.testing.assert_array_equal(out[1]["x"], [[6, 7], [0, 0], [0, 0]])
  assert list(out[1]["_text"]) == [b"d|e", b"", b""]
  assert [t.decode().split("|") for t in out[1]["_text"]] == [["d", "e"], [""], [""]]
