"""Late (decision-level) fusion: each modality predicts on its own; the predictions combine."""
from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn

from multimodal.models.features import Features, Fused, is_present
from multimodal.models.fusion.base import (FusionModule, concat_streams, mean_of_present,
                                           require)
from multimodal.models.fusion.decision import CombineLogits, check_decision_settings, heads_logits
from multimodal.models.fusion.registry import FUSION


@FUSION.register("late")
class Late(FusionModule):
  """Per modality: projection to `width`, `depth` blocks of its own, a final LayerNorm, the
  masked mean, and its own head; the heads' logits are combined by `combine` (see
  `CombineLogits`: mean, learned, product) over the modalities each example has.

  Attributes:
    combine: how the per-modality logits are combined.
    head, num_classes: the head spec and classes, passed in by the model.
  """
  combine: str = "mean"
  head: Any = None
  num_classes: int = 0

  decision_level: ClassVar[bool] = True

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[m]: [B, T_m, D_m] -> Fused with logits float32[B, C] and per-modality logits."""
    require(features, (), "late")
    check_decision_settings("late", self.combine, self.head, self.num_classes)
    streams = self.streams(self.depth)(name="streams")(features, train=train)
    streams = self.final_norm()(name="ln_final")(streams)
    inputs = {m: Fused(tokens=f.tokens, mask=f.mask, pooled=f.pooled) for m, f in streams.items()}
    logits = heads_logits(inputs, self.head, self.num_classes, self.dtype, train=train)
    combined = CombineLogits(self.combine, name="combine")(
        logits, {m: is_present(f.mask) for m, f in streams.items()})
    tokens, mask = concat_streams(streams)
    return Fused(tokens=tokens, mask=mask, pooled=mean_of_present(streams), logits=combined,
                 modality_logits=logits)
