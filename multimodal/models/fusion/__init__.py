"""Fusion modules, registered by name in `FUSION` on import."""
from multimodal.models.fusion import cross_attention, early  # noqa: F401  (registers)
from multimodal.models.fusion.registry import FUSION  # noqa: F401
