"""Text preprocessing ops: sentencepiece tokenization and VQA answer targets."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from multimodal.data import answer_vocab, tokenizer
from multimodal.data.pp.registry import PP_OPS, Example, PpFn


@PP_OPS.register("tok")
def tok(max_len: int, model: str, key: str = "question", out_key: str = "question_tokens",
        mask_key: str = "question_mask") -> PpFn:
  """Text tf.string[] -> `out_key` int32[max_len] tokens and `mask_key` bool[max_len].

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

  def encode(text: bytes | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # UTF-8 bytes inside tf.data, a 0-d object array when run eagerly.
    ids = [bos, *sp.encode(np.asarray(text, dtype=object).item())][:max_len]
    tokens = np.zeros(max_len, np.int32)
    tokens[:len(ids)] = ids
    return tokens, np.arange(max_len) < len(ids)

  def apply(example: Example) -> Example:
    tokens, mask = tf.numpy_function(encode, [example[key]], [tf.int32, tf.bool],
                                     stateful=False)
    tokens.set_shape([max_len])  # numpy_function's outputs have unknown shapes.
    mask.set_shape([max_len])
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
