"""Evaluators, registered by name in `EVALUATORS` on import."""
from multimodal.evaluators import captioning, retrieval, vqa  # noqa: F401  (registers)
from multimodal.evaluators.registry import EVALUATORS, EvalContext  # noqa: F401
