"""TFDS builders, registered with TFDS by name on import (`tfds.builder("shapes_vqa")`)."""
from multimodal.data.builders import jsonl_vqa, shapes_captions, shapes_vqa  # noqa: F401
