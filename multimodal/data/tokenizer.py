"""Sentencepiece tokenizers: load a packaged or user model, train one on a dataset's text.

Train on a TFDS split's questions (or a user's JSONL file) with:
  python -m multimodal.data.tokenizer --dataset=shapes_vqa --split=train \
      --output=/tmp/sp.model --vocab_size=256
  python -m multimodal.data.tokenizer --jsonl=/data/vqa/train.jsonl --output=... --vocab_size=...
"""
from __future__ import annotations

import functools
import io
import itertools
import os
from typing import Any, Iterable, Iterator

from absl import app, flags, logging
import numpy as np
import sentencepiece as spm
import tensorflow as tf
import tensorflow_datasets as tfds

# Ids fixed for every model trained here: padding with 0 is then always the pad token.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

# Packaged tokenizer name -> file under multimodal/assets/. shapes_sp.model (BPE, 160 pieces:
# every shapes question word is one piece, so a question is at most 12) was made with
#   python -m multimodal.data.tokenizer --dataset=shapes_vqa/small --split=train \
#       --with_answers --model_type=bpe --vocab_size=160 --output=multimodal/assets/shapes_sp.model
# shapes_text_sp.model (BPE, 200 pieces) also covers the shapes_captions captions (at most 23
# pieces each, a question at most 12), for the text decoders and towers trained on both:
#   python -m multimodal.data.tokenizer --dataset=shapes_vqa/small --split=train \
#       --with_answers --captions_from=shapes_captions/small --model_type=bpe \
#       --vocab_size=200 --output=multimodal/assets/shapes_text_sp.model
# shapes_vl_sp.model (BPE, 256 pieces and a `<mask>` piece for masked language modeling) also
# covers the shapes_nlvr statements, for BEiT-3 pretrained on captions and fine-tuned on NLVR:
#   python -m multimodal.data.tokenizer --dataset=shapes_vqa --split=train --with_answers \
#       --captions_from=shapes_captions --statements_from=shapes_nlvr --model_type=bpe \
#       --vocab_size=256 --user_defined_symbols='<mask>' \
#       --output=multimodal/assets/shapes_vl_sp.model
_ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
_PACKAGED = {"shapes": "shapes_sp.model", "shapes_text": "shapes_text_sp.model",
             "shapes_vl": "shapes_vl_sp.model"}


def model_path(model: str) -> str:
  """A packaged tokenizer's name -> its file; anything else is taken as a path."""
  return os.path.join(_ASSETS_DIR, _PACKAGED[model]) if model in _PACKAGED else model


def load(model: str) -> spm.SentencePieceProcessor:
  """Loads (once per path) a sentencepiece model: a packaged name or a `.model` path."""
  return _load_path(model_path(model))


@functools.lru_cache(maxsize=None)
def _load_path(path: str) -> spm.SentencePieceProcessor:
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"No sentencepiece model at {path!r}: expected a .model file or one of the packaged"
        f" tokenizers {sorted(_PACKAGED)}.")
  with tf.io.gfile.GFile(path, "rb") as f:  # gfile so that models may live on GCS.
    return spm.SentencePieceProcessor(model_proto=f.read())


def train(texts: Iterable[str], output_path: str, vocab_size: int, *,
          model_type: str = "unigram", normalization_rule_name: str = "identity",
          character_coverage: float = 1.0, **trainer_kwargs: Any) -> None:
  """Trains a sentencepiece model on `texts` and writes it to `output_path`.

  Ids: pad 0, unk 1, bos 2, eos 3. `vocab_size` is an upper bound (hard_vocab_limit=False),
  as small corpora support fewer pieces. "identity" normalization keeps the file small (no
  embedded normalization table) but is case-sensitive; use "nmt_nfkc" for messy text.
  character_coverage=1.0 keeps every character seen, so training text never maps to <unk>.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=(t for t in texts if t), model_writer=model, vocab_size=vocab_size,
      model_type=model_type, normalization_rule_name=normalization_rule_name,
      character_coverage=character_coverage, hard_vocab_limit=False, pad_id=PAD_ID,
      unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, minloglevel=2, **trainer_kwargs)
  tf.io.gfile.makedirs(os.path.dirname(output_path) or ".")
  with tf.io.gfile.GFile(output_path, "wb") as f:
    f.write(model.getvalue())


def iter_texts(dataset: str, feature: str, split: str = "train", data_dir: str | None = None
               ) -> Iterator[str]:
  """Every text of a TFDS split's `feature`, a text or a list of texts (shapes_captions'
  `captions`, shapes_nlvr's `statement`); the images stay encoded."""
  builder = tfds.builder(dataset, data_dir=data_dir)
  decoders = {name: tfds.decode.SkipDecoding() for name, f in builder.info.features.items()
              if isinstance(f, tfds.features.Image)}
  ds = builder.as_dataset(split=split, decoders=decoders)
  for texts in ds.map(lambda ex: ex[feature]).as_numpy_iterator():
    yield from (t.decode() for t in np.atleast_1d(texts))


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  records = []  # Captions or statements alone are enough.
  if f.dataset or f.jsonl or not (f.captions_from or f.statements_from):
    records = jsonl_vqa.iter_vqa_text(
        dataset=f.dataset, split=f.split, data_dir=f.data_dir, jsonl=f.jsonl)
  texts = itertools.chain(
      (t for q, answers in records for t in [q, *(answers if f.with_answers else ())]),
      *(iter_texts(d, "captions", f.split, f.data_dir) for d in f.captions_from),
      *(iter_texts(d, "statement", f.split, f.data_dir) for d in f.statements_from))
  extra = {"user_defined_symbols": f.user_defined_symbols} if f.user_defined_symbols else {}
  train(texts, f.output, f.vocab_size, model_type=f.model_type, **extra)
  logging.info("Wrote %s: %d pieces, %d bytes.", f.output, load(f.output).vocab_size(),
               tf.io.gfile.stat(f.output).length)


if __name__ == "__main__":
  # Only the command reads datasets (`main` uses this import), and only it defines flags: the
  # ops importing this module then pull in no dataset builders and add no flags.
  from multimodal.data.builders import jsonl_vqa  # pylint: disable=g-import-not-at-top
  jsonl_vqa.define_source_flags()
  flags.DEFINE_bool("with_answers", False, "Also train on the answers' text.")
  flags.DEFINE_multi_string("captions_from", [], "Also (or, without --dataset and --jsonl, "
                            "only) train on the captions of these TFDS datasets' --split (e.g. "
                            "shapes_captions/small).")
  flags.DEFINE_multi_string("statements_from", [], "Also train on the statements of these "
                            "TFDS datasets' --split (e.g. shapes_nlvr/small).")
  flags.DEFINE_string("output", None, "Where to write the .model file.", required=True)
  flags.DEFINE_integer("vocab_size", None, "Upper bound on the number of pieces.", required=True)
  flags.DEFINE_list("user_defined_symbols", [], "Pieces always kept whole (e.g. '<mask>').")
  flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe", "char", "word"],
                    "Sentencepiece model type.")
  app.run(main)
