"""The preprocessing-op registry and the parser of big_vision-style pp specs.

A spec such as `"decode|resize(64)|value_range(-1, 1)|keep('image')"` names ops joined by `|`;
each op is built from its registered constructor with the literal arguments written after its
name, and the resulting per-example functions are applied left to right.
"""
from __future__ import annotations

import ast
from typing import Any, Callable, Sequence

from multimodal.registry import Registry

# One unbatched tf.data example: feature name -> tf.Tensor.
Example = dict[str, Any]
PpFn = Callable[[Example], Example]

PP_OPS: Registry[Callable[..., PpFn]] = Registry("preprocessing op")

# Training examples carry int64[2] under this key: the seed of their random ops
# (`tf.random.stateless_*`), distinct per example and the same when a run resumes. Evaluation
# examples have none; random ops then make a fixed choice. The pipeline drops it after pp.
RNG_KEY = "_rng"


def _literal(node: ast.expr, piece: str) -> Any:
  try:
    return ast.literal_eval(node)
  except ValueError:
    raise ValueError(
        f"Preprocessing op {piece!r}: arguments must be Python literals (numbers, strings,"
        f" tuples, lists, dicts), got {ast.unparse(node)!r}.") from None


def _parse_op(piece: str, spec: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
  """`"name(1, key='x')"` -> `("name", (1,), {"key": "x"})`; a bare `"name"` takes no args."""
  try:
    node = ast.parse(piece.strip(), mode="eval").body
  except SyntaxError:
    node = None
  if isinstance(node, ast.Name):
    return node.id, (), {}
  if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
      and all(kw.arg is not None for kw in node.keywords)):
    args = tuple(_literal(a, piece) for a in node.args)
    kwargs = {kw.arg: _literal(kw.value, piece) for kw in node.keywords}
    return node.func.id, args, kwargs
  raise ValueError(
      f"Malformed preprocessing op {piece!r} in {spec!r}: expected `name` or `name(args)`"
      " with literal arguments, ops joined by '|'.")


def _compose(fns: Sequence[PpFn]) -> PpFn:
  def apply(example: Example) -> Example:
    for fn in fns:
      example = fn(example)
    return example

  return apply


def parse(spec: str) -> PpFn:
  """Builds the per-example function of a pp spec like `"decode|resize(64)|keep('image')"`.

  `|` always separates ops, so it cannot appear inside a string argument.
  """
  fns = []
  for piece in spec.split("|"):
    name, args, kwargs = _parse_op(piece, spec)
    constructor = PP_OPS.get(name)
    try:
      fns.append(constructor(*args, **kwargs))
    except TypeError as e:
      raise TypeError(f"Preprocessing op {piece.strip()!r}: {e}") from e
  return _compose(fns)
