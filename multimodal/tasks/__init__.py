"""Tasks, registered by name in `TASKS` on import."""
from multimodal.tasks import contrastive, image_to_text, vqa  # noqa: F401  (registers)
from multimodal.tasks.registry import TASKS, GenerativeTask, Task  # noqa: F401
