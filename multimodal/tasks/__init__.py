"""Tasks, registered by name in `TASKS` on import."""
from multimodal.tasks import classification, contrastive, image_to_text  # noqa: F401
from multimodal.tasks import dcca, diffusion  # noqa: F401
from multimodal.tasks import masked_data_modeling, object_attributes, vqa  # noqa: F401
from multimodal.tasks import image_autoencoder  # noqa: F401
from multimodal.tasks import image_tokens  # noqa: F401
from multimodal.tasks.registry import TASKS, GenerativeTask, Task  # noqa: F401
