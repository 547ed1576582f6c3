"""Text-to-image diffusion (models `diffusion_unet` and `dit`, registered on import): noise
schedules, the two denoising networks, and the samplers."""
from multimodal.models.diffusion import dit, unet  # noqa: F401  (registers)
