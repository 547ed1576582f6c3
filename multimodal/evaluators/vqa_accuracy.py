"""The official VQA accuracy, with the semantics of GT-Vision-Lab's `vqaEval.py` (master).

For one question with (usually ten) annotator answers:
- the prediction and the answers have newlines and tabs turned into spaces and are stripped;
- only when the annotators disagree (more than one distinct answer) are the answers and the
  prediction normalised: punctuation, then lower case, number words to digits, articles dropped
  and contractions restored. When they all agree, the comparison is exact (so "Yes" against
  ten "yes" scores 0, as in the script);
- the score is min(#other annotators matching / 3, 1) averaged over the leave-one-out subsets
  of the annotators ("10 choose 9").
Averages per answer type and per question type are means of the per-question scores.

Quirks of the script kept on purpose (the numbers must match it): the period regex
`(?!<=\\d)(\\.)(?!\\d)` is a lookahead (not a lookbehind), so a period is removed unless a digit
follows it, and `re.UNICODE` is passed as the `count` of `re.sub`, so at most 32 periods go; a
punctuation mark is deleted when it touches a space (or the text has a digit-comma-digit) and
replaced by a space otherwise, testing the text as it was before any replacement.
"""
from __future__ import annotations

import collections
import re
from typing import Iterable, Mapping, Sequence

_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                "@", "`", ",", "?", "!")
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
# Contractions written without their apostrophe, as the script restores them.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've"}


def clean_whitespace(text: str) -> str:
  """Newlines and tabs to spaces, then stripped (done to every answer and prediction)."""
  return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
  out = text
  digit_comma_digit = _COMMA_BETWEEN_DIGITS.search(text) is not None
  for mark in _PUNCTUATION:
    touches_space = mark + " " in text or " " + mark in text
    out = out.replace(mark, "" if touches_space or digit_comma_digit else " ")
  return _PERIOD.sub("", out, re.UNICODE)  # The script's `count` (32), kept.


def process_digit_article(text: str) -> str:
  words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
  words = [word for word in words if word not in _ARTICLES]
  return " ".join(_CONTRACTIONS.get(word, word) for word in words)


def normalize(text: str) -> str:
  """What the script compares when the annotators disagree."""
  return process_digit_article(process_punctuation(text))


def compared_forms(prediction: str, answers: Sequence[str]) -> tuple[str, list[str]]:
  """The prediction and answers as the script compares them: whitespace cleaned, and
  normalised only when the annotators disagree."""
  if not answers:
    raise ValueError("VQA accuracy needs at least one annotator answer, got none.")
  answers = [clean_whitespace(a) for a in answers]
  prediction = clean_whitespace(prediction)
  if len(set(answers)) > 1:
    answers = [normalize(a) for a in answers]
    prediction = normalize(prediction)
  return prediction, list(answers)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """The score of one prediction against the annotators' answers, in [0, 1]."""
  prediction, answers = compared_forms(prediction, answers)
  matches = sum(a == prediction for a in answers)
  # Leave annotator i out: the others match `matches - [answer i matches]` times.
  return sum(min(1.0, (matches - (a == prediction)) / 3) for a in answers) / len(answers)


def soft_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """min(1, matches / min(3, N)) over N annotator answers, compared as `vqa_accuracy` compares
  them: for data with fewer annotators than VQA's ten (one answer: exact match after the same
  cleaning), where the leave-one-out average of the script is not defined (one annotator
  would always score 0). It is the score `vqa_answers` gives a classifier's answers."""
  prediction, answers = compared_forms(prediction, answers)
  return min(1.0, sum(a == prediction for a in answers) / min(3, len(answers)))


METRICS = {"vqa": vqa_accuracy, "soft": soft_accuracy}


def accuracy_report(predictions: Iterable[str], answers: Iterable[Sequence[str]],
                    groups: Mapping[str, Iterable[str]] | None = None,
                    metric: str = "vqa") -> dict[str, float]:
  """{"accuracy": mean score, "accuracy/KIND/VALUE": mean score of the questions whose KIND
  (e.g. "answer_type", "question_type": one label per question in `groups[KIND]`) is VALUE}."""
  if metric not in METRICS:
    raise ValueError(f"Unknown VQA metric {metric!r}; use one of {sorted(METRICS)}.")
  scores = [METRICS[metric](p, a) for p, a in zip(predictions, answers, strict=True)]
  if not scores:
    raise ValueError("No questions to score.")
  report = {"accuracy": sum(scores) / len(scores)}
  for kind, labels in (groups or {}).items():
    by_label = collections.defaultdict(list)
    for label, score in zip(labels, scores, strict=True):
      by_label[label].append(score)
    report.update({f"accuracy/{kind}/{label}": sum(s) / len(s)
                   for label, s in sorted(by_label.items())})
  return report
