"""The ``napari-sam2`` command line (``commands``) and the segmentation of stacks on disk it runs."""

from .commands import main

__all__ = ["main"]
