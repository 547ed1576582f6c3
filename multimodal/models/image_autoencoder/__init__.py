"""The image tokenizer: a convolutional autoencoder with a VQ, Gumbel or Gaussian bottleneck
(model `image_autoencoder`, registered on import)."""
from multimodal.models.image_autoencoder.model import ImageAutoencoder  # noqa: F401
