"""napari-sam2: SAM2 / SAM2.1 for napari, scripts and the command line."""

from .errors import CheckpointError, DeviceError, InputError, Sam2Error

__version__ = "0.1.0"

__all__ = ["Sam2Error", "CheckpointError", "InputError", "DeviceError", "__version__"]
