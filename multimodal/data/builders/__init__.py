"""TFDS builders, registered with TFDS by name on import (`tfds.builder("shapes_vqa")`)."""
from multimodal.data.builders import (coco_karpathy, jsonl_vqa, nlvr2,  # noqa: F401
                                      shapes_av, shapes_captions, shapes_nlvr, shapes_vqa,
                                      vqav2)
