"""Captioning metrics with the semantics of the coco-caption reference (pycocoevalcap):
corpus BLEU-1..4 and CIDEr-D, on captions already split into words (`tokenize`).

BLEU (`bleu/bleu_scorer.py`, option "closest"): clipped n-gram matches and guesses summed over
the corpus; BLEU-k is the geometric mean of the first k precisions, each (matches + 1e-15) /
(guesses + 1e-9); the brevity penalty exp(1 - r/c) when the corpus length c is below r, the sum
over captions of the reference length closest to each caption's (ties: the shorter).

CIDEr-D (`cider/cider_scorer.py`, n = 4, sigma = 6): each caption and reference becomes tf-idf
vectors of its 1..4-grams, the idf log(#images / #images whose references hold the n-gram)
over the evaluated corpus; per n, the clipped cosine sum_g min(h_g, r_g) r_g / (|h| |r|) times
exp(-(len_h - len_r)^2 / (2 sigma^2)), the lengths counted as the script does (the number of
bigrams); averaged over n and over the references, times 10.
"""
from __future__ import annotations

import collections
import math
import re
from typing import Sequence

Ngrams = collections.Counter  # tuple of words -> count

# Tokens the coco-caption PTB tokenizer drops (after splitting punctuation off words).
_PUNCTUATION = re.compile(r"[.?!,:;\-]+|''|``|`|'")


def tokenize(caption: str) -> str:
  """Lower case, punctuation removed, words joined by single spaces."""
  return " ".join(_PUNCTUATION.sub(" ", caption.lower()).split())


def ngrams(words: Sequence[str], n: int) -> Ngrams:
  """Counts of every k-gram of `words` for k = 1..n."""
  return Ngrams(tuple(words[i:i + k]) for k in range(1, n + 1)
                for i in range(len(words) - k + 1))


def _check(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} captions but {len(references)} reference sets.")
  if not hypotheses:
    raise ValueError("No captions to score.")
  if any(not refs for refs in references):
    raise ValueError("Every caption needs at least one reference.")


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4
         ) -> list[float]:
  """Corpus [BLEU-1, ..., BLEU-n] of tokenized captions against their references."""
  _check(hypotheses, references)
  matches, guesses = [0] * n, [0] * n
  hyp_length = ref_length = 0
  for hypothesis, refs in zip(hypotheses, references):
    words = hypothesis.split()
    counts = ngrams(words, n)
    best = collections.Counter()
    for ref in refs:
      best |= ngrams(ref.split(), n)  # the most times any one reference holds each n-gram
    for gram, count in counts.items():
      matches[len(gram) - 1] += min(count, best[gram])
    for k in range(n):
      guesses[k] += max(0, len(words) - k)
    hyp_length += len(words)
    ref_length += min((abs(len(r.split()) - len(words)), len(r.split())) for r in refs)[1]
  scores, product = [], 1.0
  for k in range(n):
    product *= (matches[k] + 1e-15) / (guesses[k] + 1e-9)
    scores.append(product ** (1 / (k + 1)))
  ratio = (hyp_length + 1e-15) / (ref_length + 1e-9)
  if ratio < 1:
    scores = [s * math.exp(1 - 1 / ratio) for s in scores]
  return scores


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4,
            sigma: float = 6.0) -> tuple[float, list[float]]:
  """(corpus CIDEr-D, per-caption scores) of tokenized captions against their references."""
  _check(hypotheses, references)
  ref_counts = [[ngrams(r.split(), n) for r in refs] for refs in references]
  document_frequency = collections.Counter(
      gram for refs in ref_counts for gram in set().union(*refs))
  log_images = math.log(len(references))

  def tfidf(counts: Ngrams) -> tuple[list[dict], list[float], int]:
    vectors = [{} for _ in range(n)]
    for gram, tf in counts.items():
      vectors[len(gram) - 1][gram] = tf * (log_images - math.log(
          max(1.0, document_frequency[gram])))
    norms = [math.sqrt(sum(v * v for v in vec.values())) for vec in vectors]
    length = sum(tf for gram, tf in counts.items() if len(gram) == 2)  # as the script counts
    return vectors, norms, length

  scores = []
  for hypothesis, refs in zip(hypotheses, ref_counts):
    vec, norm, length = tfidf(ngrams(hypothesis.split(), n))
    total = 0.0
    for ref in refs:
      ref_vec, ref_norm, ref_length = tfidf(ref)
      penalty = math.exp(-((length - ref_length) ** 2) / (2 * sigma ** 2))
      for k in range(n):
        value = sum(min(h, ref_vec[k].get(g, 0.0)) * ref_vec[k].get(g, 0.0)
                    for g, h in vec[k].items())
        if norm[k] and ref_norm[k]:
          value /= norm[k] * ref_norm[k]
        total += value * penalty
    scores.append(total / n / len(refs) * 10.0)
  return sum(scores) / len(scores), scores
