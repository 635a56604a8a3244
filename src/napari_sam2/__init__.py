"""napari-sam2: SAM2 / SAM2.1 for napari, scripts and the command line.

    from napari_sam2 import Prompt, segment_stack
    from napari_sam2.io.sample_data import make_nuclei_stack

    stack, truth = make_nuclei_stack()  # (24, 192, 256) synthetic nuclei
    labels = segment_stack(stack, [Prompt(frame=12, obj_id=1, points=[(84, 153)])])  # (row, col) on a nucleus
"""

from .errors import CheckpointError, DeviceError, InputError, Sam2Error

__version__ = "0.1.0"

# The scripting API imports torch: load it on first use, so that `napari-sam2 models list`
# and napari's plugin discovery stay quick.
_API_NAMES = (
    "Prompt", "segment_image", "segment_stack", "stream_stack", "FrameLabels", "TrackingSession",
    "Propagation", "get_model", "clear_model_cache", "DEFAULT_MODEL", "precompute_features", "track_stack",
    "TimelapseTracks",
)

__all__ = ["Sam2Error", "CheckpointError", "InputError", "DeviceError", "__version__", *_API_NAMES]


def __getattr__(name):
    if name in _API_NAMES:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'napari_sam2' has no attribute {name!r}")
