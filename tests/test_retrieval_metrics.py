"""Retrieval recall against cases worked out by hand."""
import numpy as np
import pytest

from multimodal.evaluators.retrieval_metrics import recall_at_k


def test_hand_worked_recall():
  image = np.eye(3)
  # Texts 0, 1 describe image 0; text 2 image 1; text 3 image 2.
  text = np.array([[0.9, 0.1, 0.0],   # closest to image 0 (right)
                   [0.0, 0.2, 0.8],   # closest to image 2 (wrong image: its own ranks 3rd)
                   [0.1, 0.9, 0.0],   # image 1 (right)
                   [0.0, 0.7, 0.3]])  # image 1 (wrong: its own image 2 ranks 2nd)
  text_image = np.array([0, 0, 1, 2])
  got = recall_at_k(image, text, text_image, ks=(1, 2, 3))
  # Text to image ranks: 0, 2, 0, 1.
  assert got["text_to_image/R@1"] == pytest.approx(2 / 4)
  assert got["text_to_image/R@2"] == pytest.approx(3 / 4)
  assert got["text_to_image/R@3"] == 1.0
  # Image to text: image 0's best own text (0.9) is first; image 1's own text 2 (0.9) is
  # first; image 2's own text 3 (0.3) is beaten by text 1 (0.8): rank 1.
  assert got["image_to_text/R@1"] == pytest.approx(2 / 3)
  assert got["image_to_text/R@2"] == 1.0


def test_ties_count_against_the_query():
  got = recall_at_k(np.ones((4, 2)), np.ones((4, 2)), np.arange(4), ks=(1,))
  assert got == {"image_to_text/R@1": 0.0, "text_to_image/R@1": 0.0}


def test_bad_input_is_a_clear_error():
  with pytest.raises(ValueError, match="an image index"):
    recall_at_k(np.eye(2), np.eye(2), np.array([0, 2]))
  with pytest.raises(ValueError, match="at least one caption"):
    recall_at_k(np.eye(2), np.eye(2), np.array([0, 0]))
