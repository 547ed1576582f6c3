"""TFDS builders, registered with TFDS by name on import (`tfds.builder("shapes_vqa")`)."""
from multimodal.data.builders import (coco_karpathy, jsonl_vqa, shapes_captions,  # noqa: F401
                                      shapes_nlvr, shapes_vqa, vqav2)
