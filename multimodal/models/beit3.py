"""The BEiT-3 encoder (Wang et al., 2022) as microsoft/torchscale 0.3.0 builds it
(`torchscale.model.BEiT3.BEiT3` over `architecture.encoder.Encoder`), so that the public
checkpoints load and give the same hidden states (convert/beit3.py; tests/test_beit3_parity.py).

What torchscale does, and so what this does:
- The joint sequence is the image tokens (a CLS token, then the patches in row-major order)
  followed by the text tokens. Every multiway expert (torchscale's MultiwayNetwork: `A` for
  the image, `B` for the text) splits at the position where the text starts; an image-only
  input goes through the image experts, a text-only input through the text experts.
- Position embeddings come from one table per modality, read from row 2 on (Fairseq's
  offset, `POSITION_OFFSET`), each modality counting from its own first token.
- Padded text tokens are zeroed after the embeddings, and no token attends to them.
- Pre-LN blocks with Magneto's sub-LN: a LayerNorm over the merged heads before the attention
  output projection, and one over the hidden units between the FFN's two layers; the GELU is
  the exact (erf) one; every LayerNorm (eps 1e-5) is per modality; a final LayerNorm per
  modality (`normalize_output`).
- Attention logits are scaled by head_dim ** -0.5; the key projection has a bias.
- Drop path (stochastic depth) on both residual branches of block i at the rate
  drop_path_rate * i / (depth - 1), as torchscale spaces it.
Not reproduced: attention and activation dropout, explicit `positions` and `attn_mask`,
relative position biases (all off in the release's encoder).

`variant="paper"` is the BEiT-3 paper's Multiway transformer instead: one set of attention
projections for all tokens (every LayerNorm stays per modality, as in
`multiway.MultiwayBlock` with `shared_attention`), and in the top `vl_layers` blocks one
vision-language FFN expert (with its LayerNorm) for every token, whichever modalities are
given (as fusion/multiway.py; the paper routes an image or a text alone through its own
modality's FFN there, which would need those experts' params as well).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from multimodal.models import partitioning as p
from multimodal.models.attention import attend, head_projection, output_projection, padding_mask
from multimodal.models.multiway import Segments, per_segment
from multimodal.models.transformer import Stacking, dense, stack_layers

VARIANTS = ("release", "paper")
IMAGE, TEXT = "image", "text"  # the modalities, in the joint sequence's order
# torchscale's PositionalEmbedding reads positions 2, 3, ... (Fairseq reserves rows 0 and 1).
POSITION_OFFSET = 2


@dataclasses.dataclass(frozen=True)
class Beit3Config:
  """The encoder's sizes (defaults: BEiT-3 base, beit3_base_patch16_224).

  Attributes:
    width, depth, num_heads, mlp_dim: torchscale's encoder_embed_dim, encoder_layers,
      encoder_attention_heads, encoder_ffn_embed_dim.
    patch_size, image_size: square patches of square images (img_size).
    vocab_size: rows of the text token embedding.
    max_text_positions: rows of the text position table (max_source_positions); a text may
      have up to max_text_positions - POSITION_OFFSET tokens.
    variant: "release" (torchscale) or "paper" (see the module docstring).
    vl_layers: the paper variant's top blocks with one vision-language FFN expert.
    layer_norm_eps: every LayerNorm's epsilon (torchscale's layernorm_eps).
    dropout: torchscale's `dropout`: after the embeddings, the attention and the FFN.
    drop_path_rate: torchscale's drop_path_rate: the top block's stochastic-depth rate (the
      release fine-tunes NLVR2 at 0.2).
    normalize_output: the final per-modality LayerNorm (torchscale's normalize_output; the
      release's VQA and image-classification models turn it off).
    stacking: how the blocks run (remat, scan_layers; see `transformer.Stacking`).
  """
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  patch_size: int = 16
  image_size: int = 224
  vocab_size: int = 64010
  max_text_positions: int = 1024
  variant: str = "release"
  vl_layers: int = 0
  layer_norm_eps: float = 1e-5
  dropout: float = 0.0
  drop_path_rate: float = 0.0
  normalize_output: bool = True
  stacking: Stacking = Stacking()

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f"Unknown BEiT-3 variant {self.variant!r}; use one of {VARIANTS}.")
    if self.width % self.num_heads:
      raise ValueError(f"BEiT-3 width {self.width} does not divide into {self.num_heads} heads.")
    if self.image_size % self.patch_size:
      raise ValueError(f"BEiT-3 image_size {self.image_size} is not a multiple of patch_size "
                       f"{self.patch_size}.")
    if not 0 <= self.vl_layers <= self.depth:
      raise ValueError(f"BEiT-3 vl_layers={self.vl_layers} must lie in [0, depth={self.depth}].")
    if self.vl_layers and self.variant != "paper":
      raise ValueError(f"BEiT-3 vl_layers={self.vl_layers} needs variant='paper' (the release "
                       "has no vision-language experts).")
    if not 0.0 <= self.drop_path_rate < 1.0:
      raise ValueError(f"BEiT-3 drop_path_rate={self.drop_path_rate} must lie in [0, 1).")
    if self.max_text_positions <= POSITION_OFFSET:
      raise ValueError(f"BEiT-3 max_text_positions={self.max_text_positions} leaves no room "
                       f"for text (the first {POSITION_OFFSET} rows are never read).")

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def image_positions(self) -> int:
    """Rows of the image position table: the CLS token and the patches, after the offset."""
    return self.num_patches + 1 + POSITION_OFFSET


@flax.struct.dataclass
class Beit3Output:
  """The encoder's output.

  Attributes:
    hidden: float[B, N, D], the final hidden states of the joint sequence (image tokens first).
    padding_mask: bool[B, N], True at padded text tokens (torchscale's encoder_padding_mask).
    split_position: where the text starts, as torchscale's multiway_split_position: -1 for an
      image only, 0 for a text only, else the number of image tokens (1 + patches).
  """
  hidden: jax.Array
  padding_mask: jax.Array
  split_position: int = flax.struct.field(pytree_node=False)


def layer_norm(name: str, eps: float, axis: str = "embed",
               dtype: jnp.dtype = jnp.float32) -> nn.LayerNorm:
  """A LayerNorm with torchscale's epsilon over a dimension named `axis`.
  (transformer.layer_norm has flax's eps 1e-6 and the `embed` axis only; the FFN's sub-LN
  normalises the `mlp` dimension.)"""
  return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name,
                      scale_init=p.init(nn.initializers.ones, axis),
                      bias_init=p.init(nn.initializers.zeros, axis))


def experts(kind: str, make: Callable[[str], Callable[[jax.Array], jax.Array]], x: jax.Array,
            segments: Segments) -> jax.Array:
  """x float[B, T, ...] with each segment m's tokens through its own `make(f"{kind}_{m}")`.
  One segment over the whole sequence gives one module for every token (e.g. `vl`)."""
  return per_segment(x, segments, lambda m, xm: make(f"{kind}_{m}")(xm))


def whole(x: jax.Array, name: str) -> Segments:
  """One segment `name` over all of x's tokens: a module shared by every modality."""
  return ((name, x.shape[1]),)


class Beit3Attention(nn.Module):
  """torchscale's MultiheadAttention with `subln`: query, key and value projections per
  modality (or `shared`), attention over the joint sequence, a per-modality LayerNorm over the
  merged heads (`inner_ln_{m}`, Magneto's sub-LN), then the output projection.

  `multiway.MultiwayAttention` has no place for a LayerNorm between the heads and the output
  projection, so this module routes the same attention.py pieces with one in between.
  """
  segments: Segments
  num_heads: int
  eps: float
  shared: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x: float[B, T, D] (the joint sequence); mask: bool[B, 1|T, T] -> float[B, T, D]."""
    batch, length, width = x.shape
    head_dim = width // self.num_heads
    projected = whole(x, "shared") if self.shared else self.segments
    heads = lambda name: head_projection(self.num_heads, head_dim, name, self.dtype)
    q, k, v = (experts(kind, heads, x, projected) for kind in ("query", "key", "value"))
    out, weights = attend(q, k, v, mask, self.dtype)
    self.sow("intermediates", "attention_weights", weights)
    merged = experts("inner_ln", lambda name: layer_norm(name, self.eps, dtype=self.dtype),
                     out.reshape(batch, length, width), self.segments)
    out = merged.reshape(batch, length, self.num_heads, head_dim)
    return experts("out", lambda name: output_projection(width, name, self.dtype), out,
                   projected)


class Beit3Mlp(nn.Module):
  """torchscale's FeedForwardNetwork with `subln`: Dense -> exact GELU -> LayerNorm -> Dense
  (its dropout after the second Dense is the block's, on the branch). (transformer.Mlp has
  the tanh GELU and no LayerNorm inside.)"""
  mlp_dim: int
  eps: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, T, D] -> float[B, T, D]."""
    h = jax.nn.gelu(dense(self.mlp_dim, "embed", "mlp", "fc1", self.dtype)(x), approximate=False)
    h = layer_norm("ln", self.eps, "mlp", self.dtype)(h)
    return dense(x.shape[-1], "mlp", "embed", "fc2", self.dtype)(h)


def drop_path(module: nn.Module, h: jax.Array, rate: jax.Array, train: bool) -> jax.Array:
  """timm's drop_path inside `module`: in training each example's branch h float[B, ...] is
  zeroed with probability `rate` and the rest scaled by 1 / (1 - rate)."""
  if not train:
    return h
  keep = 1.0 - rate
  shape = (h.shape[0],) + (1,) * (h.ndim - 1)
  kept = jax.random.bernoulli(module.make_rng("dropout"), keep, shape)
  return h * kept.astype(h.dtype) / keep.astype(h.dtype)


class Beit3Block(nn.Module):
  """torchscale's EncoderLayer (pre-LN, multiway): x + Attention(LN_m(x)), then
  x + FFN_m(LN_m(x)); with `vl_expert` one FFN and its LayerNorm (`ln_mlp_vl`, `mlp_vl`) for
  every token. The carry is (x, the block's index in the encoder), the index setting the
  block's drop path rate: drop_path_rate * index / (depth - 1)."""
  segments: Segments
  num_heads: int
  mlp_dim: int
  eps: float
  dropout: float = 0.0
  shared_attention: bool = False
  vl_expert: bool = False
  dtype: jnp.dtype = jnp.float32
  drop_path_rate: float = 0.0
  depth: int = 1

  @nn.compact
  def __call__(self, carry: tuple[jax.Array, jax.Array], mask: jax.Array, *, train: bool
               ) -> tuple[jax.Array, jax.Array]:
    """carry: (x float[B, T, D] the joint sequence, int32[] the block's index); mask:
    bool[B, 1|T, T] -> (float[B, T, D], the next index)."""
    x, index = carry
    rate = self.drop_path_rate * index.astype(jnp.float32) / max(self.depth - 1, 1)
    branch = lambda h: drop_path(self, nn.Dropout(self.dropout)(h, deterministic=not train),
                                 rate, train and self.drop_path_rate > 0)
    norm = lambda name: layer_norm(name, self.eps, dtype=self.dtype)
    h = experts("ln_self", norm, x, self.segments)
    h = Beit3Attention(self.segments, self.num_heads, self.eps, self.shared_attention,
                       self.dtype, name="self_attention")(h, mask)
    x = x + branch(h)
    ffn_segments = whole(x, "vl") if self.vl_expert else self.segments
    mlp = lambda name: Beit3Mlp(self.mlp_dim, self.eps, self.dtype, name=name)
    h = experts("mlp", mlp, experts("ln_mlp", norm, x, ffn_segments), ffn_segments)
    return x + branch(h), index + 1


class ImageEmbedding(nn.Module):
  """torchscale's VisionEmbedding (patches, masked ones replaced by `mask_token`, a CLS token
  in front) plus the image position embeddings."""
  config: Beit3Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, image_mask: jax.Array | None) -> jax.Array:
    """image: float[B, H, W, 3]; image_mask: bool[B, patches] or None
    -> float[B, 1 + patches, D]."""
    c = self.config
    want = (c.image_size, c.image_size, 3)
    if image.ndim != 4 or image.shape[1:] != want:
      raise ValueError(f"BEiT-3 takes images float[B, {', '.join(map(str, want))}] (NHWC); "
                       f"got shape {image.shape}.")
    x = nn.Conv(c.width, (c.patch_size,) * 2, strides=c.patch_size, padding="VALID",
                dtype=self.dtype, name="patch",
                kernel_init=p.init(nn.initializers.lecun_normal(), None, None, "conv_in",
                                   "embed"),
                bias_init=p.init(nn.initializers.zeros, "embed"))(image.astype(self.dtype))
    batch = x.shape[0]
    x = x.reshape(batch, c.num_patches, c.width)
    token = lambda name: self.param(name, p.init(nn.initializers.truncated_normal(0.02), None,
                                                 None, "embed"), (1, 1, c.width))
    mask_token = token("mask_token")  # BEiT's masked image modelling; kept for the checkpoints
    if image_mask is not None:
      if image_mask.shape != (batch, c.num_patches):
        raise ValueError(f"image_mask should be bool[{batch}, {c.num_patches}] (one flag per "
                         f"patch); got shape {image_mask.shape}.")
      x = jnp.where(image_mask[..., None], mask_token.astype(x.dtype), x)
    cls = jnp.broadcast_to(token("cls").astype(x.dtype), (batch, 1, c.width))
    x = jnp.concatenate([cls, x], axis=1)
    table = self.param("posemb", p.init(nn.initializers.normal(0.02), "pos", "embed"),
                       (c.image_positions, c.width))
    return x + table[None, POSITION_OFFSET:].astype(x.dtype)


class TextEmbedding(nn.Module):
  """torchscale's TextEmbedding plus the text position embeddings."""
  config: Beit3Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    """tokens: int32[B, T] -> float[B, T, D]."""
    c = self.config
    length = tokens.shape[1]
    if length > c.max_text_positions - POSITION_OFFSET:
      raise ValueError(f"A text of {length} tokens is longer than BEiT-3's "
                       f"{c.max_text_positions - POSITION_OFFSET} (max_text_positions="
                       f"{c.max_text_positions}, less the first {POSITION_OFFSET} rows).")
    x = nn.Embed(c.vocab_size, c.width, dtype=self.dtype, name="embedding",
                 embedding_init=p.init(nn.initializers.normal(c.width ** -0.5), "vocab",
                                       "embed"))(tokens)
    table = self.param("posemb", p.init(nn.initializers.normal(0.02), "pos", "embed"),
                       (c.max_text_positions, c.width))
    return x + table[None, POSITION_OFFSET:POSITION_OFFSET + length].astype(x.dtype)


class Beit3Encoder(nn.Module):
  """Images and/or texts -> the BEiT-3 encoder's final hidden states (see the module
  docstring). Initialise with both an image and a text, so that both modalities' experts get
  params; then either or both may be given."""
  config: Beit3Config
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array | None = None, text_tokens: jax.Array | None = None,
               text_padding_mask: jax.Array | None = None, image_mask: jax.Array | None = None,
               *, train: bool = False) -> Beit3Output:
    """image: float[B, H, W, 3]; text_tokens: int32[B, T]; text_padding_mask: bool[B, T],
    True at padding (torchscale's text_padding_position; None: no padding); image_mask:
    bool[B, patches], patches replaced by the mask token (vision_masked_position)
    -> Beit3Output (hidden float[B, N, D] with N = 1 + patches + T, or either part alone)."""
    c = self.config
    if image is None and text_tokens is None:
      raise ValueError("Beit3Encoder needs an image, text_tokens or both; got neither.")
    if text_tokens is None and text_padding_mask is not None:
      raise ValueError("Beit3Encoder got a text_padding_mask without text_tokens.")
    if image is None and image_mask is not None:
      raise ValueError("Beit3Encoder got an image_mask without an image.")
    parts, padding, segments = [], [], []
    if image is not None:
      parts.append(ImageEmbedding(c, self.dtype, name="image_embed")(image, image_mask))
      padding.append(jnp.zeros(parts[-1].shape[:2], bool))
      segments.append((IMAGE, parts[-1].shape[1]))
    if text_tokens is not None:
      if text_tokens.ndim != 2:
        raise ValueError(f"BEiT-3 takes text_tokens int32[B, T]; got shape {text_tokens.shape}.")
      if text_padding_mask is None:
        text_padding_mask = jnp.zeros(text_tokens.shape, bool)
      elif text_padding_mask.shape != text_tokens.shape:
        raise ValueError(f"text_padding_mask has shape {text_padding_mask.shape}; it should "
                         f"match text_tokens {text_tokens.shape}.")
      parts.append(TextEmbedding(c, self.dtype, name="text_embed")(text_tokens))
      padding.append(text_padding_mask.astype(bool))
      segments.append((TEXT, text_tokens.shape[1]))
    if len({part.shape[0] for part in parts}) > 1:
      raise ValueError(f"The image and the text batches differ in size: "
                       f"{[part.shape[0] for part in parts]}.")
    x, pad = jnp.concatenate(parts, axis=1), jnp.concatenate(padding, axis=1)
    x = jnp.where(pad[..., None], 0.0, x).astype(self.dtype)
    x = nn.Dropout(c.dropout)(x, deterministic=not train)

    segments = tuple(segments)
    make = lambda vl: functools.partial(Beit3Block, segments, c.num_heads, c.mlp_dim,
                                        c.layer_norm_eps, c.dropout, c.variant == "paper",
                                        vl, self.dtype, c.drop_path_rate, c.depth)
    mask = padding_mask(None, jnp.logical_not(pad))
    carry = (x, jnp.zeros((), jnp.int32))
    carry = stack_layers(make(False), c.depth - c.vl_layers, carry, mask, train=train,
                         stacking=c.stacking)
    x, _ = stack_layers(make(True), c.vl_layers, carry, mask, train=train,
                        stacking=c.stacking, prefix="vl_")
    if c.normalize_output:
      x = experts("ln_final", lambda name: layer_norm(name, c.layer_norm_eps, dtype=self.dtype),
                  x, segments)
    split = -1 if text_tokens is None else (0 if image is None else segments[0][1])
    return Beit3Output(hidden=x, padding_mask=pad, split_position=split)


def init_inputs(config: Beit3Config, batch: int = 1, text_length: int = 8
                ) -> dict[str, jax.Array]:
  """Dummy inputs that give `Beit3Encoder.init` every expert: an image and a text."""
  return dict(image=jnp.zeros((batch, config.image_size, config.image_size, 3), jnp.float32),
              text_tokens=jnp.zeros((batch, text_length), jnp.int32))
