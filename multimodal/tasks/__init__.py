"""Tasks, registered by name in `TASKS` on import."""
from multimodal.tasks import vqa  # noqa: F401  (registers)
from multimodal.tasks.registry import TASKS, Task  # noqa: F401
