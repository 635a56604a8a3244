"""What the user tells SAM2 about an object: points, boxes and masks on one frame, in the array's (row, col) pixels.

napari and numpy index an image as (row, col); SAM2 wants (x, y) = (col, row). ``engine_prompt`` is the one place
where that conversion happens. Pixel (r, c) has its centre at (r, c), as in napari's data coordinates, so a point
may lie anywhere from -0.5 to size - 0.5 along each axis and still be on the image.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError, PromptWarning
from ..numbers import whole_number

# Where prompts are propagated to from their frames: both ways, to later frames only, or to earlier ones only.
DIRECTIONS = ("both", "forward", "backward")

# Label values are stored as int32, so object ids must fit.
MAX_OBJ_ID = np.iinfo(np.int32).max


@dataclass(frozen=True, eq=False)
class Prompt:
    """Points, a box and/or a mask that mark one object (``obj_id``) on one frame.

    - ``frame``: index along the stack's frame axis (0 for a single image).
    - ``obj_id``: positive integer; it becomes the object's label value.
    - ``points``: (row, col) pixel positions; ``labels``: 1 = on the object (positive), 0 = not on it (negative).
      Without ``labels`` every point is positive.
    - ``box``: (row0, col0, row1, col1), two opposite corners, in any order.
    - ``mask``: (H, W) array the size of one frame, nonzero = the object (e.g. ``labels == 5`` of a Cellpose or
      StarDist result). A mask alone is taken as the object's mask on that frame, as is (Meta's ``add_new_mask``);
      with points or a box too, these refine it (the mask is the decoder's mask input, as in Meta's predictor when
      clicks follow a mask on a frame). Kept as a read-only bool array.
    """

    frame: int
    obj_id: int
    points: tuple = ()
    labels: tuple = ()
    box: tuple | None = None
    mask: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "frame", whole_number(self.frame, "frame", minimum=0))
        object.__setattr__(self, "obj_id", object_id(self.obj_id))
        points = _points(self.points)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "labels", _labels(self.labels, len(points)))
        object.__setattr__(self, "box", None if self.box is None else _box(self.box))
        object.__setattr__(self, "mask", None if self.mask is None else _mask(self.mask, self.obj_id, self.frame))
        if not points and self.box is None and self.mask is None:
            raise InputError(
                f"Prompt for object {self.obj_id} on frame {self.frame} has no points, box or mask."
            )

    def __eq__(self, other) -> bool:
        if not isinstance(other, Prompt):
            return NotImplemented
        same_mask = (self.mask is None and other.mask is None) or (
            self.mask is not None and other.mask is not None and self.mask.shape == other.mask.shape
            and bool(np.array_equal(self.mask, other.mask))
        )
        return same_mask and (self.frame, self.obj_id, self.points, self.labels, self.box) == (
            other.frame, other.obj_id, other.points, other.labels, other.box)

    def __hash__(self) -> int:
        return hash((self.frame, self.obj_id, self.points, self.labels, self.box, self.mask is None))


@dataclass(frozen=True)
class EnginePrompt:
    """Every point and the box of one object on one frame, in SAM2's (x, y) pixel convention."""

    frame: int
    obj_id: int
    points_xy: np.ndarray | None  # (N, 2) float32 (x, y), or None
    labels: np.ndarray | None  # (N,) int32 of 1 / 0, or None
    box_xy: np.ndarray | None  # (4,) float32 (x0, y0, x1, y1), or None
    mask: np.ndarray | None = None  # (H, W) bool at the frame's size, or None


def rowcol_to_xy(points_rc) -> np.ndarray:
    """(N, 2) (row, col) -> (N, 2) (x, y) = (col, row), float32. The only row/col <-> x/y swap in the package."""
    return np.asarray(points_rc, dtype=np.float32).reshape(-1, 2)[:, ::-1].copy()


def engine_prompt(frame: int, obj_id: int, points_rc, labels, box_rc, image_size: tuple[int, int],
                  mask=None) -> EnginePrompt:
    """One object's prompts on one frame in the engine's (x, y) convention, box corners sorted.

    Positions are clamped to the centres of the outermost pixels: a click on the outer half of an edge pixel
    (e.g. row -0.3) means that pixel, and the engine accepts only positions on the image.
    """
    height, width = image_size
    upper_xy = np.array([width - 1, height - 1], dtype=np.float32)
    points_xy = label_array = box_xy = None
    if len(points_rc):
        points_xy = np.clip(rowcol_to_xy(points_rc), 0, upper_xy)
        label_array = np.asarray(labels, dtype=np.int32)
    if box_rc is not None:
        corners = np.clip(rowcol_to_xy([box_rc[:2], box_rc[2:]]), 0, upper_xy)
        box_xy = np.concatenate([corners.min(axis=0), corners.max(axis=0)]).astype(np.float32)
    return EnginePrompt(frame, obj_id, points_xy, label_array, box_xy, mask)


def group_prompts(prompts: Iterable[Prompt], image_size: tuple[int, int]) -> list[EnginePrompt]:
    """Merge prompts per (frame, object), in the order each pair first appears; at most one box and one mask per
    pair."""
    prompts = prompt_list(prompts)
    merged: "OrderedDict[tuple[int, int], dict]" = OrderedDict()
    for prompt in prompts:
        entry = merged.setdefault((prompt.frame, prompt.obj_id),
                                  {"points": [], "labels": [], "box": None, "mask": None})
        entry["points"].extend(prompt.points)
        entry["labels"].extend(prompt.labels)
        if prompt.box is not None:
            if entry["box"] is not None:
                raise InputError(
                    f"Object {prompt.obj_id} has two boxes on frame {prompt.frame}; SAM2 takes one box per object "
                    "and frame. Keep one box and add points to refine it."
                )
            entry["box"] = prompt.box
        if prompt.mask is not None:
            if entry["mask"] is not None:
                raise InputError(
                    f"Object {prompt.obj_id} has two masks on frame {prompt.frame}: give one mask per object and "
                    "frame (combine them first, e.g. mask_a | mask_b)."
                )
            entry["mask"] = prompt.mask
    return [
        engine_prompt(frame, obj_id, entry["points"], entry["labels"], entry["box"], image_size, entry["mask"])
        for (frame, obj_id), entry in merged.items()
    ]


def check_prompts_fit(prompts: Sequence[Prompt], n_frames: int, image_size: tuple[int, int]) -> None:
    """Every prompt on an existing frame, every point on the image, every box overlapping it, every mask the frame's
    size."""
    height, width = image_size
    for prompt in prompts:
        if prompt.frame >= n_frames:
            raise InputError(
                f"A prompt for object {prompt.obj_id} is on frame {prompt.frame}, but the stack has {n_frames} "
                f"frame(s) (0 to {n_frames - 1}) along the chosen axis. Is the right axis chosen?"
            )
        for row, col in prompt.points:
            if not (-0.5 <= row <= height - 0.5 and -0.5 <= col <= width - 0.5):
                raise InputError(
                    f"Point (row {row:g}, col {col:g}) of object {prompt.obj_id} on frame {prompt.frame} lies outside "
                    f"the {height} x {width} image (rows 0 to {height - 1}, columns 0 to {width - 1})."
                )
        if prompt.box is not None:
            row0, col0, row1, col1 = prompt.box
            if max(row0, row1) < -0.5 or min(row0, row1) > height - 0.5 or max(col0, col1) < -0.5 or min(
                col0, col1
            ) > width - 0.5:
                raise InputError(
                    f"The box {prompt.box} of object {prompt.obj_id} on frame {prompt.frame} does not overlap the "
                    f"{height} x {width} image."
                )
        if prompt.mask is not None and prompt.mask.shape != (height, width):
            raise InputError(
                f"The mask of object {prompt.obj_id} on frame {prompt.frame} has shape {prompt.mask.shape}, but a frame "
                f"is {height} x {width}: give a mask of one frame's size (for a label stack, take its slice)."
            )


def negative_only_pairs(prompts: Iterable[Prompt]) -> list[tuple[int, int]]:
    """The (frame, obj_id) pairs, in order, whose prompts there are negative clicks only (no positive click, no box,
    no mask): SAM2 is told only where the object is not, and usually finds nothing there."""
    positive: "OrderedDict[tuple[int, int], bool]" = OrderedDict()
    for prompt in prompts:
        key = (prompt.frame, prompt.obj_id)
        marks = prompt.box is not None or prompt.mask is not None or any(label == 1 for label in prompt.labels)
        positive[key] = positive.get(key, False) or marks
    return [key for key, has_positive in positive.items() if not has_positive]


def negative_only_text(obj_id: int, frame: int, frame_word: str = "frame") -> str:
    return (
        f"Object {obj_id} has only negative clicks on {frame_word} {frame}: SAM2 needs a positive click (on the "
        "object) or a box there to find it."
    )


def warn_negative_only(prompts: Iterable[Prompt]) -> None:
    """A PromptWarning for each (frame, object) with negative clicks only; the prompts are still used as given
    (Meta's predictor accepts them too)."""
    for frame, obj_id in negative_only_pairs(prompts):
        warnings.warn(negative_only_text(obj_id, frame), PromptWarning, stacklevel=3)


def prompt_list(prompts) -> list[Prompt]:
    """``prompts`` as a non-empty list of Prompt, or an InputError saying what is wrong."""
    if isinstance(prompts, Prompt):
        prompts = [prompts]
    try:
        prompts = list(prompts)
    except TypeError:
        raise InputError(f"prompts must be a list of napari_sam2.Prompt, got {type(prompts).__name__}.") from None
    if not prompts:
        raise InputError(
            "No prompts given: add at least one Prompt(frame, obj_id, points=[(row, col)]) or a box or mask for the "
            "object to segment (or seed objects from a label image: seed_labels=)."
        )
    for prompt in prompts:
        if not isinstance(prompt, Prompt):
            raise InputError(f"prompts must be napari_sam2.Prompt objects, got a {type(prompt).__name__}.")
    return prompts


def object_id(value) -> int:
    """An object id given by a user, as an int: a whole number from 1 to MAX_OBJ_ID (the object's label value; 0 is
    background). Whole floats and numeric text are accepted as the number they hold (pandas hands back floats for an
    integer column that once held a missing value; CSV and JSON files hold text or floats). Raises InputError."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if isinstance(number, (float, np.floating)) and math.isfinite(number) and float(number).is_integer():
        number = int(number)
    try:
        obj_id = whole_number(number, "obj_id", minimum=1)
    except InputError:
        raise InputError(
            f"obj_id must be a whole number of 1 or more (it becomes the label value; 0 is background), got {value!r}."
        ) from None
    if obj_id > MAX_OBJ_ID:
        raise InputError(f"obj_id {obj_id} is too large: label values go up to {MAX_OBJ_ID}.")
    return obj_id


def _finite_numbers(values, name: str, shape_text: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers {shape_text}, got {values!r}.") from None
    if not np.isfinite(array).all():
        raise InputError(f"{name} must be finite numbers, got {values!r}.")
    return array


def _points(points) -> tuple[tuple[float, float], ...]:
    if points is None or (not isinstance(points, np.ndarray) and len(points) == 0):
        return ()
    array = _finite_numbers(points, "points", "as (row, col) pairs")
    if array.size == 0:
        return ()
    if array.ndim == 1 and array.shape == (2,):
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 2:
        raise InputError(f"points must be (row, col) pairs, shape (N, 2); got shape {array.shape}.")
    return tuple((float(row), float(col)) for row, col in array)


def _labels(labels, n_points: int) -> tuple[int, ...]:
    if labels is None or (not isinstance(labels, np.ndarray) and len(labels) == 0):
        return (1,) * n_points  # points without labels are all positive
    values = []
    for label in np.asarray(labels, dtype=object).reshape(-1):
        if isinstance(label, (bool, np.bool_)):
            values.append(int(label))
            continue
        try:
            number = float(label)
        except (TypeError, ValueError):
            number = math.nan
        if number not in (0.0, 1.0):
            raise InputError(f"Point labels must be 1 (positive) or 0 (negative); got {label!r}.")
        values.append(int(number))
    if len(values) != n_points:
        raise InputError(f"{n_points} point(s) but {len(values)} label(s): give one label (1 or 0) per point.")
    return tuple(values)


def _mask(mask, obj_id: int, frame: int) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise InputError(
            f"The mask of object {obj_id} on frame {frame} must be a 2D (H, W) array of one frame; got shape "
            f"{array.shape}."
        )
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"The mask of object {obj_id} on frame {frame} must hold numbers or booleans.")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(f"The mask of object {obj_id} on frame {frame} holds NaN or infinite values.")
    array = array != 0
    if not array.any():
        raise InputError(
            f"The mask of object {obj_id} on frame {frame} is empty: a mask prompt needs at least one pixel of the "
            "object."
        )
    array.flags.writeable = False
    return array


def _box(box) -> tuple[float, float, float, float]:
    array = _finite_numbers(box, "box", "(row0, col0, row1, col1)").reshape(-1)
    if array.shape != (4,):
        raise InputError(f"box must be 4 numbers (row0, col0, row1, col1); got {box!r}.")
    return tuple(float(v) for v in array)
