"""Writing per-frame SAM2 results into a napari Labels layer: a run owns its writes, they become one undo step, and
they never land over another object's pixels unless asked.

The rule for one frame and the objects of a result: their old pixels on that frame are replaced by their new masks
(an object that moved leaves no trail); background takes the new masks; pixels of objects not in the result keep
their label, unless ``overwrite_others`` is set.

How a run stays out of the user's way (napari 0.9): while it runs, the layer is not editable (``editable = False``:
no brush, no fill, napari's own mode is pan/zoom, its paint controls are greyed out) and its undo history is put
aside, so Ctrl-Z cannot undo half a run or something under it. napari empties the history when a layer stops being
editable, so the history is kept here and given back afterwards. The run writes straight into the layer's array,
remembering what each pixel held before; at the end the pixels it changed are set back and written again through
``data_setitem`` inside ``block_history``: the whole run is one item on top of the user's history (one Ctrl-Z),
and no stroke or undo of the user's can be mixed into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.frame_labels import FrameLabels, check_ids_fit
from ..errors import InputError
from .stack_plane import StackPlane

CONVERT_HINT = (
    "In napari: right-click the labels layer in the layer list > Convert data type > Convert to int32 (or int64)."
)


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


def check_ids_fit_layer(obj_ids, layer) -> None:
    """An InputError, with what to do in napari, when an object id does not fit the labels layer's integer type
    (it would wrap: object 300 in uint8 labels becomes 44)."""
    try:
        check_ids_fit(obj_ids, np.asarray(layer.data[(0,) * layer.ndim]).dtype)
    except InputError as error:
        raise InputError(f"{error} {CONVERT_HINT}") from None


def largest_id(dtype) -> int:
    """The largest label value a layer of ``dtype`` holds (object ids also stay within int32)."""
    dtype = np.dtype(dtype)
    limit = int(np.iinfo(np.int32).max)
    if dtype.kind in "iu":
        limit = min(limit, int(np.iinfo(dtype).max))
    return limit


@dataclass
class _Touched:
    """What a run changed on one frame: flat (row * W + col) pixel numbers, and their values before the run, one
    row per copy of the frame (a channel dim the labels are written across)."""

    flat: np.ndarray
    before: np.ndarray  # (copies, n)


class LabelsLock:
    """The labels layer locked for a run: not editable, its undo history set aside. ``release`` gives back what
    was there (editable, mode, history)."""

    def __init__(self, layer):
        self.layer = layer
        self.was_editable = bool(layer.editable)
        self.mode = layer.mode
        self._history = (getattr(layer, "_undo_history", None), getattr(layer, "_redo_history", None))
        self.released = False
        if self.was_editable:
            layer.editable = False  # napari empties the history now: ours is kept above

    def release(self, restore_history: bool = True) -> None:
        if self.released:
            return
        self.released = True
        if not self.was_editable:
            return
        self.layer.editable = True
        undo, redo = self._history
        if restore_history and undo is not None and redo is not None:
            self.layer._undo_history, self.layer._redo_history = undo, redo
        try:
            self.layer.mode = self.mode
        except (ValueError, TypeError):  # a mode this layer no longer offers
            pass


class LabelsRun:
    """The results of one run (a propagation, or one slice update) written into a Labels layer as a single undo
    step. While it runs the layer is locked (see the module's doc). Call ``finish`` when the run ends, however it
    ends: it unlocks the layer and commits the changes (``commit=False``: keep the pixels, record no undo step).

    ``problem()`` says why the run cannot write any more (its layer's data was replaced, e.g. with another shape);
    ``write`` raises an InputError then, and when an object id does not fit the layer's integer type.
    """

    def __init__(self, layer, plane: StackPlane, overwrite_others: bool = False, lock: bool = True):
        self.layer = layer
        self.plane = plane
        self.overwrite_others = overwrite_others
        self.frames_written: set[int] = set()
        self._array = layer.data
        self._touched: dict[int, _Touched] = {}
        self._lock = LabelsLock(layer) if lock else None
        self.finished = False

    @property
    def pixels_changed(self) -> int:
        return int(sum(record.flat.size for record in self._touched.values()))

    def problem(self) -> str | None:
        """Why writing cannot go on, or None."""
        data = self.layer.data
        if data is not self._array:
            if getattr(data, "shape", None) != getattr(self._array, "shape", None):
                return (
                    f"The labels layer {self.layer.name!r} changed shape while SAM2 was writing into it: the run was "
                    "stopped. Run it again."
                )
            return f"The data of the labels layer {self.layer.name!r} was replaced: the run was stopped. Run it again."
        return None

    def write(self, result: FrameLabels) -> int:
        """Apply one frame's result; returns the number of pixels changed."""
        if self.finished:
            return 0
        problem = self.problem()
        if problem is not None:
            raise InputError(problem)
        check_ids_fit_layer(result.obj_ids, self.layer)
        array = self._array
        existing = np.asarray(array[self.plane.frame_index(result.frame)])
        rows, cols, values = frame_changes(existing, result, self.overwrite_others)
        self.frames_written.add(result.frame)
        if len(rows) == 0:
            return 0
        indices = self.plane.pixel_indices(result.frame, rows, cols)
        copies = len(indices[0]) // len(rows)
        before = np.asarray(array[indices]).reshape(copies, len(rows))
        self._remember(result.frame, rows * existing.shape[1] + cols, before)
        array[indices] = np.tile(values, copies).astype(array.dtype, copy=False)
        self.layer.refresh()
        return len(rows)

    def finish(self, commit: bool = True) -> None:
        """Unlock the layer and record the run as one undo step (once; later calls do nothing)."""
        if self.finished:
            return
        self.finished = True
        same_data = self.layer.data is self._array
        if self._lock is not None:
            self._lock.release(restore_history=same_data)
        if not (commit and same_data and self._touched):
            return
        array, width = self._array, self.plane.frame_size[1]
        with self.layer.block_history():
            for frame, record in self._touched.items():
                rows, cols = np.divmod(record.flat, width)
                indices = self.plane.pixel_indices(frame, rows, cols)
                after = np.asarray(array[indices]).copy()
                array[indices] = record.before.reshape(-1)  # as before the run, without history ...
                self.layer.data_setitem(indices, after, refresh=False)  # ... and the run again, recorded
        self.layer.refresh()

    def _remember(self, frame: int, flat: np.ndarray, before: np.ndarray) -> None:
        record = self._touched.get(frame)
        if record is None:
            self._touched[frame] = _Touched(flat.astype(np.int64), before.copy())
            return
        new = ~np.isin(flat, record.flat)  # pixels this run had not changed yet on this frame
        if new.any():
            record.flat = np.concatenate([record.flat, flat[new].astype(np.int64)])
            record.before = np.concatenate([record.before, before[:, new]], axis=1)


def remove_object_labels(layer, obj_id: int) -> int:
    """Set every pixel of ``obj_id`` in the layer (every slice) to 0 as one undo step; returns how many."""
    data = layer.data
    if not isinstance(data, np.ndarray):
        data = np.asarray(data)
    indices = np.nonzero(data == obj_id)
    if not len(indices[0]):
        return 0
    with layer.block_history():
        layer.data_setitem(indices, 0)
    return len(indices[0])
