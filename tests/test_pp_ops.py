"""Preprocessing ops, one at a time against expected values, and composed by `parse`."""
from __future__ import annotations

import collections
import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from multimodal.data import answer_vocab, tokenizer
from multimodal.data import pp
from multimodal.data.pp import ops, text_ops


def _encode(image: np.ndarray, fmt: str) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format=fmt)
  return buf.getvalue()


def _image(h: int, w: int) -> np.ndarray:
  """A smooth uint8[h, w, 3] gradient, so JPEG stays close to it."""
  y, x = np.mgrid[:h, :w]
  return np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (h + w)], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("vocab") / "answers.txt"
  path.write_text("red\nblue\ngreen\n")
  return str(path)


def test_decode_round_trips_png():
  image = _image(30, 40)
  out = ops.decode()({"image": tf.constant(_encode(image, "PNG"))})["image"]
  assert out.dtype == tf.uint8
  np.testing.assert_array_equal(out.numpy(), image)


def test_decode_jpeg_and_gray_png_to_rgb():
  image = _image(24, 16)
  out = ops.decode()({"image": tf.constant(_encode(image, "JPEG"))})["image"].numpy()
  assert out.shape == (24, 16, 3)
  assert np.abs(out.astype(int) - image).mean() < 4
  gray = ops.decode()({"image": tf.constant(_encode(image[..., 0], "PNG"))})["image"].numpy()
  np.testing.assert_array_equal(gray, np.repeat(image[..., :1], 3, axis=-1))


def test_resize_shapes_and_dtypes():
  image = tf.constant(_image(30, 40))
  assert ops.resize(16)({"image": image})["image"].shape == (16, 16, 3)
  out = ops.resize((8, 12))({"image": image})["image"]
  assert (out.shape, out.dtype) == ((8, 12, 3), tf.float32)
  assert ops.resize(8, method="nearest")({"image": image})["image"].dtype == tf.uint8


def test_value_range():
  image = tf.constant([[[0, 127.5, 255]]])
  out = ops.value_range(-1, 1)({"image": image})["image"]
  np.testing.assert_allclose(out.numpy(), [[[-1, 0, 1]]])
  out = ops.value_range(0, 1, in_min=-1, in_max=1)({"image": out})["image"]
  np.testing.assert_allclose(out.numpy(), [[[0, 0.5, 1]]])


def test_keep_and_drop():
  example = {"a": tf.constant(1), "b": tf.constant(2), "c": tf.constant(3)}
  assert set(ops.keep("a", "c")(example)) == {"a", "c"}
  assert set(ops.drop("a")(example)) == {"b", "c"}
  with pytest.raises(KeyError, match="'z'.*has \\['a', 'b', 'c'\\]"):
    ops.keep("a", "z")(example)


def _tok(question: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
  out = text_ops.tok(max_len, "shapes")({"question": tf.constant(question)})
  return out["question_tokens"].numpy(), out["question_mask"].numpy()


def test_tok_bos_first_then_pieces_then_zero_padding():
  question = "what color is the small circle?"
  ids = tokenizer.load("shapes").encode(question)
  tokens, mask = _tok(question, 16)
  assert tokens.dtype == np.int32 and mask.dtype == bool
  np.testing.assert_array_equal(tokens, [tokenizer.BOS_ID, *ids] + [0] * (15 - len(ids)))
  np.testing.assert_array_equal(mask, np.arange(16) < 1 + len(ids))


def test_tok_empty_question_has_only_bos():
  tokens, mask = _tok("", 8)
  np.testing.assert_array_equal(tokens, [tokenizer.BOS_ID] + [0] * 7)
  np.testing.assert_array_equal(mask, [True] + [False] * 7)


def test_tok_truncates_long_question_keeping_bos():
  question = "is the large red circle left of the small blue square?"
  ids = tokenizer.load("shapes").encode(question)
  assert len(ids) > 5
  tokens, mask = _tok(question, 5)
  np.testing.assert_array_equal(tokens, [tokenizer.BOS_ID, *ids[:4]])
  assert mask.all()


def _answers(given: list[str], vocab: str, soft: bool = True) -> tuple[int, np.ndarray]:
  out = text_ops.vqa_answers(vocab, soft=soft)({"answers": tf.constant(given, tf.string)})
  return int(out["answer_index"]), out["answer_scores"].numpy()


def test_vqa_answers_soft_scores_of_ten_annotators(vocab_file):
  given = ["blue"] * 4 + ["green"] * 2 + ["red"] + ["pink"] * 3  # pink: out of vocab.
  index, scores = _answers(given, vocab_file)
  assert index == 1
  np.testing.assert_allclose(scores, [1 / 3, 1.0, 2 / 3], rtol=1e-6)
  index, scores = _answers(given, vocab_file, soft=False)
  np.testing.assert_array_equal(scores, [0, 1, 0])


def test_vqa_answers_single_annotator_scores_one(vocab_file):
  index, scores = _answers(["green"], vocab_file)
  assert index == 2
  np.testing.assert_array_equal(scores, [0, 0, 1])


def test_vqa_answers_out_of_vocab_is_minus_one(vocab_file):
  for given in (["pink", "pink"], []):
    index, scores = _answers(given, vocab_file)
    assert index == -1
    np.testing.assert_array_equal(scores, [0, 0, 0])


def test_vqa_answers_ties_go_to_the_earlier_vocab_entry(vocab_file):
  assert _answers(["green", "blue"], vocab_file)[0] == 1


def test_answer_vocab_build_save_load(tmp_path):
  vocab = answer_vocab.build_answer_vocab(["b", "a", "c", "a", "b", "", "d", "a"], top_k=3)
  assert vocab == ("a", "b", "c")
  path = tmp_path / "answers.txt"
  path.write_text("".join(f"{a}\n" for a in vocab))
  assert answer_vocab.load_answer_vocab(str(path)) == vocab
  assert "yes" in answer_vocab.load_answer_vocab("shapes_vqa")
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    answer_vocab.load_answer_vocab(str(tmp_path / "nope.txt"))


def test_unknown_op_names_the_nearest():
  with pytest.raises(KeyError, match="'resise'.*Did you mean 'resize'"):
    pp.parse("decode|resise(64)")


@pytest.mark.parametrize("spec, bad", [
    ("decode|resize(64", "resize(64"),
    ("decode||keep('image')", "''"),
    ("decode|keep(image)", "image"),
    ("decode|resize(**{'size': 3})", "resize"),
])
def test_malformed_spec_names_the_piece(spec, bad):
  with pytest.raises(ValueError, match=bad.replace("(", r"\(").replace("*", r"\*")):
    pp.parse(spec)


def test_wrong_arguments_name_the_op():
  with pytest.raises(TypeError, match="resize\\(64, sise=3\\)"):
    pp.parse("resize(64, sise=3)")


def test_parse_end_to_end_on_a_dataset(vocab_file):
  images = [_encode(_image(30, 40), "PNG"), _encode(_image(50, 20), "JPEG")]
  ds = tf.data.Dataset.from_tensor_slices({
      "image": images,
      "question": ["what color is the circle?", ""],
      "answers": tf.ragged.constant([["red", "red", "blue"], ["pink"]]),
  })
  preprocess = pp.parse(
      "decode|resize(8)|value_range(-1, 1)|tok(max_len=16, model='shapes')"
      f"|vqa_answers(vocab={vocab_file!r})"
      "|keep('image', 'question_tokens', 'question_mask', 'answer_index', 'answer_scores')")
  batch = next(ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).batch(2)
               .as_numpy_iterator())
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      "image": ((2, 8, 8, 3), np.float32),
      "question_tokens": ((2, 16), np.int32),
      "question_mask": ((2, 16), bool),
      "answer_index": ((2,), np.int32),
      "answer_scores": ((2, 3), np.float32),
  }
  assert -1 <= batch["image"].min() and batch["image"].max() <= 1
  np.testing.assert_array_equal(batch["question_mask"].sum(1), [7, 1])
  np.testing.assert_array_equal(batch["answer_index"], [0, -1])


def test_tok_encodes_a_list_of_texts_row_by_row():
  op = text_ops.tok(max_len=6, model="shapes_text", key="captions", out_key="t", mask_key="m")
  texts = ["a red circle", "two blue squares above a green triangle"]
  out = op({"captions": tf.constant(texts)})
  assert out["t"].shape == (2, 6) and out["m"].shape == (2, 6)
  for i, text in enumerate(texts):
    one = op({"captions": tf.constant(text)})
    np.testing.assert_array_equal(out["t"][i], one["t"])
    np.testing.assert_array_equal(out["m"][i], one["m"])


def test_tok_prompt_answer_with_a_fixed_prompt():
  sp = tokenizer.load("shapes_text")
  op = text_ops.tok_prompt_answer(max_len=20, model="shapes_text", prompt="caption",
                                  answer_key="caption")
  out = op({"caption": tf.constant("a red circle")})
  prompt, answer = sp.encode("caption"), sp.encode("a red circle")
  ids = [sp.bos_id(), *prompt, *answer, sp.eos_id()]
  assert out["text_tokens"].numpy().tolist() == ids + [0] * (20 - len(ids))
  assert out["prefix_mask"].numpy().sum() == 1 + len(prompt)


def test_choice_is_seeded_per_example_and_first_without_a_seed():
  op = ops.choice("captions", out_key="caption")
  example = {"captions": tf.constant(["a", "b", "c", "d", "e"])}
  assert op(example)["caption"].numpy() == b"a"  # Evaluation: no seed.
  draws = [op({**example, pp.RNG_KEY: tf.constant([7, i], tf.int64)})["caption"].numpy()
           for i in range(200)]
  again = [op({**example, pp.RNG_KEY: tf.constant([7, i], tf.int64)})["caption"].numpy()
           for i in range(200)]
  assert draws == again
  counts = collections.Counter(draws)
  assert set(counts) == {b"a", b"b", b"c", b"d", b"e"} and min(counts.values()) > 20
  with pytest.raises(tf.errors.InvalidArgumentError, match="is empty"):
    op({"captions": tf.constant([], tf.string), pp.RNG_KEY: tf.constant([7, 0], tf.int64)})


def test_keep_carries_the_seed_of_random_ops():
  example = {"a": tf.constant(1), "b": tf.constant(2), pp.RNG_KEY: tf.constant([1, 2], tf.int64)}
  assert set(ops.keep("a")(example)) == {"a", pp.RNG_KEY}
