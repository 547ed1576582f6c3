"""The model registry: `config.model.type` names one of these."""
from multimodal.registry import Registry

MODELS = Registry("model")
ENCODERS = Registry("encoder")
