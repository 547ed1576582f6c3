"""Models: encoders, fusion modules and heads, each selected by name from a registry."""
from multimodal.models import fusion, heads  # noqa: F401  (registers)
from multimodal.models import beit3_models, fusion_nlvr, fusion_vqa, pali, paligemma  # noqa: F401
from multimodal.models import beit3_pretraining, scene_parser, two_towers  # noqa: F401
from multimodal.models import fusion_classifier, paired_embeddings, sync_offset  # noqa: F401
from multimodal.models import precomputed, text_encoder, vit  # noqa: F401  (registers)
from multimodal.models import audio_encoder, sensor_encoder, video_encoder  # noqa: F401
from multimodal.models import image_autoencoder  # noqa: F401  (registers)
from multimodal.models import diffusion  # noqa: F401  (registers)
from multimodal.models import dalle, maskgit  # noqa: F401  (registers)
from multimodal.models.registry import ENCODERS, MODELS  # noqa: F401
