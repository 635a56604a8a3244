"""Writing per-frame SAM2 results into a napari Labels layer: undoable, one undo step per run, and never over
another object's pixels unless asked.

The rule for one frame and the objects of a result: their old pixels on that frame are replaced by their new masks
(an object that moved leaves no trail); background takes the new masks; pixels of objects not in the result keep
their label, unless ``overwrite_others`` is set.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np

from ..frame_labels import FrameLabels
from .stack_plane import StackPlane


def frame_changes(existing: np.ndarray, result: FrameLabels, overwrite_others: bool = False):
    """(rows, cols, values) of the pixels of one (H, W) label frame that ``result`` changes."""
    existing = np.asarray(existing)
    new = result.labels
    ours = np.isin(existing, result.obj_ids) if result.obj_ids else np.zeros(existing.shape, bool)
    writable = ours | (existing == 0)
    if overwrite_others:
        writable = np.ones(existing.shape, bool)
    target = np.where(ours, 0, existing)
    paint = writable & (new > 0)
    target[paint] = new[paint]
    rows, cols = np.nonzero(target != existing)
    return rows, cols, target[rows, cols]


class LabelsRun:
    """Results of one run (a propagation, or one live slice update) written into a Labels layer as a single undo
    step. Call ``finish`` when the run ends, however it ends."""

    def __init__(self, layer, plane: StackPlane, overwrite_others: bool = False):
        self.layer = layer
        self.plane = plane
        self.overwrite_others = overwrite_others
        self.frames_written: set[int] = set()
        self._history = ExitStack()
        # Everything written until finish() is staged and then committed as one item of the undo history.
        self._history.enter_context(layer.block_history())

    def write(self, result: FrameLabels) -> int:
        """Apply one frame's result; returns the number of pixels changed."""
        existing = np.asarray(self.layer.data[self.plane.frame_index(result.frame)])
        rows, cols, values = frame_changes(existing, result, self.overwrite_others)
        self.frames_written.add(result.frame)
        if len(rows) == 0:
            return 0
        indices = self.plane.pixel_indices(result.frame, rows, cols)
        copies = len(indices[0]) // len(rows)
        self.layer.data_setitem(indices, np.tile(values, copies).astype(self.layer.data.dtype, copy=False))
        return len(rows)

    def finish(self) -> None:
        self._history.close()
