"""Hybrid fusion: modality-specific layers, then early fusion within groups of modalities in
the top layers, and late fusion across the groups."""
from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from multimodal.models.features import Features, Fused, is_present
from multimodal.models.fusion.base import FusionModule, require
from multimodal.models.fusion.decision import CombineLogits, check_decision_settings, heads_logits
from multimodal.models.fusion.early import Early
from multimodal.models.fusion.registry import FUSION


@FUSION.register("hybrid")
class Hybrid(FusionModule):
  """Each modality runs `fusion_layer` blocks of its own; then each group of modalities is
  fused early (modality embeddings, a fusion token, `depth - fusion_layer` joint blocks). With
  one group (the default: all modalities) that fused group is the output, i.e. early fusion in
  the top layers after separate encoders. With several groups each has its own head and the
  logits combine as in late fusion, e.g. groups=(("image", "text"), ("audio",)).

  Attributes:
    fusion_layer: modality-specific blocks before the modalities meet (0 <= it <= depth).
    groups: a partition of the modalities into early-fused groups (None: one group of all).
    combine: with several groups, how their logits combine (see `CombineLogits`).
    head, num_classes: the head spec and classes, passed in by the model.
  """
  fusion_layer: int = 1
  groups: Any = None
  combine: str = "mean"
  head: Any = None
  num_classes: int = 0

  decision_level: ClassVar[bool] = True

  def group_names(self, features: dict[str, Features]) -> list[tuple[str, ...]]:
    groups = [tuple(g) for g in self.groups] if self.groups else [tuple(sorted(features))]
    members = sorted(m for g in groups for m in g)
    if members != sorted(features):
      raise ValueError(f"hybrid fusion: groups {groups} must list every modality of "
                       f"{sorted(features)} exactly once.")
    return groups

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[m]: [B, T_m, D_m] -> the group's Fused, or the groups' combined logits."""
    require(features, (), "hybrid")
    if not 0 <= self.fusion_layer <= self.depth:
      raise ValueError(f"hybrid fusion: fusion_layer={self.fusion_layer} must lie in "
                       f"[0, depth={self.depth}].")
    groups = self.group_names(features)
    streams = self.streams(self.fusion_layer)(name="streams")(features, train=train)
    fused = {}
    for group in groups:
      key = "+".join(group)
      fused[key] = Early(**self.settings(depth=self.depth - self.fusion_layer),
                         name=f"early_{key}")({m: streams[m] for m in group}, train=train)
    if len(groups) == 1:
      return fused[key]
    check_decision_settings("hybrid", self.combine, self.head, self.num_classes)
    logits = heads_logits(fused, self.head, self.num_classes, self.dtype, train=train)
    present = {"+".join(g): jnp.any(jnp.stack([is_present(streams[m].mask) for m in g]), axis=0)
               for g in groups}
    combined = CombineLogits(self.combine, name="combine")(logits, present)
    names = sorted(fused)
    weights = jnp.stack([present[n] for n in names], axis=1).astype(jnp.float32)
    weights = weights / jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1.0)
    pooled = jnp.einsum("bg,bgd->bd", weights.astype(self.dtype),
                        jnp.stack([fused[n].pooled for n in names], axis=1))
    return Fused(tokens=jnp.concatenate([fused[n].tokens for n in names], axis=1),
                 mask=jnp.concatenate([fused[n].mask for n in names], axis=1),
                 pooled=pooled, logits=combined, modality_logits=logits)
