"""Objects seeded from a label image: every label value on one frame becomes an object with that id, prompted by its
mask (Meta's ``add_new_mask``). This is how a Cellpose or StarDist segmentation, or a ground truth, starts tracking.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .prompts import MAX_OBJ_ID, Prompt


def seed_prompts(seed_labels, seed_frame: int, n_frames: int, frame_size: tuple[int, int]) -> list[Prompt]:
    """One mask Prompt per label value of ``seed_labels`` on frame ``seed_frame``, obj_id = the label value.

    ``seed_labels``: (H, W) labels of that frame, or (n_frames, H, W) labels of the whole stack (its ``seed_frame``
    slice is taken); any integer dtype, or whole floats; 0 is background. The label image is never changed.
    Raises InputError for a wrong shape, negative or fractional values, ids above the int32 range, or a frame with
    no label.
    """
    labels = np.asarray(seed_labels)
    seed_frame = _frame_in(seed_frame, n_frames)
    height, width = frame_size
    if labels.shape == (n_frames, height, width):
        labels = labels[seed_frame]
    elif labels.shape != (height, width):
        raise InputError(
            f"The seed labels have shape {labels.shape}; give one frame's labels ({height}, {width}) or the whole "
            f"stack's ({n_frames}, {height}, {width})."
        )
    labels = _whole_labels(labels)
    values = np.unique(labels)
    values = values[values != 0]
    if values.size == 0:
        raise InputError(f"The seed labels have no object on frame {seed_frame}: every pixel is 0 (background).")
    if values[-1] > MAX_OBJ_ID:
        raise InputError(f"Seed label {int(values[-1])} is too large: object ids go up to {MAX_OBJ_ID}.")
    return [Prompt(seed_frame, int(value), mask=labels == value) for value in values]


def _frame_in(frame, n_frames: int) -> int:
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < n_frames:
        raise InputError(f"seed_frame must be a frame number from 0 to {n_frames - 1}, got {frame!r}.")
    return int(frame)


def _whole_labels(labels: np.ndarray) -> np.ndarray:
    """Labels as int64, or InputError: negative values and fractions are no label values."""
    if labels.dtype == bool:
        return labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.number) or np.iscomplexobj(labels):
        raise InputError(f"Seed labels must be integers, got dtype {labels.dtype}.")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
            raise InputError("Seed labels must be whole numbers (a label image), not fractions, NaN or infinity.")
    if labels.size and labels.min() < 0:
        raise InputError(f"Seed labels must be 0 (background) or positive ids, found {labels.min()}.")
    if np.issubdtype(labels.dtype, np.floating) and labels.size and labels.max() > MAX_OBJ_ID:
        raise InputError(f"Seed label {labels.max():.0f} is too large: object ids go up to {MAX_OBJ_ID}.")
    return labels.astype(np.int64, copy=False)
