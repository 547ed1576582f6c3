"""Answer vocabularies of VQA classifiers: the answers a model picks from, by index.

Write the top-K answers of a split (VQAv2 codebases keep 3129) with:
  python -m multimodal.data.answer_vocab --jsonl=/data/vqa/train.jsonl --top_k=3129 \
      --output=/data/vqa/answers.txt
(or --dataset=NAME --split=train: every annotator answer of a TFDS split is counted). For VQAv2,
count each question's multiple-choice answer in the official annotations, as its codebases do
(see `vqav2.multiple_choice_answers`); add the val file to train on train + val:
  python -m multimodal.data.answer_vocab --top_k=3129 --output=/data/vqa/answers.txt \
      --vqav2_annotations=/data/vqa/v2_mscoco_train2014_annotations.json
"""
from __future__ import annotations

import collections
from typing import Iterable

from absl import app, flags, logging
import tensorflow as tf


def load_answer_vocab(spec: str) -> tuple[str, ...]:
  """`"shapes_vqa"` -> its fixed answers; else a text file with one answer per line."""
  if spec == "shapes_vqa":
    from multimodal.data.shapes import vqa_questions  # pylint: disable=g-import-not-at-top
    answers = tuple(vqa_questions.ANSWERS)
  elif tf.io.gfile.exists(spec):
    with tf.io.gfile.GFile(spec) as f:
      answers = tuple(line.rstrip("\r\n") for line in f if line.strip())
  else:
    raise FileNotFoundError(
        f"Answer vocab {spec!r} is neither 'shapes_vqa' nor an existing file (one answer per"
        " line).")
  duplicates = sorted(a for a, n in collections.Counter(answers).items() if n > 1)
  if duplicates:
    raise ValueError(f"Answer vocab {spec!r} lists {duplicates} more than once.")
  return answers


def build_answer_vocab(answers_iter: Iterable[str], top_k: int) -> tuple[str, ...]:
  """The `top_k` most frequent non-empty answers; ties in alphabetical order."""
  counts = collections.Counter(a for a in answers_iter if a.strip())
  return tuple(sorted(counts, key=lambda a: (-counts[a], a))[:top_k])


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  if f.vqav2_annotations:
    if f.dataset or f.jsonl:
      raise app.UsageError("Give one of --vqav2_annotations, --dataset and --jsonl.")
    answers = vqav2.multiple_choice_answers(f.vqav2_annotations)
  else:
    records = jsonl_vqa.iter_vqa_text(
        dataset=f.dataset, split=f.split, data_dir=f.data_dir, jsonl=f.jsonl)
    answers = (a for _, question_answers in records for a in question_answers)
  vocab = build_answer_vocab(answers, f.top_k)
  with tf.io.gfile.GFile(f.output, "w") as out:
    out.write("".join(f"{a}\n" for a in vocab))
  logging.info("Wrote %d answers to %s.", len(vocab), f.output)


if __name__ == "__main__":
  # Only the command reads datasets (`main` uses this import), and only it defines flags: the
  # ops importing this module then pull in no dataset builders and add no flags.
  from multimodal.data.builders import jsonl_vqa, vqav2  # pylint: disable=g-import-not-at-top
  jsonl_vqa.define_source_flags()
  flags.DEFINE_list("vqav2_annotations", None, "VQAv2 annotation files (v2_mscoco_*_annotations"
                    ".json) whose multiple-choice answers to count; or use --dataset or --jsonl.")
  flags.DEFINE_integer("top_k", 3129, "How many of the most frequent answers to keep.")
  flags.DEFINE_string("output", None, "Where to write the answers, one per line.", required=True)
  app.run(main)
