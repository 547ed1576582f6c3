"""Evaluators, registered by name in `EVALUATORS` on import."""
from multimodal.evaluators import captioning, classification, retrieval  # noqa: F401
from multimodal.evaluators import object_attributes, vqa, zero_shot  # noqa: F401
from multimodal.evaluators import text_to_image  # noqa: F401
from multimodal.evaluators import av_offset, canonical_correlation, paired_retrieval  # noqa: F401
from multimodal.evaluators import image_reconstruction  # noqa: F401
from multimodal.evaluators.registry import EVALUATORS, EvalContext  # noqa: F401
