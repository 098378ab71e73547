"""larvseg-hf: LarvSeg large-vocabulary semantic segmentation as a Hugging Face transformers model."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation
from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING

from .configuration_larvseg import LarvSegConfig
from .image_processing_larvseg import LarvSegImageProcessor
from .model_loading import ModelCorruptError, ModelLoadError, ModelNotFoundError, load_model_and_processor
from .modeling_larvseg import (
    LarvSegForSemanticSegmentation,
    LarvSegPreTrainedModel,
    LarvSegSemanticSegmenterOutput,
)
from .prediction import PredictionError, Segmentation, predict

__version__ = "0.1.0"


def _register() -> None:
    """Installed-package route: Auto classes resolve "larvseg" without trust_remote_code."""
    AutoConfig.register("larvseg", LarvSegConfig, exist_ok=True)
    AutoModel.register(LarvSegConfig, LarvSegForSemanticSegmentation, exist_ok=True)
    AutoModelForSemanticSegmentation.register(LarvSegConfig, LarvSegForSemanticSegmentation, exist_ok=True)
    AutoImageProcessor.register(
        LarvSegConfig, slow_image_processor_class=LarvSegImageProcessor, exist_ok=True
    )
    # LarvSeg has no video processor. pipeline() still looks for one, and the saved AutoImageProcessor entry
    # makes it guess a remote "LarvSegVideoProcessor" and ask (15 s, in a terminal) whether to trust remote
    # code. A local entry of None says there is none, so the lookup fails quietly instead.
    VIDEO_PROCESSOR_MAPPING.register(
        LarvSegConfig, None, exist_ok=True
    )  # AutoVideoProcessor needs torchvision
    # Saved folders carry the code; one auto_map serves AutoModel and AutoModelForSemanticSegmentation.
    LarvSegConfig.register_for_auto_class()
    LarvSegForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
    LarvSegImageProcessor.register_for_auto_class("AutoImageProcessor")


_register()

__all__ = [
    "LarvSegConfig",
    "LarvSegForSemanticSegmentation",
    "LarvSegImageProcessor",
    "LarvSegPreTrainedModel",
    "LarvSegSemanticSegmenterOutput",
    "ModelCorruptError",
    "ModelLoadError",
    "ModelNotFoundError",
    "PredictionError",
    "Segmentation",
    "__version__",
    "load_model_and_processor",
    "predict",
]
