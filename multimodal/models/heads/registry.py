"""The head registry: `config.model.head.type` names one of these."""
from multimodal.registry import Registry

HEADS = Registry("head")
