"""Text-to-image diffusion models: what the UNet and the DiT share (the prompt's encoder, the
noise schedule, the noising of a training batch, prompt dropout, and the optional latent
space of a frozen autoencoder). The denoising network itself is the subclass's
`network_class` (unet.py, dit.py), built from the `network` settings.

Training (`__call__`): the images (or their latents) x0 are noised to x_t at a uniform random
timestep t with noise eps, both drawn from the "dropout" rng (a fixed key when the caller
gives none, so that evaluation always sees the same noise); the network predicts eps, x0 or
v from (x_t, t, prompt); the task's loss compares the prediction with its target.
Sampling (task "diffusion") calls `encode_text` once and `denoise` at every step, then
`to_images`.

Batch keys: image float32[B, H, W, 3] in [-1, 1]; text_tokens int32[B, T]; text_mask
bool[B, T].
"""
from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal import registry
from multimodal.models.diffusion import schedules
from multimodal.models.diffusion.conditioning import drop_prompts
from multimodal.models.features import Features
from multimodal.models.fusion_vqa import compute_dtype
from multimodal.models.registry import ENCODERS, MODELS

Spec = dict[str, Any]


class TextToImageDiffusion(nn.Module):
  """Attributes:
    text: the prompt encoder's spec (`{'type': 'text_encoder', ...}`); its tokens are the
      network's cross-attention context and its pooled vector joins the timestep embedding.
    vocab_size: the tokenizer's vocabulary size (filled in from the task).
    network: settings of the denoising network (`network_class`'s fields).
    image_size: the images' height and width (samples are drawn at this size).
    schedule: "cosine" or "linear" (schedules.py); timesteps: T.
    prediction: what the network predicts: "eps", "v" or "x0".
    prompt_dropout: in training, the probability that an example's prompt is removed (its
      text mask all False), so the model also learns the unconditional prediction that
      classifier-free guidance needs.
    autoencoder: None to diffuse pixels; or the spec of an `image_autoencoder` whose
      `encode_latents` gives the space to diffuse in and `decode_latents` the images back
      (its params under `image_autoencoder`, typically loaded from its own run and frozen;
      no gradient of the diffusion loss reaches them).
    dtype: compute dtype name; params stay float32.
  """
  network_class: ClassVar[type[nn.Module]]

  text: Spec
  vocab_size: int
  network: Spec | None = None
  image_size: int = 32
  schedule: str = "cosine"
  timesteps: int = 1000
  prediction: str = "eps"
  prompt_dropout: float = 0.1
  autoencoder: Spec | None = None
  dtype: str = "float32"

  def setup(self):
    schedules.check_prediction(self.prediction)
    network = dict(self.network or {})
    registry.check_fields(f"{type(self).__name__} network", self.network_class, network)
    dtype = compute_dtype(self.dtype)
    self.text_encoder = ENCODERS.build(self.text, vocab_size=self.vocab_size, dtype=dtype)
    self.denoiser = self.network_class(**network, dtype=dtype)
    self.image_autoencoder = (None if self.autoencoder is None
                              else MODELS.build(self.autoencoder))

  @property
  def alphas_cumprod(self) -> jax.Array:
    """abar_t of the schedule, float32[T]."""
    return jnp.asarray(schedules.alphas_cumprod(self.schedule, self.timesteps), jnp.float32)

  @property
  def latent(self) -> bool:
    return self.autoencoder is not None

  def encode_text(self, tokens: jax.Array, mask: jax.Array, *, train: bool = False
                  ) -> Features:
    """int32[B, T], bool[B, T] -> Features (float[B, T, D], mask, pooled float[B, D])."""
    return self.text_encoder(tokens, mask, train=train)

  def denoise(self, x_t: jax.Array, t: jax.Array, text: Features, *, train: bool = False
              ) -> jax.Array:
    """x_t float[B, h, w, C], t int32[B], the encoded prompt -> the network's prediction
    (of the `prediction` kind) float32[B, h, w, C]."""
    return self.denoiser(x_t, t, text, train=train).astype(jnp.float32)

  def to_space(self, images: jax.Array) -> jax.Array:
    """Images float[B, H, W, 3] -> what is diffused: the images, or the frozen autoencoder's
    latents float32[B, h, w, C]."""
    if self.image_autoencoder is None:
      return images.astype(jnp.float32)
    return jax.lax.stop_gradient(self.image_autoencoder.encode_latents(images))

  def to_images(self, x: jax.Array) -> jax.Array:
    """The inverse of `to_space`: float[B, h, w, C] -> images float32[B, H, W, 3]."""
    if self.image_autoencoder is None:
      return x
    return self.image_autoencoder.decode_latents(x).astype(jnp.float32)

  def __call__(self, batch: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    """-> prediction and target float32[B, h, w, C] (the network's output and what it should
    have been), t int32[B] the timesteps drawn."""
    images = batch["image"]
    if images.ndim != 4 or images.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"{type(self).__name__} takes images float[B, {self.image_size}, "
                       f"{self.image_size}, 3] (setting image_size); got {images.shape}.")
    x0 = self.to_space(images)
    if self.is_initializing() and self.image_autoencoder is not None:
      self.to_images(x0)  # Creates the decoder's params, which only sampling uses.
    rng = self.make_rng("dropout") if self.has_rng("dropout") else jax.random.key(0)
    t_rng, noise_rng, prompt_rng = jax.random.split(rng, 3)
    t = jax.random.randint(t_rng, (x0.shape[0],), 0, self.timesteps)
    noise = jax.random.normal(noise_rng, x0.shape, jnp.float32)
    abar = self.alphas_cumprod[t]
    mask = batch["text_mask"].astype(bool)
    if train and self.prompt_dropout > 0:
      mask = drop_prompts(prompt_rng, mask, self.prompt_dropout)
    text = self.encode_text(batch["text_tokens"], mask, train=train)
    prediction = self.denoise(schedules.q_sample(x0, abar, noise), t, text, train=train)
    return {"prediction": prediction, "t": t,
            "target": schedules.prediction_target(self.prediction, x0, noise, abar)}
