"""Fusion modules, registered by name in `FUSION` on import."""
from multimodal.models.fusion import (bottleneck, co_attention, cross_attention, early,  # noqa: F401
                                      hybrid, late, multiway, pooled, relation)
from multimodal.models.fusion.registry import FUSION  # noqa: F401
