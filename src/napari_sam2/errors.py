"""Errors a user can act on. Every message says what went wrong and what to do."""


class Sam2Error(Exception):
    """Base class of every error napari-sam2 raises for bad input or a bad environment."""


class CheckpointError(Sam2Error):
    """A checkpoint file is missing, unreadable, corrupt or not a SAM2 checkpoint."""


class InputError(Sam2Error, ValueError):
    """An image, stack or prompt does not have the shape, dtype or range expected."""


class DeviceError(Sam2Error):
    """The requested compute device is not available."""
