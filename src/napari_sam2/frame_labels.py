"""The result for one frame: which objects, their masks, and the frame as a label image (object id = value)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        labels = np.zeros(self.masks.shape[1:], LABEL_DTYPE)
        for obj_id, mask in zip(self.obj_ids, self.masks):
            labels[mask] = obj_id
        return labels

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


def first_come_keeps(masks: np.ndarray) -> np.ndarray:
    """(n, H, W) bool -> (n, H, W) bool without overlap: a pixel claimed by several objects stays with the first."""
    kept = np.array(masks, dtype=bool, copy=True)
    taken = np.zeros(kept.shape[1:], bool)
    for mask in kept:
        mask &= ~taken
        taken |= mask
    return kept
