"""Preprocessing ops for tf.data, selected by a big_vision-style spec string."""
from __future__ import annotations

from multimodal.data.pp import ops, shapes_ops, text_ops  # noqa: F401  (registers the ops)
from multimodal.data.pp import audio_ops, av_ops  # noqa: F401  (registers the ops)
from multimodal.data.pp.registry import PP_OPS, RNG_KEY, parse

__all__ = ["PP_OPS", "RNG_KEY", "parse"]
