"""A Gemma-style text decoder (the decoder of PaliGemma, and of PaLI), with an explicit key/value
cache.

Pre-norm blocks with RMSNorm (scale stored as an offset from 1), rotary position embeddings
(the half-split layout of the public Gemma code), multi-query or grouped-query attention
(`num_kv_heads` below `num_heads`), a gated GELU feed-forward, input embeddings scaled by
sqrt(width), and output logits through the tied embedding.

The decoder takes embeddings, not tokens, so that a caller can put image tokens before the
text (PaLI-style); `embed_tokens` and `logits` give the two ends. Positions and the attention
mask are explicit inputs: a prefix-LM (image and prompt see each other, the answer is causal)
is just a mask (`prefix_lm_mask`), and a batch of prompts of different lengths decodes with
the cache written at one slot for all examples while each example keeps its own positions.

With `cross_attention` each block also attends to an encoder's output (an encoder-decoder such
as PaLI); those keys and values are computed once, when the cache is filled, and kept in it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal.models import decoding
from multimodal.models import partitioning as p
from multimodal.models.attention import attend


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
  vocab_size: int
  width: int
  depth: int
  num_heads: int
  num_kv_heads: int     # 1: multi-query attention; num_heads: plain multi-head.
  head_dim: int
  mlp_dim: int
  rope_base: float = 10_000.0
  norm_eps: float = 1e-6
  dropout: float = 0.0
  cross_attention: bool = False  # Each block attends to an encoder's output after itself.

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                       f"({self.num_kv_heads}).")


# The cache of one layer: keys and values "k", "v" float[B, S, Hkv, Dh] for S slots; with
# cross-attention also "cross_k", "cross_v" float[B, N, Hkv, Dh] for the encoder's N tokens.
LayerCache = dict[str, jax.Array]


def init_cache(config: GemmaConfig, batch: int, slots: int,
               dtype: jnp.dtype = jnp.float32) -> list[LayerCache]:
  """An empty cache of `slots` positions per example, one entry per layer."""
  shape = (batch, slots, config.num_kv_heads, config.head_dim)
  return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
          for _ in range(config.depth)]


def token_positions(input_mask: jax.Array) -> jax.Array:
  """int32[B, T] from bool[B, T]: each real token's index among its example's real tokens
  (padding takes its predecessor's)."""
  return jnp.maximum(jnp.cumsum(input_mask, axis=1) - 1, 0)


def prefix_lm_mask(input_mask: jax.Array, prefix_mask: jax.Array) -> jax.Array:
  """bool[B, T, T] from bool[B, T] (real tokens) and bool[B, T] (prefix tokens: the image and
  the prompt): a token sees every real prefix token and the real tokens up to itself."""
  t = input_mask.shape[1]
  causal = jnp.tril(jnp.ones((t, t), bool))[None]
  sees = jnp.logical_or(causal, prefix_mask[:, None, :])
  return sees & input_mask[:, None, :] & input_mask[:, :, None]


def rotary(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
  """Rotates float[B, T, H, Dh] by int[B, T] positions; the first and second halves of Dh
  are the two coordinates of each rotated pair."""
  half = x.shape[-1] // 2
  inv_freq = 1.0 / base ** (jnp.arange(half, dtype=jnp.float32) * 2 / x.shape[-1])
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, half]
  sin, cos = jnp.sin(angles)[:, :, None], jnp.cos(angles)[:, :, None]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


class RMSNorm(nn.Module):
  """x / rms(x) * (1 + scale), in float32; the scale starts at 0."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", p.init(nn.initializers.zeros, "embed"), (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * (1 + scale)).astype(x.dtype)


def _dense(shape: tuple[int, ...], axes: tuple[str | None, ...], name: str,
           dtype: jnp.dtype, axis: int | tuple[int, ...] = -1) -> nn.DenseGeneral:
  return nn.DenseGeneral(shape, axis=axis, use_bias=False, dtype=dtype, name=name,
                         kernel_init=p.init(nn.initializers.lecun_normal(), *axes))


class Attention(nn.Module):
  config: GemmaConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array,
               cache: LayerCache | None, cache_index: jax.Array | int
               ) -> tuple[jax.Array, LayerCache | None]:
    """x: float[B, T, D]; positions: int[B, T]; mask: bool[B, T, S] over the keys (S = T
    without a cache, the cache's slots with one); the new keys and values are written at
    slots cache_index..cache_index+T-1. -> (float[B, T, D], the updated cache)."""
    c = self.config
    q = _dense((c.num_heads, c.head_dim), ("embed", "heads", "kv"), "query", self.dtype)(x)
    k = _dense((c.num_kv_heads, c.head_dim), ("embed", None, "kv"), "key", self.dtype)(x)
    v = _dense((c.num_kv_heads, c.head_dim), ("embed", None, "kv"), "value", self.dtype)(x)
    q, k = rotary(q, positions, c.rope_base), rotary(k, positions, c.rope_base)
    if cache is not None:
      k = jax.lax.dynamic_update_slice_in_dim(cache["k"], k.astype(cache["k"].dtype),
                                              cache_index, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(cache["v"], v.astype(cache["v"].dtype),
                                              cache_index, axis=1)
      cache = {**cache, "k": k, "v": v}
    return _attend_and_merge(self, q, k, v, mask, x.shape[-1]), cache


class CrossAttention(nn.Module):
  """Queries from the decoder attend to an encoder's output. Its keys and values carry no
  rotary positions (the encoder's tokens already hold theirs); they are computed from `context`
  when given (and written into the cache, if any), else read from the cache."""
  config: GemmaConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None, context_mask: jax.Array,
               cache: LayerCache | None) -> tuple[jax.Array, LayerCache | None]:
    """x: float[B, T, D]; context: float[B, N, D] or None; context_mask: bool[B, N], the real
    encoder tokens -> (float[B, T, D], the cache with "cross_k" and "cross_v")."""
    c = self.config
    q = _dense((c.num_heads, c.head_dim), ("embed", "heads", "kv"), "query", self.dtype)(x)
    if context is not None:
      k = _dense((c.num_kv_heads, c.head_dim), ("embed", None, "kv"), "key", self.dtype)(context)
      v = _dense((c.num_kv_heads, c.head_dim), ("embed", None, "kv"), "value", self.dtype)(context)
      if cache is not None:
        cache = {**cache, "cross_k": k, "cross_v": v}
    elif cache is None or "cross_k" not in cache:
      raise ValueError("Cross-attention needs the encoder's output (`context`) or a cache that "
                       "holds its keys and values (filled by `prefill` with a context).")
    else:
      k, v = cache["cross_k"], cache["cross_v"]
    return _attend_and_merge(self, q, k, v, context_mask[:, None, :], x.shape[-1]), cache


def _attend_and_merge(module: nn.Module, q: jax.Array, k: jax.Array, v: jax.Array,
                      mask: jax.Array, width: int) -> jax.Array:
  """Grouped-query attention inside `module`: q float[B, T, H, Dh] over k, v float[B, S, Hkv,
  Dh] (each key/value head serves H / Hkv query heads), mask bool[B, T|1, S] -> float[B, T,
  width] through the module's "out" projection."""
  groups = q.shape[2] // k.shape[2]
  out, weights = attend(q, jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2), mask,
                        module.dtype)
  module.sow("intermediates", "attention_weights", weights)
  return _dense((width,), ("heads", "kv", "embed"), "out", module.dtype, axis=(-2, -1))(out)


class GatedMlp(nn.Module):
  """down(gelu_tanh(gate(x)) * up(x))."""
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gate = _dense((self.mlp_dim,), ("embed", "mlp"), "gate", self.dtype)(x)
    up = _dense((self.mlp_dim,), ("embed", "mlp"), "up", self.dtype)(x)
    h = nn.gelu(gate, approximate=True) * up
    return _dense((x.shape[-1],), ("mlp", "embed"), "down", self.dtype)(h)


class Block(nn.Module):
  """Self-attention, [cross-attention,] gated MLP; each pre-normed and added to the stream."""
  config: GemmaConfig
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, positions, mask, cache, cache_index, context=None, context_mask=None,
               *, train: bool):
    c = self.config
    drop = lambda h: nn.Dropout(c.dropout)(h, deterministic=not train)
    h, cache = Attention(c, self.dtype, name="attention")(
        RMSNorm(c.norm_eps, name="pre_attention_norm")(x), positions, mask, cache, cache_index)
    x = x + drop(h)
    if c.cross_attention:
      h, cache = CrossAttention(c, self.dtype, name="cross_attention")(
          RMSNorm(c.norm_eps, name="pre_cross_norm")(x), context, context_mask, cache)
      x = x + drop(h)
    h = GatedMlp(c.mlp_dim, self.dtype, name="mlp")(RMSNorm(c.norm_eps, name="pre_mlp_norm")(x))
    return x + drop(h), cache


class GemmaDecoder(nn.Module):
  """The decoder stack. Call it on embeddings; `embed_tokens` and `logits` are its two ends."""
  config: GemmaConfig
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    c = self.config
    # HF Gemma's initializer_range. Unit-variance embeddings (std 1) give the tied output
    # logits a spread of sqrt(width) at step 0: a 128-wide decoder started at loss ~100 and
    # spent its first ~100 steps on the scale.
    self.embedding = self.param(
        "embedding", p.init(nn.initializers.normal(stddev=0.02), "vocab", "embed"),
        (c.vocab_size, c.width))
    self.blocks = [Block(c, self.dtype, name=f"block{i}") for i in range(c.depth)]
    self.final_norm = RMSNorm(c.norm_eps)

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    """int[B, T] -> float[B, T, D], scaled by sqrt(D) as Gemma does."""
    x = jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)
    return x * jnp.sqrt(jnp.float32(self.config.width)).astype(self.dtype)

  def logits(self, x: jax.Array) -> jax.Array:
    """float[B, T, D] (final-normed) -> float32[B, T, V] through the tied embedding."""
    return jnp.einsum("btd,vd->btv", x, self.embedding.astype(self.dtype)).astype(jnp.float32)

  def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array,
               cache: list[LayerCache] | None = None, cache_index: jax.Array | int = 0,
               context: jax.Array | None = None, context_mask: jax.Array | None = None,
               *, train: bool = False) -> tuple[jax.Array, list[LayerCache] | None]:
    """x: float[B, T, D] embeddings; positions: int[B, T]; mask: bool[B, T, S] (S = T, or the
    cache's slots); with cross_attention, context: float[B, N, D] the encoder's output (None:
    its keys and values are in the cache) and context_mask: bool[B, N] its real tokens
    -> (logits float32[B, T, V], the updated cache or None)."""
    if self.config.cross_attention and context_mask is None:
      raise ValueError("A decoder with cross_attention needs the encoder's output mask "
                       "(context_mask).")
    if not self.config.cross_attention and (context is not None or context_mask is not None):
      raise ValueError("This decoder has no cross-attention (cross_attention=False) to take an "
                       "encoder's output (context, context_mask).")
    new_cache = [] if cache is not None else None
    for i, block in enumerate(self.blocks):
      x, layer_cache = block(x, positions, mask, None if cache is None else cache[i],
                             cache_index, context, context_mask, train=train)
      if new_cache is not None:
        new_cache.append(layer_cache)
    return self.logits(self.final_norm(x)), new_cache


def prefill(model: GemmaDecoder, params: Any, embeds: jax.Array, input_mask: jax.Array,
            prefix_mask: jax.Array, slots: int, context: jax.Array | None = None,
            context_mask: jax.Array | None = None
            ) -> tuple[jax.Array, list[LayerCache], jax.Array, jax.Array]:
  """Runs the prefix (float[B, T, D] embeddings; bool[B, T] real tokens, padding anywhere: at
  the end, or between image and text where an encoder masks some image tokens; bool[B, T]
  prefix-LM prefix) into a new cache of `slots` >= T slots. A cross-attending decoder takes the
  encoder's output (float[B, N, D], bool[B, N]), whose keys and values the cache then keeps.

  -> (float32[B, V] the logits after each example's last real token, the cache, bool[B, S]
  the slots holding real keys, int[B] the next token's position).
  """
  batch, length = input_mask.shape
  if slots < length:
    raise ValueError(f"A cache of {slots} slots cannot hold a prefix of {length} tokens.")
  mask = jnp.pad(prefix_lm_mask(input_mask, prefix_mask), ((0, 0), (0, 0), (0, slots - length)))
  cache = init_cache(model.config, batch, slots, model.dtype)
  logits, cache = model.apply({"params": params}, embeds, token_positions(input_mask), mask,
                              cache, 0, context, context_mask)
  lengths = jnp.sum(input_mask, axis=1)
  last_index = jnp.argmax(jnp.where(input_mask, jnp.arange(length), -1), axis=1)
  last = jnp.take_along_axis(logits, last_index[:, None, None], axis=1)[:, 0]
  key_mask = jnp.pad(input_mask.astype(bool), ((0, 0), (0, slots - length)))
  return last, cache, key_mask, lengths


def step_fn(model: GemmaDecoder, params: Any, context_mask: jax.Array | None = None,
            embed: Callable[[jax.Array, jax.Array], jax.Array] | None = None
            ) -> Callable[..., tuple[jax.Array, Any]]:
  """The decoding step (multimodal.models.decoding.StepFn) of the decoder with `params`; a
  cross-attending decoder takes the encoder's mask bool[B, N] (its keys and values are in the
  cache). The mask stays fixed per row: beam search reorders rows only among one example's
  beams, which share it. `embed` (tokens int[B], slot) -> float[B', 1, D] replaces the
  decoder's own `embed_tokens` for a caller with embeddings of its own (e.g. position
  embeddings added, or each row fed twice for classifier-free guidance)."""
  def step(tokens, positions, cache, slot, key_mask):
    if embed is not None:
      x = embed(tokens, slot)
    else:
      x = model.apply({"params": params}, tokens[:, None], method=GemmaDecoder.embed_tokens)
    logits, cache = model.apply({"params": params}, x, positions[:, None],
                                key_mask[:, None, :], cache, slot, None, context_mask)
    return logits[:, 0], cache
  return step


def start_decoding(model: GemmaDecoder, params: Any, embeds: jax.Array, input_mask: jax.Array,
                   prefix_mask: jax.Array, max_new_tokens: int, copies: int = 1,
                   context: jax.Array | None = None, context_mask: jax.Array | None = None
                   ) -> tuple[decoding.StepFn, tuple[Any, ...]]:
  """Prefills the decoder (the inputs of `prefill`) with room for max_new_tokens, each example
  repeated `copies` times (beam search's layout; 1 for `decode`).

  -> (the step function, the arguments `decoding.decode` and `decoding.beam_search` take after
  it: (first logits, cache, key mask, slot, positions)).
  """
  repeat = lambda x: None if x is None else jnp.repeat(x, copies, axis=0)
  embeds, input_mask, prefix_mask, context, context_mask = map(
      repeat, (embeds, input_mask, prefix_mask, context, context_mask))
  slot = embeds.shape[1]
  logits, cache, key_mask, positions = prefill(model, params, embeds, input_mask, prefix_mask,
                                               slot + max_new_tokens, context, context_mask)
  return step_fn(model, params, context_mask), (logits, cache, key_mask, slot, positions)
