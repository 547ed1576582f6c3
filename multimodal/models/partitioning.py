"""Logical axis names for parameters, mapped to mesh axes by rules in the config.

Parameter axes used by the models:
  embed  - the model width;          mlp   - the feed-forward hidden width;
  heads  - attention heads;          kv    - per-head width;
  vocab  - token embeddings' rows;   classes - output classes / answers;
  conv_in, conv_out - convolution channels; pos - position-embedding rows;
  layers - the stacked blocks of a scanned transformer (`scan_layers`).
Activations use `batch` for the batch axis.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn

Initializer = Callable[..., object]

LAYERS = "layers"
# The params entry of a scanned stack of blocks; each param under it has a leading `layers` axis.
STACKED_BLOCKS = "blocks"


def init(initializer: Initializer, *axes: str | None) -> Initializer:
  """An initializer whose parameter carries logical axis names (one per dimension)."""
  return nn.with_logical_partitioning(initializer, tuple(axes))
