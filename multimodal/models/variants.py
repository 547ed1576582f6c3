"""Named model sizes: `variant="tiny"` in a config instead of four numbers."""
from __future__ import annotations

VARIANTS: dict[str, dict[str, int]] = {
    "micro": dict(width=64, depth=2, mlp_dim=128, num_heads=2),
    "tiny": dict(width=128, depth=2, mlp_dim=256, num_heads=4),
    "small": dict(width=384, depth=12, mlp_dim=1536, num_heads=6),
    "base": dict(width=768, depth=12, mlp_dim=3072, num_heads=12),
    "large": dict(width=1024, depth=24, mlp_dim=4096, num_heads=16),
}


def resolve(variant: str | None, **overrides: int | None) -> dict[str, int]:
  """The variant's sizes with any explicitly given (non-None) size overriding it."""
  if variant is None:
    sizes = {}
  elif variant in VARIANTS:
    sizes = dict(VARIANTS[variant])
  else:
    raise KeyError(f"Unknown model variant {variant!r}; known: {sorted(VARIANTS)}.")
  sizes.update({k: v for k, v in overrides.items() if v is not None})
  missing = {"width", "depth", "mlp_dim", "num_heads"} - set(sizes)
  if missing:
    raise ValueError(f"Model size incomplete: give a variant or all of {sorted(missing)}.")
  return sizes
