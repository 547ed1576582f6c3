"""The official VQA accuracy against cases worked out by hand from GT-Vision-Lab's vqaEval.py."""
import pytest

from multimodal.evaluators.vqa_accuracy import (accuracy_report, normalize, process_punctuation,
                                                 soft_accuracy, vqa_accuracy)


@pytest.mark.parametrize("prediction, answers, want", [
    # Unanimous annotators: no normalisation, an exact comparison.
    ("yes", ["yes"] * 10, 1.0),
    ("Yes", ["yes"] * 10, 0.0),
    ("two", ["2"] * 10, 0.0),
    ("yes\n", ["yes"] * 10, 1.0),  # whitespace is always cleaned
    # Disagreeing annotators: both sides normalised.
    ("Yes", ["yes"] * 9 + ["no"], 1.0),
    ("a dog.", ["dog"] * 2 + ["the dog"] * 2 + ["cat"] * 6, 1.0),
    # 2 of 10 say "2": leaving out one of them, 1 match (1/3); leaving out another, 2 (2/3).
    ("two", ["2"] * 2 + ["3"] * 8, (2 * (1 / 3) + 8 * (2 / 3)) / 10),
    # A hyphen between letters becomes a space.
    ("left-hand", ["left hand"] * 3 + ["right"] * 7, (3 * (2 / 3) + 7 * 1.0) / 10),
    ("3.5", ["3.5"] * 4 + ["4"] * 6, 1.0),  # a period before a digit stays
    ("1,000", ["1000"] * 5 + ["many"] * 5, 1.0),  # digit-comma-digit: commas deleted
    ("dont know", ["don't know"] * 3 + ["no"] * 7, 0.9),  # contraction restored
    ("cat", ["dog"] * 5 + ["bird"] * 5, 0.0),
    ("dog", ["dog"], 0.0),  # one annotator: leaving them out leaves no match
])
def test_scores_match_the_script(prediction, answers, want):
  assert vqa_accuracy(prediction, answers) == pytest.approx(want)


def test_normalize():
  assert normalize("The Two dogs!") == "2 dogs"
  assert normalize("yes.") == "yes"
  assert normalize("(red) , blue") == "red blue"  # "(" spaced; ")" and "," touch a space: deleted
  assert process_punctuation("(red) , blue") == " red  blue"
  assert normalize("an apple; a pear") == "apple pear"  # ";" touches a space: deleted


def test_report_per_group():
  report = accuracy_report(
      ["yes", "2", "red"],
      [["yes"] * 10, ["2"] * 10, ["blue"] * 10],
      groups={"answer_type": ["yes/no", "number", "other"],
              "question_type": ["is the", "how many", "what color"]})
  assert report["accuracy"] == pytest.approx(2 / 3)
  assert report["accuracy/answer_type/number"] == 1.0
  assert report["accuracy/answer_type/other"] == 0.0
  assert report["accuracy/question_type/is the"] == 1.0


def test_bad_input_is_a_clear_error():
  with pytest.raises(ValueError, match="at least one annotator answer"):
    vqa_accuracy("yes", [])
  with pytest.raises(ValueError):
    accuracy_report(["yes"], [["yes"], ["no"]])  # lengths differ


def test_soft_accuracy_for_fewer_annotators():
  assert soft_accuracy("dog", ["dog"]) == 1.0  # one annotator: exact match
  assert soft_accuracy("Dog", ["dog"]) == 0.0  # unanimous: no normalisation, as the script
  assert soft_accuracy("dog", ["dog", "cat"]) == 0.5
  assert soft_accuracy("a dog", ["dog", "dog", "cat", "dog"]) == 1.0
  assert accuracy_report(["dog"], [["dog"]], metric="soft")["accuracy"] == 1.0
  with pytest.raises(ValueError, match="Unknown VQA metric"):
    accuracy_report(["dog"], [["dog"]], metric="exact")
