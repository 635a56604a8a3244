"""SAM2 / SAM2.1 in PyTorch: loads Meta's official checkpoints and reproduces their outputs.

Never imports napari or Qt.
"""

from .checkpoints import build_model, detect_variant, load_model
from .configs import CONFIGS, VARIANTS, HieraConfig, ModelConfig, get_config
from .devices import resolve_device
from .model import FrameFeatures, Sam2Model
from .predictor import ImagePredictor
from .tracker import FrameResult, Tracker

__all__ = [
    "CONFIGS", "VARIANTS", "HieraConfig", "ModelConfig", "get_config",
    "Sam2Model", "FrameFeatures", "build_model", "load_model", "detect_variant",
    "resolve_device", "ImagePredictor", "Tracker", "FrameResult",
]
