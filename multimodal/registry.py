"""Name -> constructor registries, the glue between configs and code.

Every pluggable piece (models, fusion modules, heads, datasets, preprocessing ops, tasks,
evaluators) lives in a `Registry` and is selected by name in the config.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """A named table of constructors with helpful errors for unknown names."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    """Decorator: `@REGISTRY.register("name")` on a class or function."""

    def add(obj: T) -> T:
      if name in self._entries:
        raise KeyError(f"{self.kind} {name!r} is registered twice.")
      self._entries[name] = obj
      return obj

    return add

  def get(self, name: str) -> T:
    if name not in self._entries:
      close = difflib.get_close_matches(name, self._entries, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise KeyError(
          f"Unknown {self.kind} {name!r}.{hint} Known: {sorted(self._entries)}.")
    return self._entries[name]

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def build(self, spec: Any, offered: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Builds from `{'type': name, **config}` (a dict or ConfigDict) plus kwargs.

    `offered`: keyword arguments passed only to constructors that name them in their
    signature: what the caller has and only some entries need (the trainer offers tasks
    the device mesh, which a loss computed across devices needs).
    """
    spec = dict(spec)
    if "type" not in spec:
      raise KeyError(f"A {self.kind} spec needs a 'type' (one of {self.names()}); got {spec}.")
    name = spec.pop("type")
    constructor = self.get(name)
    check_fields(f"{self.kind} {name!r}", constructor, spec)
    if offered:
      wanted = inspect.signature(constructor).parameters
      kwargs = {**{k: v for k, v in offered.items() if k in wanted}, **kwargs}
    return constructor(**spec, **kwargs)


def check_fields(what: str, constructor: Any, spec: dict[str, Any]) -> None:
  """Raises a KeyError naming the nearest valid field for a setting a dataclass lacks."""
  if not dataclasses.is_dataclass(constructor):
    return
  fields = [f.name for f in dataclasses.fields(constructor) if f.name not in ("parent", "name")]
  for key in spec:
    if key not in fields:
      close = difflib.get_close_matches(key, fields, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise KeyError(f"{what} has no setting {key!r}.{hint} Valid: {sorted(fields)}.")
