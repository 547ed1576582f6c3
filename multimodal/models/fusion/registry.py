"""The fusion registry: `config.model.fusion.type` names one of these.

A fusion module is called as `module(features: dict[str, Features], *, train) -> Fused`,
with one `Features` per modality name ("image", "text", ...).
"""
from multimodal.registry import Registry

FUSION = Registry("fusion module")
