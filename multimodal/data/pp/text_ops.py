"""Text preprocessing ops: sentencepiece tokenization and VQA answer targets."""
from __future__ import annotations

import collections
from typing import Any

import numpy as np
import tensorflow as tf

from multimodal.data import answer_vocab, tokenizer
from multimodal.data.pp.registry import PP_OPS, Example, PpFn


@PP_OPS.register("tok")
def tok(max_len: int, model: str, key: str = "question", out_key: str = "question_tokens",
        mask_key: str = "question_mask") -> PpFn:
  """Text tf.string[] -> `out_key` int32[max_len] tokens and `mask_key` bool[max_len]; a list
  of texts tf.string[N] (e.g. all of an image's captions) -> int32[N, max_len], bool[N, max_len].

  Tokens are [BOS, pieces..., 0, 0, ...]; the mask is True on BOS and the pieces. BOS always
  comes first, so an empty text still has exactly one valid token to pool over. A text of
  more than max_len - 1 pieces is truncated: BOS is kept and the tail dropped.
  `model` is a packaged tokenizer's name (e.g. "shapes") or a sentencepiece .model path.
  """
  if max_len < 1:
    raise ValueError(f"tok: max_len must be >= 1 (room for BOS), got {max_len}.")
  sp = tokenizer.load(model)
  bos = sp.bos_id()
  if bos < 0:
    raise ValueError(f"tok: tokenizer {model!r} has no BOS token; train it with bos_id >= 0.")

  def encode_one(text: str | bytes) -> tuple[np.ndarray, np.ndarray]:
    ids = [bos, *sp.encode(text)][:max_len]
    tokens = np.zeros(max_len, np.int32)
    tokens[:len(ids)] = ids
    return tokens, np.arange(max_len) < len(ids)

  def encode(texts: bytes | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # UTF-8 bytes inside tf.data, object arrays when run eagerly.
    texts = np.asarray(texts, dtype=object)
    if texts.ndim == 0:
      return encode_one(texts.item())
    encoded = [encode_one(t) for t in texts]
    return (np.stack([t for t, _ in encoded]).reshape(-1, max_len),
            np.stack([m for _, m in encoded]).reshape(-1, max_len))

  def apply(example: Example) -> Example:
    text = example[key]
    if text.shape.rank not in (0, 1):
      raise ValueError(f"tok: {key!r} must be a text or a list of texts, got shape {text.shape}.")
    tokens, mask = tf.numpy_function(encode, [text], [tf.int32, tf.bool], stateful=False)
    shape = [max_len] if text.shape.rank == 0 else [text.shape[0], max_len]
    tokens.set_shape(shape)  # numpy_function's outputs have unknown shapes.
    mask.set_shape(shape)
    return {**example, out_key: tokens, mask_key: mask}

  return apply


@PP_OPS.register("vqa_answers")
def vqa_answers(vocab: str, key: str = "answers", soft: bool = True) -> PpFn:
  """Annotators' answers tf.string[N] -> `answer_index` int32[] and `answer_scores` float32[V].

  `vocab` is an answer vocab spec (see `answer_vocab.load_answer_vocab`); answers match its
  entries exactly. answer_index is the most frequent in-vocabulary answer (ties: the earlier
  vocab entry), -1 when none is in the vocab. With soft=True, answer_scores holds VQA soft
  scores min(1, count / min(3, N)): the usual count / 3 with 3+ annotators, while with fewer
  an answer all of them gave scores 1 (a single-answer dataset gets 1.0 for its answer).
  With soft=False it is the one-hot of answer_index (all zeros for -1).
  """
  answers = answer_vocab.load_answer_vocab(vocab)
  num_answers = len(answers)
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(answers), tf.range(num_answers, dtype=tf.int32)),
      default_value=-1)

  def apply(example: Example) -> Example:
    given = example[key]
    ids = table.lookup(given)
    # Negative (out-of-vocab) ids are dropped by the segment sum.
    counts = tf.math.unsorted_segment_sum(tf.ones_like(ids, tf.float32), ids, num_answers)
    index = tf.where(tf.reduce_max(counts) > 0, tf.argmax(counts, output_type=tf.int32), -1)
    if soft:
      num_annotators = tf.cast(tf.size(given), tf.float32)
      scores = tf.minimum(1.0, counts / tf.clip_by_value(num_annotators, 1.0, 3.0))
    else:
      scores = tf.one_hot(index, num_answers)
    return {**example, "answer_index": index, "answer_scores": scores}

  return apply


@PP_OPS.register("tok_prompt_answer")
def tok_prompt_answer(max_len: int, model: str, prompt_key: str = "question",
                      answer_key: str = "answers", with_answer: bool = True,
                      prompt: str | None = None) -> PpFn:
  """A prompt and its answer as one decoder sequence, for PaLI-style generators.

  The prompt is the feature `prompt_key`, or the fixed text `prompt` when given (captioning:
  `prompt='caption'`, answer_key a caption).

  -> text_tokens int32[max_len] = [BOS, prompt pieces, answer pieces, EOS, 0, ...],
  text_mask bool[max_len] (real tokens) and prefix_mask bool[max_len] (BOS and the prompt:
  what the model is given, not trained to say). The answer is the most frequent of the
  annotators' answers (ties: the first given). With with_answer=False (evaluation, where the
  model writes the answer) the sequence ends after the prompt. A sequence longer than
  max_len loses the end of its prompt first, then of its answer; EOS is always kept.
  """
  if max_len < 2:
    raise ValueError(f"tok_prompt_answer: max_len must be >= 2 (BOS and EOS), got {max_len}.")
  sp = tokenizer.load(model)
  bos, eos = sp.bos_id(), sp.eos_id()
  if bos < 0 or eos < 0:
    raise ValueError(f"tok_prompt_answer: tokenizer {model!r} needs BOS and EOS tokens.")

  def encode(prompt_text: Any, answers: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    prompt_ids = sp.encode(_text(prompt_text))
    answer_ids = []
    if with_answer:
      given = [_text(a) for a in np.atleast_1d(np.asarray(answers, dtype=object))]
      answer_ids = sp.encode(collections.Counter(given).most_common(1)[0][0]) + [eos]
      if len(answer_ids) > max_len - 1:  # Room for BOS: the answer's end goes, EOS stays.
        answer_ids = answer_ids[:max_len - 2] + [eos]
    prompt_ids = [bos, *prompt_ids][:max_len - len(answer_ids)]
    ids = prompt_ids + answer_ids
    tokens = np.zeros(max_len, np.int32)
    tokens[:len(ids)] = ids
    positions = np.arange(max_len)
    return tokens, positions < len(ids), positions < len(prompt_ids)

  def apply(example: Example) -> Example:
    answers = example[answer_key] if with_answer else tf.constant([""])
    text = example[prompt_key] if prompt is None else tf.constant(prompt)
    outputs = tf.numpy_function(encode, [text, answers],
                                [tf.int32, tf.bool, tf.bool], stateful=False)
    for output in outputs:
      output.set_shape([max_len])
    return {**example, **dict(zip(("text_tokens", "text_mask", "prefix_mask"), outputs))}

  return apply


def _text(value: Any) -> str:
  """A string from a tf.data string: UTF-8 bytes, or a 0-d object array when run eagerly."""
  value = np.asarray(value, dtype=object).item()
  return value.decode() if isinstance(value, bytes) else value
