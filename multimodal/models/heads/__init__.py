"""Task heads, registered by name in `HEADS` on import."""
from multimodal.models.heads import classifier  # noqa: F401  (registers)
from multimodal.models.heads.registry import HEADS  # noqa: F401
