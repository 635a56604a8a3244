"""The tracker's checks of user arguments (frame indices, object ids, point / box / mask prompts) and the conversion
of prompts to model-input pixels. Every bad argument raises InputError with a message a user can act on."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .devices import interpolate
from .preprocess import model_coords

POSITIVE, NEGATIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 1, 0, 2, 3  # SAM's point labels


def check_frame_index(frame_idx, num_frames: int) -> int:
    """frame_idx as an int in [0, num_frames); InputError for a non-integer or an index outside the stack."""
    if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
        raise InputError(f"Frame indices are integers; got {frame_idx!r}.")
    if not 0 <= frame_idx < num_frames:
        raise InputError(f"Frame {frame_idx} is outside the stack (frames 0 to {num_frames - 1}).")
    return int(frame_idx)


def check_obj_id(obj_id) -> int:
    """obj_id as an int; InputError for anything but an integer (bools included)."""
    if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
        raise InputError(f"Object ids are integers; got {obj_id!r}.")
    return int(obj_id)


def prompt_to_model_space(points, labels, box, video_hw: tuple[int, int],
                          image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clicks and / or a box in original-size pixels -> SAM's point prompt in model-input pixels.

    points: (N, 2) (x, y) pixels of frames of size video_hw = (H, W), with labels (N,) 1 = positive, 0 = negative;
    box: (x0, y0, x1, y1) pixels. Both may be given (the box comes first, as its two corners labelled 2 and 3).
    Returns CPU coords (1, N', 2) float32 (x, y) in pixels of the (image_size, image_size) model input and labels
    (1, N') int32. InputError for no prompt, missing or wrong labels, non-finite values or points outside the frame.
    """
    if points is None and box is None:
        raise InputError("Give points (with labels) or a box for the prompt.")
    if (points is None) != (labels is None):
        raise InputError("Points need labels, one per point (1 = positive, 0 = negative).")
    h, w = video_hw
    coords = torch.zeros(0, 2)
    point_labels = torch.zeros(0, dtype=torch.int32)
    if points is not None:
        coords = _float_array(points, "points").reshape(-1, 2)
        point_labels = torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1), dtype=torch.int32)
        if len(coords) != len(point_labels):
            raise InputError(f"{len(coords)} points but {len(point_labels)} labels: give one label per point.")
        if not torch.isin(point_labels, torch.tensor([NEGATIVE, POSITIVE], dtype=torch.int32)).all():
            raise InputError("Point labels must be 1 (positive) or 0 (negative).")
        _check_inside(coords, h, w, "point")
    if box is not None:
        corners = _float_array(box, "box").reshape(-1)
        if corners.numel() != 4:
            raise InputError("A box is (x0, y0, x1, y1).")
        corners = corners.reshape(2, 2)
        _check_inside(corners, h, w, "box corner")
        coords = torch.cat([corners, coords])
        point_labels = torch.cat([torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], dtype=torch.int32), point_labels])
    coords = model_coords(coords, (h, w), image_size)
    return coords[None], point_labels[None]


def mask_prompt_to_model_space(mask, video_hw: tuple[int, int], image_size: int,
                               device: torch.device) -> torch.Tensor:
    """A mask prompt (H, W) at the frames' original size video_hw, any dtype (nonzero = object) -> float32 (1, 1, S, S)
    of 0 / 1 at the model input size S = image_size on `device` (antialiased bilinear resize, then >= 0.5, as Meta's
    `add_new_mask`). InputError for another shape."""
    mask = torch.as_tensor(np.asarray(mask), device=device)
    if tuple(mask.shape) != tuple(video_hw):
        raise InputError(f"The mask prompt has shape {tuple(mask.shape)}, the frames are {tuple(video_hw)}.")
    mask = mask.bool()[None, None].float()
    if tuple(mask.shape[-2:]) != (image_size, image_size):
        mask = interpolate(mask, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        mask = (mask >= 0.5).float()
    return mask


def _float_array(value, name) -> torch.Tensor:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"The {name} must be numbers; got {value!r}.") from None
    if not np.isfinite(arr).all():
        raise InputError(f"The {name} contain NaN or infinite values.")
    return torch.from_numpy(arr.copy())


def _check_inside(coords: torch.Tensor, h, w, what):
    outside = (coords[:, 0] < 0) | (coords[:, 0] > w) | (coords[:, 1] < 0) | (coords[:, 1] > h)
    if outside.any():
        x, y = coords[outside][0].tolist()
        raise InputError(f"A {what} at (x={x:g}, y={y:g}) lies outside the {w} x {h} (width x height) frames.")
