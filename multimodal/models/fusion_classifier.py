"""Classification over any set of modalities: one encoder per modality, a fusion module, a head.

The modalities are named by the config (`encoders`), so one model serves audio + video, audio
alone, video + text, or sensors: each encoder reads the batch key of its modality's name
(text reads `text_tokens` and `text_mask`), and the fusion module sees `{modality: Features}`.
With one modality the fusion module runs over that one alone (the unimodal baseline of the
same size).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from multimodal.models import missing_modalities
from multimodal.models.co_learning import CoLearningLoss
from multimodal.models.features import Features
from multimodal.models.fusion_vqa import compute_dtype, fuse_and_predict
from multimodal.models.registry import ENCODERS, MODELS

Spec = dict[str, Any]
TEXT = "text"  # the modality whose encoder reads token ids and a mask


def encode(encoders: dict[str, Spec], batch: dict[str, jax.Array], dtype: Any,
           vocab_size: int | None, *, train: bool) -> dict[str, Features]:
  """{modality: Features} from each modality's encoder (params `{modality}_encoder`); call
  inside a compact method."""
  if not encoders:
    raise ValueError("fusion_classifier needs at least one modality in `encoders`.")
  features = {}
  for name in sorted(encoders):
    if name == TEXT:
      encoder = ENCODERS.build(encoders[name], vocab_size=vocab_size, dtype=dtype,
                               name=f"{name}_encoder")
      features[name] = encoder(batch["text_tokens"], batch["text_mask"], train=train)
      continue
    if name not in batch:
      raise KeyError(f"Modality {name!r} reads batch[{name!r}], which the batch lacks "
                     f"(keys: {sorted(batch)}); keep it in the pp spec.")
    encoder = ENCODERS.build(encoders[name], dtype=dtype, name=f"{name}_encoder")
    features[name] = encoder(batch[name], train=train)
  return features


@MODELS.register("fusion_classifier")
class FusionClassifier(nn.Module):
  """Attributes:
    encoders: {modality: encoder spec `{'type': name, ...settings}`}.
    fusion, head: specs, as in `fusion_vqa`.
    num_classes: from the task.
    vocab_size: the tokenizer's vocabulary size (from the task; only with a text modality).
    modality_dropout: in training, the probability that an example loses one modality.
    co_learning: None, or an auxiliary co-learning loss between two modalities' encoder
      outputs, computed before any modality is removed: `{'modalities': (a, b), 'loss':
      'dcca'|'sigmoid'|'softmax', 'weight': w, 'embed_dim': d}` (`co_learning.CoLearningLoss`).
    dtype: compute dtype name; parameters stay float32.
  Batch keys: one per modality (e.g. audio float[B, F, M], video float[B, T, H, W, 3]);
  optional `{modality}_missing` bool[B] remove that modality in those examples.
  """
  encoders: dict[str, Spec]
  fusion: Spec
  head: Spec
  num_classes: int
  vocab_size: int | None = None
  modality_dropout: float = 0.0
  co_learning: Spec | None = None
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> jax.Array:
    """-> logits float32[B, num_classes]."""
    dtype = compute_dtype(self.dtype)
    features = encode(self.encoders, batch, dtype, self.vocab_size, train=train)
    if self.co_learning:
      spec = dict(self.co_learning)
      CoLearningLoss(modalities=tuple(spec.pop("modalities")), **spec, dtype=dtype,
                     name="co_learning")(features)
    features = missing_modalities.remove(features, missing_modalities.from_batch(batch))
    if train and self.modality_dropout > 0 and len(features) > 1:
      batch_size = next(iter(features.values())).mask.shape[0]
      features = missing_modalities.remove(features, missing_modalities.sample_dropped(
          self.make_rng("dropout"), list(features), batch_size, self.modality_dropout))
    return fuse_and_predict(self.fusion, self.head, self.num_classes, dtype, features,
                            train=train)
