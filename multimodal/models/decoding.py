"""Decoding on the device: greedy, sampling (temperature, top-k, top-p) and beam search, each
one `lax.while_loop` over a key/value cache (no host round trip per token), batched, stopping
per example at EOS and as a whole when every example has stopped.

The model is reached through a `StepFn`: given one token per example, its position, the
cache, the slot to write and which slots hold real keys, it returns the next-token logits and
the updated cache. Whatever filled the cache first (a prefix of image tokens and a prompt, an
encoder's output) is the caller's; decoding starts from that prefix's last logits.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

# (tokens int[B], positions int[B], cache, slot int, key_mask bool[B, S]) -> (float[B, V], cache)
StepFn = Callable[[jax.Array, jax.Array, Any, jax.Array, jax.Array], tuple[jax.Array, Any]]
NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """How to pick tokens. `temperature` 0 is greedy; `beam_size` > 1 is beam search (then
  temperature, top_k and top_p are unused); `top_k` 0 and `top_p` 1 keep every token."""
  max_new_tokens: int
  eos_id: int
  pad_id: int = 0
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  beam_size: int = 1
  length_penalty: float = 0.0  # Beam scores are divided by length ** length_penalty.

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}.")
    if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
      raise ValueError(f"Bad sampling settings: temperature {self.temperature} (>= 0), top_k "
                       f"{self.top_k} (>= 0), top_p {self.top_p} (in (0, 1]).")
    if self.beam_size < 1:
      raise ValueError(f"beam_size must be at least 1, got {self.beam_size}.")


@runtime_checkable
class TextGenerator(Protocol):
  """A model that writes text (paligemma, pali): the image_to_text task decodes through this."""

  def generate(self, params: Any, batch: dict[str, jax.Array], config: DecodeConfig,
               rng: jax.Array | None = None) -> jax.Array:
    """int32[B, max_new_tokens], `pad_id` after EOS, written after each example's prompt."""


def filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
  """float[B, V] with the tokens outside the top k, and outside the smallest set whose
  probability reaches top_p, set to -inf (the most likely token always stays)."""
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, NEG_INF, logits)
  if top_p < 1:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    before = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1) - jax.nn.softmax(
        sorted_logits, axis=-1)  # probability of the tokens strictly more likely
    kept = jnp.sum(before < top_p, axis=-1, keepdims=True)  # >= 1
    threshold = jnp.take_along_axis(sorted_logits, kept - 1, axis=-1)
    logits = jnp.where(logits < threshold, NEG_INF, logits)
  return logits


def pick_tokens(logits: jax.Array, rng: jax.Array, config: DecodeConfig) -> jax.Array:
  """int[B] from float[B, V]: argmax when the temperature is 0, else a sample."""
  if config.temperature == 0:
    return jnp.argmax(logits, axis=-1)
  logits = filter_logits(logits.astype(jnp.float32) / config.temperature, config.top_k,
                         config.top_p)
  return jax.random.categorical(rng, logits, axis=-1)


def decode(step_fn: StepFn, logits: jax.Array, cache: Any, key_mask: jax.Array,
           slot: int, positions: jax.Array, config: DecodeConfig,
           rng: jax.Array | None = None) -> jax.Array:
  """Greedy or sampled tokens int[B, max_new_tokens], `pad_id` after each example's EOS.

  logits: float[B, V] for the first new token; cache: filled up to `slot` (exclusive), with
  room for max_new_tokens more; key_mask: bool[B, S], the slots holding real keys; positions:
  int[B], the first new token's position per example.
  """
  if config.beam_size > 1:
    raise ValueError("decode() samples or picks greedily; use beam_search() for beam_size > 1.")
  batch, n = logits.shape[0], config.max_new_tokens
  rng = jax.random.key(0) if rng is None else rng

  def cond(state):
    i, _, done, *_ = state
    return (i < n) & ~jnp.all(done)

  def body(state):
    i, tokens, done, logits, cache, key_mask, rng = state
    rng, pick_rng = jax.random.split(rng)
    token = jnp.where(done, config.pad_id, pick_tokens(logits, pick_rng, config))
    tokens = tokens.at[:, i].set(token)
    done = done | (token == config.eos_id)
    key_mask = key_mask.at[:, slot + i].set(True)
    logits, cache = step_fn(token, positions + i, cache, slot + i, key_mask)
    return i + 1, tokens, done, logits, cache, key_mask, rng

  state = (jnp.int32(0), jnp.full((batch, n), config.pad_id, jnp.int32),
           jnp.zeros((batch,), bool), logits, cache, key_mask, rng)
  return jax.lax.while_loop(cond, body, state)[1]


def beam_search(step_fn: StepFn, logits: jax.Array, cache: Any, key_mask: jax.Array,
                slot: int, positions: jax.Array, config: DecodeConfig) -> tuple[jax.Array,
                                                                                 jax.Array]:
  """The best of `beam_size` hypotheses per example: (int[B, max_new_tokens] tokens, `pad_id`
  after EOS; float32[B] their log-probabilities).

  The inputs are those of `decode` with the batch already repeated beam_size times
  (example-major: rows b*K .. b*K+K-1 are example b's beams, e.g. `jnp.repeat(x, K, 0)`).
  A finished beam keeps its score and competes with the open ones; at the end the scores are
  divided by length ** length_penalty and the best is returned.
  """
  k, n = config.beam_size, config.max_new_tokens
  batch, vocab = logits.shape[0] // k, logits.shape[-1]
  beam_rows = lambda x: x.reshape(batch * k, *x.shape[2:])  # [B, K, ...] -> [B*K, ...]
  by_example = lambda x: x.reshape(batch, k, *x.shape[1:])  # [B*K, ...] -> [B, K, ...]

  def cond(state):
    i, _, _, done, *_ = state
    return (i < n) & ~jnp.all(done)

  def body(state):
    i, tokens, scores, done, logits, cache, key_mask = state
    logp = jax.nn.log_softmax(by_example(logits).astype(jnp.float32), axis=-1)  # [B, K, V]
    # A finished beam can only go on with padding, at no cost.
    pad_only = jnp.full((vocab,), NEG_INF).at[config.pad_id].set(0.0)
    logp = jnp.where(done[..., None], pad_only, logp)
    candidates = (scores[..., None] + logp).reshape(batch, k * vocab)
    scores, flat = jax.lax.top_k(candidates, k)
    beam, token = flat // vocab, (flat % vocab).astype(jnp.int32)  # [B, K]
    token = jnp.where(jnp.take_along_axis(done, beam, axis=1), config.pad_id, token)
    rows = (jnp.arange(batch)[:, None] * k + beam).reshape(-1)  # the parents in [B*K]
    reorder = lambda x: jnp.take(x, rows, axis=0)
    tokens = jnp.take_along_axis(tokens, beam[..., None], axis=1).at[:, :, i].set(token)
    done = jnp.take_along_axis(done, beam, axis=1) | (token == config.eos_id)
    cache, key_mask = jax.tree.map(reorder, cache), reorder(key_mask)
    key_mask = key_mask.at[:, slot + i].set(True)
    logits, cache = step_fn(beam_rows(token), positions + i, cache, slot + i, key_mask)
    return i + 1, tokens, scores, done, logits, cache, key_mask

  # All beams start equal: only the first may expand, or the top k would be k copies.
  scores = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch, 1))
  state = (jnp.int32(0), jnp.full((batch, k, n), config.pad_id, jnp.int32), scores,
           jnp.zeros((batch, k), bool), logits, cache, key_mask)
  _, tokens, scores, *_ = jax.lax.while_loop(cond, body, state)
  lengths = jnp.sum(tokens != config.pad_id, axis=-1).astype(jnp.float32)
  normalized = scores / jnp.maximum(lengths, 1.0) ** config.length_penalty
  best = jnp.argmax(normalized, axis=1)
  pick = lambda x: jnp.take_along_axis(x, best[:, None, None] if x.ndim == 3 else best[:, None],
                                       axis=1)[:, 0]
  return pick(tokens), pick(scores)


def generate(step_fn: StepFn, logits: jax.Array, cache: Any, key_mask: jax.Array, slot: int,
             positions: jax.Array, config: DecodeConfig, rng: jax.Array | None = None
             ) -> jax.Array:
  """int32[B, max_new_tokens]: `beam_search`'s best tokens when config.beam_size > 1 (the
  inputs then hold beam_size copies of each example), else `decode`'s."""
  if config.beam_size > 1:
    return beam_search(step_fn, logits, cache, key_mask, slot, positions, config)[0]
  return decode(step_fn, logits, cache, key_mask, slot, positions, config, rng)
