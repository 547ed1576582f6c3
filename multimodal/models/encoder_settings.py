"""The size and execution settings the transformer encoders over time (audio, video, sensors)
share, and their resolution against the named variants."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from multimodal.models import variants


class EncoderSettings(nn.Module):
  """Base class of those encoders.

  Attributes:
    variant: a size name from `variants.VARIANTS`; width/depth/mlp_dim/num_heads override it.
    dropout: dropout rate in the transformer blocks.
    dtype: compute dtype (params stay float32).
    remat, remat_policy, scan_layers: how the transformer blocks run (see `Encoder`).
    time_window: a token attends only to tokens at most this many time steps (patches,
      tubelets or frames along time) away: local temporal context, as an event detector
      needs; None: every token (global).
  """
  variant: str | None = "tiny"
  width: int | None = None
  depth: int | None = None
  mlp_dim: int | None = None
  num_heads: int | None = None
  dropout: float = 0.0
  dtype: Any = jnp.float32
  remat: bool = False
  remat_policy: str = "nothing_saveable"
  scan_layers: bool = False
  time_window: int | None = None

  def sizes(self) -> dict[str, int]:
    """The resolved width, depth, mlp_dim and num_heads (`variants.resolve`)."""
    return variants.resolve(self.variant, width=self.width, depth=self.depth,
                            mlp_dim=self.mlp_dim, num_heads=self.num_heads)
