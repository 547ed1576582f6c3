"""Single-word-answer VQA questions generated from a Shapes scene description.

Every question is unambiguous: an object is named ("the large red circle") only when exactly
one object in the scene matches, and spatial relations are asked only between objects whose
extents do not overlap along the axis in question.

Answers are balanced so that the question text alone does not give them away. Scene attributes
are i.i.d. uniform and positions are mirror-symmetric, so all questions of one template (the
attributes it mentions) are exchangeable: choosing the answer first and then a question
uniformly among the template's questions with that answer leaves every question string with the
same answer distribution as its template, which is balanced by construction.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import re
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from multimodal.data.shapes.phrases import (
    ALL_TEMPLATES,
    ATTRIBUTES,
    RELATIONS,
    VALUES,
    Reference,
    Template,
    phrase,
    reference,
    reference_counts,
    references,
)
from multimodal.data.shapes.render import render
from multimodal.data.shapes.scenes import COLORS, SHAPES, SIZES, Object, Scene, sample_scene

QUESTION_TYPES = ("exist", "count", "color", "shape", "size", "relation", "compare_count")
MAX_COUNT = 6
# The closed answer vocabulary; its order is fixed forever (answer ids index into it).
ANSWERS: tuple[str, ...] = (
    ("yes", "no") + tuple(str(c) for c in range(MAX_COUNT + 1)) + COLORS + SHAPES + SIZES)

# "Is there a small object?" is almost always yes, so size alone is not asked.
_EXIST_TEMPLATES = tuple(t for t in ALL_TEMPLATES if t not in ((), ("size",)))
# Relative weights of the target count 0..6 (among the counts the scene offers), fit by
# iterative proportional scaling on 20k scenes so count answers come out uniform: high counts
# exist only in crowded scenes (and then mostly as "how many objects are there?").
_COUNT_WEIGHTS = (0.0037, 0.0037, 0.009, 0.028, 0.084, 0.28, 1.0)


T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Question:
  text: str
  answer: str
  type: str










def _named_objects(scene: Scene, templates: tuple[Template, ...]
                   ) -> list[tuple[Object, list[Reference]]]:
  """Objects with their references among `templates` that pick out that object alone."""
  counts = reference_counts(scene)
  named = []
  for obj in scene.objects:
    refs = [r for r in (reference(obj, t) for t in templates) if counts[r] == 1]
    if refs:
      named.append((obj, refs))
  return named


def _pick(rng: np.random.Generator, items: Sequence[T]) -> T:
  return items[rng.integers(len(items))]


def _yes_no(flag: bool) -> str:
  return "yes" if flag else "no"


def _ask_exist(scene: Scene, rng: np.random.Generator) -> Question:
  # The answer first, then a template that offers it, then one of its references.
  answer = bool(rng.integers(2))
  counts = reference_counts(scene)
  options = [refs for t in _EXIST_TEMPLATES
             if (refs := [r for r in references(t) if (counts[r] > 0) == answer])]
  ref = _pick(rng, _pick(rng, options))
  return Question(f"is there a {phrase(ref)}?", _yes_no(answer), "exist")


def _ask_count(scene: Scene, rng: np.random.Generator) -> Question:
  # As for exist: the count first, then a template that offers it, then a reference.
  counts = reference_counts(scene)
  by_count: dict[int, dict[Template, list[Reference]]] = collections.defaultdict(dict)
  for t in ALL_TEMPLATES:
    for r in references(t):
      by_count[counts[r]].setdefault(t, []).append(r)
  available = sorted(by_count)
  weights = np.array([_COUNT_WEIGHTS[c] for c in available])
  count = available[rng.choice(len(available), p=weights / weights.sum())]
  ref = _pick(rng, _pick(rng, list(by_count[count].values())))
  return Question(f"how many {phrase(ref, plural=True)} are there?", str(count), "count")


def _attribute_question(attribute: str) -> Callable[[Scene, np.random.Generator],
                                                    Question | None]:
  """Asks an attribute of one object, named by a unique phrase that does not mention it."""
  templates = tuple(t for t in ALL_TEMPLATES if t and attribute not in t)

  def ask(scene: Scene, rng: np.random.Generator) -> Question | None:
    # Which objects are nameable depends only on the other attributes, so the answer stays
    # uniform over the attribute's values for every question string.
    named = _named_objects(scene, templates)
    if not named:
      return None
    obj, refs = _pick(rng, named)
    text = f"what {attribute} is the {phrase(_pick(rng, refs))}?"
    return Question(text, getattr(obj, attribute), attribute)

  return ask




def _ask_relation(scene: Scene, rng: np.random.Generator) -> Question | None:
  named = _named_objects(scene, ALL_TEMPLATES[1:])
  # Pairs whose extents along the axis are disjoint, so the relation is visually obvious.
  pairs = [(a, b, axis) for a, b in itertools.combinations(named, 2) for axis in "xy"
           if abs(getattr(a[0], axis) - getattr(b[0], axis)) >= a[0].radius + b[0].radius]
  if not pairs:
    return None
  a, b, axis = _pick(rng, pairs)
  word, _, sign = _pick(rng, [r for r in RELATIONS if r[1] == axis])
  answer = bool(rng.integers(2))
  holds = sign * (getattr(b[0], axis) - getattr(a[0], axis)) > 0
  if holds != answer:  # Swapping the operands flips the truth of the statement.
    a, b = b, a
  text = f"is the {phrase(_pick(rng, a[1]))} {word} the {phrase(_pick(rng, b[1]))}?"
  return Question(text, _yes_no(answer), "relation")


_RELATION_TEXT = re.compile(r"is the ([a-z ]+?) (left of|right of|above|below) the ([a-z ]+)\?")


def _the_object(phrase: str, scene: Scene) -> Object:
  """The one object a phrase such as "large red circle" or "blue object" names."""
  values = {}
  for word in phrase.split():
    for attribute in ATTRIBUTES:
      if word in VALUES[attribute]:
        values[attribute] = word
  found = [o for o in scene.objects if all(getattr(o, a) == v for a, v in values.items())]
  if len(found) != 1:
    raise ValueError(f"{phrase!r} names {len(found)} objects of the scene, not one.")
  return found[0]


def relation_cues(scene: Scene, text: str) -> dict[str, str | int | bool]:
  """What a relation question's answer is made of: its `word`, the third of the image (0, 1
  or 2 along the word's axis) that the first-named object (`a_third`) and the second-named
  (`b_third`) lie in, and whether the first-named lies first along that axis (`a_first`).

  The answer is yes exactly when `a_first` agrees with the word ("left of", "above") or
  disagrees with it ("right of", "below"); no single cue tells it (tests/test_shapes.py).
  """
  match = _RELATION_TEXT.fullmatch(text)
  if match is None:
    raise ValueError(f"Not a relation question: {text!r}.")
  a, b = _the_object(match[1], scene), _the_object(match[3], scene)
  axis = next(axis for word, axis, _ in RELATIONS if word == match[2])
  third = lambda obj: min(2, int(getattr(obj, axis) * 3 // scene.image_size))
  return {"word": match[2], "a_third": third(a), "b_third": third(b),
          "a_first": getattr(a, axis) < getattr(b, axis)}


def _ask_compare_count(scene: Scene, rng: np.random.Generator) -> Question | None:
  counts = reference_counts(scene)
  # Only unequal counts, so "more" and "fewer" have clear answers; None if all are equal.
  options = [pairs for attribute in ATTRIBUTES
             if (pairs := [(x, y) for x, y in itertools.combinations(references((attribute,)), 2)
                           if counts[x] != counts[y]])]
  if not options:
    return None
  x, y = _pick(rng, _pick(rng, options))
  word, sign = _pick(rng, [("more", 1), ("fewer", -1)])
  answer = bool(rng.integers(2))
  if (sign * (counts[x] - counts[y]) > 0) != answer:
    x, y = y, x
  text = f"are there {word} {phrase(x, plural=True)} than {phrase(y, plural=True)}?"
  return Question(text, _yes_no(answer), "compare_count")


_GENERATORS: dict[str, Callable[[Scene, np.random.Generator], Question | None]] = {
    "exist": _ask_exist,
    "count": _ask_count,
    "color": _attribute_question("color"),
    "shape": _attribute_question("shape"),
    "size": _attribute_question("size"),
    "relation": _ask_relation,
    "compare_count": _ask_compare_count,
}


def generate_question(scene: Scene, rng: np.random.Generator, question_type: str
                      ) -> Question | None:
  """One question of the given type, or None if the scene does not allow one."""
  if question_type not in _GENERATORS:
    raise ValueError(f"Unknown question type {question_type!r}; expected one of "
                     f"{QUESTION_TYPES}.")
  if len(scene.objects) > MAX_COUNT:  # Counts must stay inside the answer vocabulary.
    raise ValueError(f"Scenes may have at most {MAX_COUNT} objects, got {len(scene.objects)}.")
  return _GENERATORS[question_type](scene, rng)


def generate_questions(scene: Scene, rng: np.random.Generator, n: int = len(QUESTION_TYPES)
                       ) -> list[Question]:
  """Up to n questions of distinct types, in random type order."""
  questions = []
  for question_type in rng.permutation(QUESTION_TYPES):
    if len(questions) == n:
      break
    if (question := generate_question(scene, rng, str(question_type))) is not None:
      questions.append(question)
  return questions


def iterate_examples(seed: int, num_questions: int, image_size: int = 64,
                     questions_per_scene: int = len(QUESTION_TYPES)) -> Iterator[dict]:
  """Yields VQA examples, deterministically from the seed.

  Scene k draws from its own stream `(seed, k)`, so it does not depend on num_questions.
  Each example: image uint8[S, S, 3], question str, answers [str], question_type str,
  question_id int (0, 1, ...), scene_id int; questions of one scene are consecutive.
  """
  if questions_per_scene < 1:
    raise ValueError(f"questions_per_scene must be >= 1, got {questions_per_scene}.")
  question_id = 0
  for scene_id in itertools.count():
    rng = np.random.default_rng((seed, scene_id))
    scene = sample_scene(rng, image_size)
    image = render(scene)
    for q in generate_questions(scene, rng, questions_per_scene):
      if question_id == num_questions:
        return
      yield {"image": image, "question": q.text, "answers": [q.answer],
             "question_type": q.type, "question_id": question_id, "scene_id": scene_id}
      question_id += 1
