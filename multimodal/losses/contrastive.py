"""Image-text contrastive losses over L2-normalised embeddings.

- `softmax_loss` (CLIP): cross-entropy over the batch in both directions, the matching pair the
  target.
- `sigmoid_loss` (SigLIP, Zhai et al. 2023): every image-text pair is a binary problem, positive
  on the diagonal: -sum_j log sigmoid(+-(t * <img_i, txt_j> + b)), averaged over the images.
- `chunked_sigmoid_loss`: the same value, computed without the global [N, N] logits: each
  device keeps its images and passes its texts around the batch axes with `ppermute`, so it
  only ever holds [n, n] logits for its n = N / devices examples (memory independent of N^2).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

BATCH_AXES = ("data", "fsdp")  # The mesh axes the batch is split over (training/sharding.py).


def pair_logits(image: jax.Array, text: jax.Array, temperature: jax.Array,
                bias: jax.Array | float = 0.0) -> jax.Array:
  """float32[Ni, Nt] = temperature * image @ text.T + bias, from float[Ni, D] and float[Nt, D]."""
  return temperature * jnp.einsum("id,td->it", image, text,
                                  preferred_element_type=jnp.float32) + bias


def softmax_loss(image: jax.Array, text: jax.Array, temperature: jax.Array) -> jax.Array:
  """CLIP: the mean of image->text and text->image cross-entropies; inputs float[N, D]."""
  logits = pair_logits(image, text, temperature)
  targets = jnp.arange(logits.shape[0])
  image_to_text = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=1),
                                       targets[:, None], axis=1)
  text_to_image = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=0),
                                       targets[None, :], axis=0)
  return (image_to_text.mean() + text_to_image.mean()) / 2


def _sigmoid_nll_sum(logits: jax.Array, positive: bool) -> jax.Array:
  """-sum log sigmoid(label * logits): label +1 on the diagonal if `positive`, else -1."""
  labels = 2 * jnp.eye(*logits.shape) - 1 if positive else -jnp.ones_like(logits)
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits))


def sigmoid_loss(image: jax.Array, text: jax.Array, temperature: jax.Array,
                 bias: jax.Array) -> jax.Array:
  """SigLIP on the whole batch at once; inputs float[N, D], pair i the positive of row i."""
  logits = pair_logits(image, text, temperature, bias)
  return _sigmoid_nll_sum(logits, positive=True) / image.shape[0]


def chunked_sigmoid_loss(image: jax.Array, text: jax.Array, temperature: jax.Array,
                         bias: jax.Array, mesh: Mesh,
                         axes: Sequence[str] = BATCH_AXES) -> jax.Array:
  """`sigmoid_loss` for a batch split over the mesh's `axes` (float[N, D] each, N divisible by
  their size), computed chunk by chunk: the P devices along `axes` each hold n = N / P pairs;
  in step k every device scores its images against the texts that started on device
  (its index + k) mod P, then hands those texts on. Only step 0 has positives."""
  axes = tuple(axes)
  devices = 1
  for axis in axes:
    devices *= mesh.shape[axis]
  if image.shape[0] % devices:
    raise ValueError(f"The batch ({image.shape[0]}) does not split over the {devices} devices "
                     f"of the mesh axes {axes}.")
  # Device i receives from device i + 1: after k steps it holds the texts of device i + k.
  shift = [(i, (i - 1) % devices) for i in range(devices)]

  def local(image, text, temperature, bias):
    total = _sigmoid_nll_sum(pair_logits(image, text, temperature, bias), positive=True)

    @jax.checkpoint  # The backward pass recomputes each chunk's [n, n] logits, not keeps them.
    def step(_, carry):
      text, total = carry
      text = jax.lax.ppermute(text, axes, shift)
      negatives = _sigmoid_nll_sum(pair_logits(image, text, temperature, bias), positive=False)
      return text, total + negatives

    _, total = jax.lax.fori_loop(0, devices - 1, step, (text, total))
    return jax.lax.psum(total, axes)

  batch, replicated = PartitionSpec(axes), PartitionSpec()
  total = jax.shard_map(local, mesh=mesh, in_specs=(batch, batch, replicated, replicated),
                        out_specs=replicated)(image, text, temperature, bias)
  return total / image.shape[0]
