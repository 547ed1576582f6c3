"""Early fusion: one transformer over all modalities' tokens (single stream)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.features import Features, Fused
from multimodal.models.fusion.base import FusionModule, require
from multimodal.models.fusion.registry import FUSION
from multimodal.models.transformer import Encoder, dense


@FUSION.register("early")
class Early(FusionModule):
  """Each modality's tokens are projected to `width`, tagged with a learned modality
  embedding and concatenated behind a learned fusion token; a transformer of `depth` blocks
  runs over the joint sequence (padding masked), and the fusion token's output is the pooled
  vector. Any number of modalities, in sorted name order.
  """

  @nn.compact
  def __call__(self, features: dict[str, Features], *, train: bool) -> Fused:
    """features[m]: tokens [B, T_m, D_m], mask [B, T_m] -> Fused over [B, 1 + sum T_m, width]."""
    require(features, (), "early")
    names = sorted(features)
    batch = features[names[0]].tokens.shape[0]
    token = self.param("fusion_token", p.init(nn.initializers.normal(0.02), None, None, "embed"),
                       (1, 1, self.width))
    tokens = [jnp.broadcast_to(token.astype(self.dtype), (batch, 1, self.width))]
    masks = [jnp.ones((batch, 1), bool)]
    for name in names:
      f = features[name]
      modality = self.param(f"{name}_embedding",
                            p.init(nn.initializers.normal(0.02), None, None, "embed"),
                            (1, 1, self.width))
      tokens.append(dense(self.width, None, "embed", f"{name}_proj", self.dtype)(f.tokens)
                    + modality.astype(self.dtype))
      masks.append(f.mask.astype(bool))
    x, mask = jnp.concatenate(tokens, axis=1), jnp.concatenate(masks, axis=1)
    x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout, self.dtype,
                remat=self.remat, remat_policy=self.remat_policy, scan_layers=self.scan_layers,
                name="encoder")(x, mask, train=train)
    return Fused(tokens=x, mask=mask, pooled=x[:, 0])
