"""BEiT-3 models for the tasks, with the heads of microsoft/unilm's `beit3/modeling_finetune.py`
over our `beit3.Beit3Encoder`:

- `beit3_nlvr` (BEiT3ForVisualReasoning): the statement with each image in its own pass;
  for each pass the vision CLS (the image's first token) and the language CLS (the text's
  first token) concatenated, the two passes concatenated, then LayerNorm -> Linear(4D, 2D)
  -> LayerNorm -> GELU -> Linear(2D, classes) (`TwoLayerMlp`), its Linear layers started at
  1/1000 of their init as the release does.
- `beit3_vqa` (BEiT3ForVisualQuestionAnswering): the pooler (LayerNorm on the vision CLS,
  Linear(D, D), tanh), then Linear(D, 2D) -> LayerNorm -> GELU -> Linear(2D, answers); the
  `vqa` task's loss (`loss=sigmoid` for VQAv2's soft scores, as the release trains it).
- `beit3_retrieval` (BEiT3ForRetrieval): the image alone and the text alone through the
  encoder, each first token through its own bias-free Linear(D, D), L2-normalised; a learned
  temperature starting at 1 / 0.07 (the `contrastive` task, `loss=softmax` as the release).

Linear layers start as the release's `_init_weights`: truncated normal (std 0.02), zero bias;
LayerNorms at eps 1e-5 (torch's default, which the release's heads keep).

`encoder` is a dict of `Beit3Config` fields except vocab_size (from the task's tokenizer);
`stacking` in it may be a dict of `transformer.Stacking` fields.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.beit3 import Beit3Config, Beit3Encoder, layer_norm
from multimodal.models.fusion_vqa import compute_dtype
from multimodal.models.registry import MODELS
from multimodal.models.transformer import Stacking
from multimodal.models.two_towers import l2_normalize

Spec = dict[str, Any]
HEAD_EPS = 1e-5  # torch.nn.LayerNorm's default: the release's heads use it as it is
NLVR_INIT_SCALE = 1e-3  # BEiT3ForVisualReasoning scales its head's Linear layers at init


def encoder_config(spec: Spec, vocab_size: int) -> Beit3Config:
  """A `Beit3Config` from a config's `encoder` dict and the tokenizer's vocabulary."""
  spec = dict(spec)
  if "stacking" in spec and not isinstance(spec["stacking"], Stacking):
    spec["stacking"] = Stacking(**dict(spec["stacking"]))
  return Beit3Config(vocab_size=vocab_size, **spec)


def linear(features: int, name: str, in_axis: str | None, out_axis: str | None,
           dtype: jnp.dtype, scale: float = 1.0, use_bias: bool = True) -> nn.Dense:
  """nn.Linear as the release initialises it (trunc_normal std 0.02, zero bias), times
  `scale`."""
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name,
                  kernel_init=p.init(nn.initializers.truncated_normal(0.02 * scale), in_axis,
                                     out_axis),
                  bias_init=p.init(nn.initializers.zeros, out_axis))


class TwoLayerMlp(nn.Module):
  """unilm's TwoLayerMLP: LayerNorm -> Linear -> LayerNorm -> exact GELU -> Linear."""
  hidden_dim: int
  num_classes: int
  init_scale: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, F] -> logits float32[B, num_classes]."""
    x = layer_norm("norm1", HEAD_EPS, "embed", self.dtype)(x)
    x = linear(self.hidden_dim, "dense1", "embed", "mlp", self.dtype, self.init_scale)(x)
    x = nn.gelu(layer_norm("norm2", HEAD_EPS, "mlp", self.dtype)(x), approximate=False)
    x = linear(self.num_classes, "dense2", "mlp", "classes", self.dtype, self.init_scale)(x)
    return x.astype(jnp.float32)


def text_padding(batch: dict[str, jax.Array]) -> jax.Array:
  """bool[B, T], True at padding, from the batch's text_mask (True at real tokens)."""
  return jnp.logical_not(batch["text_mask"].astype(bool))


@MODELS.register("beit3_nlvr")
class Beit3Nlvr(nn.Module):
  """Whether a statement holds of a pair of images (BEiT3ForVisualReasoning).

  Batch keys: left_image, right_image float[B, H, W, 3]; text_tokens int32[B, T]; text_mask
  bool[B, T].
  """
  encoder: Spec
  num_classes: int
  vocab_size: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> jax.Array:
    """-> logits float32[B, num_classes]."""
    dtype = compute_dtype(self.dtype)
    config = encoder_config(self.encoder, self.vocab_size)
    batch_size = batch["text_tokens"].shape[0]
    # One pass per image, both in one encoder call: [left examples; right examples].
    images = jnp.concatenate([batch["left_image"], batch["right_image"]], axis=0)
    tokens = jnp.tile(batch["text_tokens"], (2, 1))
    padding = jnp.tile(text_padding(batch), (2, 1))
    out = Beit3Encoder(config, dtype, name="beit3")(images, tokens, padding, train=train)
    cls = jnp.concatenate([out.hidden[:, 0], out.hidden[:, out.split_position]], axis=-1)
    pair = jnp.concatenate([cls[:batch_size], cls[batch_size:]], axis=-1)  # [B, 4D]
    return TwoLayerMlp(2 * config.width, self.num_classes, NLVR_INIT_SCALE, dtype,
                       name="head")(pair)


@MODELS.register("beit3_vqa")
class Beit3Vqa(nn.Module):
  """An answer to a question about an image (BEiT3ForVisualQuestionAnswering; the release
  builds its encoder with normalize_output=False).

  Batch keys: image float[B, H, W, 3]; question_tokens int32[B, T]; question_mask bool[B, T].
  """
  encoder: Spec
  num_answers: int
  vocab_size: int
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> jax.Array:
    """-> logits float32[B, num_answers]."""
    dtype = compute_dtype(self.dtype)
    config = encoder_config(self.encoder, self.vocab_size)
    padding = jnp.logical_not(batch["question_mask"].astype(bool))
    out = Beit3Encoder(config, dtype, name="beit3")(batch["image"], batch["question_tokens"],
                                                    padding, train=train)
    x = layer_norm("pooler_norm", HEAD_EPS, "embed", dtype)(out.hidden[:, 0])
    x = jnp.tanh(linear(config.width, "pooler_dense", "embed", "embed", dtype)(x))
    x = linear(2 * config.width, "head_dense1", "embed", "mlp", dtype)(x)
    x = nn.gelu(layer_norm("head_norm", HEAD_EPS, "mlp", dtype)(x), approximate=False)
    return linear(self.num_answers, "head_dense2", "mlp", "classes", dtype)(x).astype(
        jnp.float32)


@MODELS.register("beit3_retrieval")
class Beit3Retrieval(nn.Module):
  """Image and text embeddings for contrastive learning and retrieval (BEiT3ForRetrieval).

  Batch keys: image float[B, H, W, 3] and/or text_tokens int32[B, T] with text_mask
  bool[B, T]. The outputs are those of `two_towers` (the `contrastive` task's).
  """
  encoder: Spec
  vocab_size: int
  temperature_init: float = 2.659260  # log(1 / 0.07)
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    """-> {"image": float32[B, D] (given an image), "text": float32[B, D] (given text),
    "temperature": float32[], "bias": float32[] (0: the release's loss has none)}."""
    dtype = compute_dtype(self.dtype)
    encoder = Beit3Encoder(encoder_config(self.encoder, self.vocab_size), dtype, name="beit3")
    width = encoder.config.width
    out = {}
    if "image" in batch:
      hidden = encoder(image=batch["image"], train=train).hidden
      out["image"] = l2_normalize(linear(width, "vision_head", "embed", None, dtype,
                                         use_bias=False)(hidden[:, 0]).astype(jnp.float32))
    if "text_tokens" in batch:
      hidden = encoder(text_tokens=batch["text_tokens"], text_padding_mask=text_padding(batch),
                       train=train).hidden
      out["text"] = l2_normalize(linear(width, "language_head", "embed", None, dtype,
                                        use_bias=False)(hidden[:, 0]).astype(jnp.float32))
    if not out:
      raise ValueError("beit3_retrieval needs an `image` or `text_tokens` batch key; got "
                       f"{sorted(batch)}.")
    log_t = self.param("log_temperature", nn.initializers.constant(self.temperature_init), ())
    out["temperature"] = jnp.exp(log_t)
    out["bias"] = jnp.zeros((), jnp.float32)
    return out
