"""BLEU and CIDEr-D against the coco-caption reference implementation (pycocoevalcap)."""
import random

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from multimodal.evaluators import caption_metrics

WORDS = "a two red blue green circle circles square squares above below left of right the".split()


def random_corpus(seed, images=30):
  rng = random.Random(seed)
  sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9)))
  hypotheses = [sentence() for _ in range(images)]
  references = [[sentence() for _ in range(rng.randint(1, 5))] for _ in range(images)]
  return hypotheses, references


def reference_scores(hypotheses, references):
  gts = {i: refs for i, refs in enumerate(references)}
  res = {i: [h] for i, h in enumerate(hypotheses)}
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  cider, per_image = Cider().compute_score(gts, res)
  return bleu, cider, per_image


@pytest.mark.parametrize("seed", range(5))
def test_matches_pycocoevalcap(seed):
  hypotheses, references = random_corpus(seed)
  want_bleu, want_cider, want_per_image = reference_scores(hypotheses, references)
  assert caption_metrics.bleu(hypotheses, references) == pytest.approx(want_bleu, rel=1e-9)
  cider, per_image = caption_metrics.cider_d(hypotheses, references)
  assert cider == pytest.approx(want_cider, rel=1e-9)
  assert per_image == pytest.approx(list(want_per_image), rel=1e-9, abs=1e-12)


def test_a_caption_equal_to_its_references_scores_high():
  references = [["two red circles above a blue square"] * 3, ["a green square"] * 3,
                ["one blue circle left of a red square"] * 3]
  hypotheses = [refs[0] for refs in references]
  assert caption_metrics.bleu(hypotheses, references)[3] == pytest.approx(1.0)
  assert caption_metrics.cider_d(hypotheses, references)[0] > 5


def test_tokenize():
  assert caption_metrics.tokenize("Two red circles, above a blue square.") == (
      "two red circles above a blue square")


def test_bad_input_is_a_clear_error():
  with pytest.raises(ValueError, match="2 captions but 1 reference sets"):
    caption_metrics.bleu(["a", "b"], [["a"]])
  with pytest.raises(ValueError, match="at least one reference"):
    caption_metrics.cider_d(["a"], [[]])
