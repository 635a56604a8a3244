"""The result for one frame: which objects, their masks, and the frame as a label image (object id = value); and
the checks that object ids fit the integer type of the labels they are written into (they must never wrap)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import InputError

LABEL_DTYPE = np.int32


@dataclass(frozen=True)
class FrameLabels:
    """Masks of the objects on one frame. ``masks[i]`` (H, W) bool belongs to ``obj_ids[i]``; masks never overlap."""

    frame: int
    obj_ids: tuple[int, ...]
    masks: np.ndarray  # (n_objects, H, W) bool

    @property
    def labels(self) -> np.ndarray:
        """(H, W) int32 label image: ``obj_id`` where that object is, 0 elsewhere."""
        check_ids_fit(self.obj_ids, LABEL_DTYPE)
        labels = np.zeros(self.masks.shape[1:], LABEL_DTYPE)
        for obj_id, mask in zip(self.obj_ids, self.masks):
            labels[mask] = obj_id
        return labels

    def only(self, obj_ids) -> "FrameLabels":
        """The same frame with just the objects of ``obj_ids`` (their masks as they are)."""
        keep = [i for i, obj_id in enumerate(self.obj_ids) if obj_id in obj_ids]
        if len(keep) == len(self.obj_ids):
            return self
        return FrameLabels(self.frame, tuple(self.obj_ids[i] for i in keep), self.masks[keep])

    def mask(self, obj_id: int) -> np.ndarray:
        """(H, W) bool mask of one object (all False when the object is not in this result)."""
        if obj_id not in self.obj_ids:
            return np.zeros(self.masks.shape[1:], bool)
        return self.masks[self.obj_ids.index(obj_id)]


def highest_logit_wins(logits: np.ndarray) -> np.ndarray:
    """(n, H, W) logits -> (n, H, W) bool masks without overlap.

    A pixel belongs to an object where its logit is above 0; where several objects claim a pixel, the one with the
    highest logit gets it (SAM2's non-overlap rule for several tracked objects).
    """
    logits = np.asarray(logits, dtype=np.float32)
    masks = logits > 0
    if len(logits) > 1:
        winner = np.argmax(logits, axis=0)
        masks &= winner[None] == np.arange(len(logits))[:, None, None]
    return masks


def check_ids_fit(obj_ids: Iterable[int], dtype) -> None:
    """Raise an InputError unless every object id is 1 or more and fits ``dtype`` (the integer type of the labels
    it is written into) exactly: a larger id would wrap around (object 300 in uint8 labels becomes 44).

    Call it before writing ids into any label array, napari Labels layer or file; an empty ``obj_ids`` passes.
    """
    ids = [int(obj_id) for obj_id in obj_ids]
    if not ids:
        return
    smallest = min(ids)
    if smallest < 1:
        raise InputError(
            f"Object id {smallest} cannot be written as a label: object ids are 1, 2, 3, ... (0 is the background)."
        )
    dtype = np.dtype(dtype)
    if dtype.kind not in "biu":
        raise InputError(
            f"Labels of type {dtype} cannot hold object ids exactly: use an integer type such as int32 or uint32."
        )
    limit = 1 if dtype.kind == "b" else int(np.iinfo(dtype).max)
    largest = max(ids)
    if largest > np.iinfo(np.uint64).max:
        raise InputError(f"Object id {largest} is too large: no integer type holds it. Use object ids up to {limit}.")
    if largest > limit:
        wider = next(
            name for name, most in (("int32 or uint32", np.iinfo(np.uint32).max), ("int64", np.iinfo(np.int64).max),
                                    ("uint64", np.iinfo(np.uint64).max)) if largest <= most
        )
        raise InputError(
            f"Object id {largest} does not fit in labels of type {dtype}, which hold values up to {limit}: it would "
            f"be written as another number. Convert the labels (the Labels layer's data, or the array) to a wider "
            f"integer type such as {wider}, e.g. layer.data = layer.data.astype(np.{wider.split()[0]}), or use "
            f"object ids up to {limit}."
        )


def smallest_label_dtype(max_id: int, smallest=np.uint8) -> np.dtype:
    """The smallest unsigned integer type, at least as wide as ``smallest``, that holds label values up to
    ``max_id`` (e.g. uint16 up to 65535, then uint32); an InputError beyond uint64."""
    max_id = int(max_id)
    for candidate in (np.uint8, np.uint16, np.uint32, np.uint64):
        if np.dtype(candidate).itemsize >= np.dtype(smallest).itemsize and max_id <= np.iinfo(candidate).max:
            return np.dtype(candidate)
    raise InputError(f"Label value {max_id} is too large for any integer type; renumber the objects from 1.")
