"""Which axis of an array is what: the one model of axis roles, shared by arrays (the scripting API), files (the
command line) and napari layers.

An array holds a stack of 2D frames: the *frame axis* is the one to propagate along (z slices or time points), the
two *spatial axes* are the frames' rows and columns (in the array's order), an optional *channel axis* holds
channels (or RGB(A) samples), and every further axis is *fixed* at one index (e.g. z of a (t, z, y, x) stack
tracked along t). :class:`AxisRoles` says this for one array and builds the index of one frame. Axis letters
(tifffile's T, Z, C, Y, X, S; napari's axis labels) name axes: :data:`CHANNEL_LETTERS` and :func:`axis_letter` are
the one vocabulary, :func:`stack_axes` works the roles out of a file's letters.

No torch and no napari here.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Mapping

from ..errors import InputError

CHANNEL_LETTERS = "CS"  # channels, and RGB(A) samples
UNNAMED_LETTERS = "QI"  # tifffile's letters for an axis whose meaning the file does not say
ADDED_FRAME_LETTER = "Q"  # the length-1 frame axis added in front of a single plane
# Preferred axes to propagate along, in order: through a 3D object first, then through time.
FRAME_LETTER_PREFERENCE = "ZT"
_LETTER_ALIASES = {"TIME": "T", "CHANNEL": "C", "CHANNELS": "C", "DEPTH": "Z", "PLANE": "Z", "SLICE": "Z"}


def axis_letter(label: str) -> str:
    """The upper-case letter of an axis label: "t", "time" -> "T"; "channel" -> "C"; "depth" / "z" -> "Z"."""
    label = str(label).strip().upper()
    return _LETTER_ALIASES.get(label, label[:1])


@dataclass(frozen=True)
class AxisRoles:
    """The role of every axis of an array of ``shape``.

    ``frame_axis`` is None for a single 2D image (one frame). ``fixed`` gives (axis, index) for the further axes,
    sorted by axis. ``channel_axis`` may be one past the last axis of ``shape`` where ``shape`` leaves the channels
    out (napari's RGB layers: their dims exclude the samples axis of their data).
    """

    shape: tuple[int, ...]
    frame_axis: int | None
    channel_axis: int | None
    spatial_axes: tuple[int, int]
    fixed: tuple[tuple[int, int], ...] = ()

    @property
    def n_frames(self) -> int:
        return 1 if self.frame_axis is None else self.shape[self.frame_axis]

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of a frame, in pixels."""
        return self.shape[self.spatial_axes[0]], self.shape[self.spatial_axes[1]]

    @property
    def fixed_indices(self) -> dict[int, int]:
        return dict(self.fixed)

    @property
    def other_axes(self) -> tuple[int, ...]:
        """The axes that are neither frames, channels nor image axes (fixed or still to be fixed)."""
        roles = {self.frame_axis, self.channel_axis, *self.spatial_axes}
        return tuple(axis for axis in range(len(self.shape)) if axis not in roles)

    def frame_index(self, frame: int, channel=slice(None)) -> tuple:
        """Basic (not fancy) index of one frame, so that any array-like (memmap, dask, zarr) reads only that frame;
        ``channel`` indexes the channel axis when it is one of ``shape``'s axes."""
        index: list = [slice(None)] * len(self.shape)
        if self.frame_axis is not None:
            index[self.frame_axis] = frame
        for axis, position in self.fixed:
            index[axis] = position
        if self.channel_axis is not None and self.channel_axis < len(self.shape):
            index[self.channel_axis] = channel
        return tuple(index)

    def channel_position_in_frame(self) -> int | None:
        """Where the channel axis ends up once the frame and fixed axes are indexed away."""
        if self.channel_axis is None:
            return None
        return sorted((*self.spatial_axes, self.channel_axis)).index(self.channel_axis)


def axis_roles(shape, axis, channel_axis=None, fixed_indices: Mapping[int, int] | None = None) -> AxisRoles:
    """The roles of the axes of an array of ``shape`` given by axis numbers (the scripting API's arguments): the
    frame ``axis``, the ``channel_axis`` (or None) and ``fixed_indices`` ``{axis: index}``; the two axes left are the
    image. Negative numbers count from the end. Raises InputError saying what to give when they do not fit."""
    shape = tuple(int(size) for size in shape)
    frame_axis = _normalised_axis(axis, len(shape), "axis", shape)
    if channel_axis is not None:
        channel_axis = _normalised_axis(channel_axis, len(shape), "channel_axis", shape)
    if channel_axis == frame_axis:
        raise InputError(
            f"channel_axis and axis are both {frame_axis}: the frame axis (slices or time points) and the "
            f"channel axis must be different axes of the array (shape {shape})."
        )
    fixed = _normalised_fixed_indices(fixed_indices, shape, frame_axis, channel_axis)
    spatial_axes = _image_axes(shape, frame_axis, channel_axis, fixed)
    if shape[frame_axis] == 0:
        raise InputError(f"The data has no frames: axis {frame_axis} of shape {shape} has length 0.")
    height, width = (shape[a] for a in spatial_axes)
    if height < 2 or width < 2:
        raise InputError(
            f"Frames of {height} x {width} pixels are too small to segment (shape {shape}, image axes "
            f"{spatial_axes}); each frame needs at least 2 x 2 pixels. Is the right axis chosen as the frame axis?"
        )
    if channel_axis is not None and shape[channel_axis] == 0:
        raise InputError(f"The channel axis {channel_axis} of shape {shape} has no channels.")
    return AxisRoles(shape, frame_axis, channel_axis, spatial_axes, tuple(sorted(fixed.items())))


@dataclass(frozen=True)
class StackAxes(AxisRoles):
    """The roles of the axes of a file's array, whose axes are named by ``letters`` (see :func:`stack_axes`)."""

    letters: str = field(kw_only=True)
    # A single plane (a 2D image, with or without channels) is a stack of one frame: ``letters`` and ``shape`` then
    # describe the file's array with a frame axis of length 1 (letter ADDED_FRAME_LETTER) added in front, and the
    # file's own axes are ``letters[1:]`` (see ``file_label_letters``).
    added_frame_axis: bool = field(default=False, kw_only=True)

    @property
    def label_axes(self) -> tuple[int, ...]:
        """The axes a label image of this stack has: every axis but the channel axis, in the file's order."""
        return tuple(axis for axis in range(len(self.shape)) if axis != self.channel_axis)

    @property
    def label_letters(self) -> str:
        return "".join(self.letters[axis] for axis in self.label_axes)

    @property
    def label_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[axis] for axis in self.label_axes)

    @property
    def file_label_letters(self) -> str:
        """The axes of the label file: those of the labels, without an added frame axis."""
        return self.label_letters[1:] if self.added_frame_axis else self.label_letters


def stack_axes(letters: str, shape, axis=None) -> StackAxes:
    """The roles of the axes of an array of ``shape`` with axis ``letters``.

    ``axis`` picks the frame axis: an axis letter ("z", "t", ...), an index into the axes (negative counts from the
    end, as a string or int), or None for the only axis that is neither an image nor a channel axis. An axis of
    unknown meaning (Q / I) stands in for "z" or "t" when it is the only candidate.

    A single plane (only image and channel axes, e.g. "YX" or "YXS") is a stack of one frame: the result describes
    it with a frame axis of length 1 added in front (``added_frame_axis``), whatever ``axis`` says.
    """
    letters = str(letters).upper()
    shape = tuple(int(size) for size in shape)
    if len(letters) != len(shape):
        raise InputError(f"The axes {letters!r} do not match the shape {shape}.")
    letters = _samples_taken_for_slices(letters, axis)
    channel_axes = [index for index, letter in enumerate(letters) if letter in CHANNEL_LETTERS]
    if len(channel_axes) > 1:
        raise InputError(
            f"The image has two channel axes ({letters}); napari-sam2 handles one. Save the channels along one axis."
        )
    channel_axis = channel_axes[0] if channel_axes else None
    if _guessed_layout(letters) and _as_index(axis, len(letters)) not in (None, channel_axis):
        # tifffile calls the last two axes of a file that does not name its axes Y and X; an axis index chosen by
        # the user is the frame axis even so, and the two remaining axes are the image, as for segment_stack.
        frame_axis = _as_index(axis, len(letters))
        rest = [index for index in range(len(letters)) if index not in (frame_axis, channel_axis)]
        if len(rest) < 2:
            raise InputError(f"The image has axes {letters}: besides axis {frame_axis} it needs two image axes.")
        spatial = (rest[-2], rest[-1])
        return StackAxes(shape, frame_axis, channel_axis, spatial, letters=letters)
    spatial = _spatial_axes(letters, channel_axis)
    candidates = [
        index for index in range(len(letters)) if index not in spatial and index != channel_axis
    ]
    if not candidates:
        # A single plane among stacks is segmented as a stack of one frame; ``axis`` (chosen for the stacks) has
        # nothing to choose from here.
        return StackAxes(
            (1, *shape), 0, None if channel_axis is None else channel_axis + 1, (spatial[0] + 1, spatial[1] + 1),
            letters=ADDED_FRAME_LETTER + letters, added_frame_axis=True,
        )
    frame_axis = _frame_axis(axis, letters, candidates)
    return StackAxes(shape, frame_axis, channel_axis, spatial, letters=letters)


def _guessed_layout(letters: str) -> bool:
    """Whether the file left its axes unnamed (tifffile then names them Q...YX)."""
    return any(letter in UNNAMED_LETTERS for letter in letters)


def _as_index(axis, ndim: int) -> int | None:
    """``axis`` as a valid axis index, or None when it is a letter, out of range or not given."""
    try:
        index = int(str(axis).strip())
    except ValueError:
        return None
    return index % ndim if -ndim <= index < ndim else None


def _samples_taken_for_slices(letters: str, axis) -> str:
    """tifffile (up to 2026) saves a plain stack of 3 or 4 slices as an RGB(A) image: axes "SYX", or "YXS" when the
    slices are the last axis. Its sample axis is taken for slices (an unnamed axis) when the user chooses it by
    index, or when it is planar and the file has no other axis to propagate along."""
    if "S" not in letters:
        return letters
    samples = letters.index("S")
    chosen = _as_index(axis, len(letters)) == samples
    planar_only = samples != len(letters) - 1 and all(letter in "SYX" for letter in letters)
    return letters.replace("S", "Q") if chosen or planar_only else letters


def _spatial_axes(letters: str, channel_axis: int | None) -> tuple[int, int]:
    if "Y" in letters and "X" in letters:
        return letters.index("Y"), letters.index("X")
    rest = [index for index in range(len(letters)) if index != channel_axis]
    if len(rest) < 2:
        raise InputError(f"The image has axes {letters}: it needs two image axes (rows and columns).")
    return rest[-2], rest[-1]


def _describe(letters: str, candidates: list[int]) -> str:
    return " or ".join(
        f"--axis {letters[i].lower()}" if letters[i] not in UNNAMED_LETTERS else f"--axis {i}" for i in candidates
    )


def _frame_axis(axis, letters: str, candidates: list[int]) -> int:
    if axis is None:
        if len(candidates) == 1:
            return candidates[0]
        raise InputError(
            f"The stack has axes {letters}: say which axis to propagate along ({_describe(letters, candidates)})."
        )
    text = str(axis).strip()
    try:
        index = int(text)
    except ValueError:
        return _frame_axis_by_letter(text, letters, candidates)
    if not -len(letters) <= index < len(letters):
        raise InputError(f"--axis {index} is not an axis of the stack: it has {len(letters)} axes ({letters}).")
    index %= len(letters)
    if index not in candidates:
        raise InputError(
            f"Axis {index} ({letters[index]}) of the stack ({letters}) is an image or channel axis; propagate along "
            f"{_describe(letters, candidates)}."
        )
    return index


def _frame_axis_by_letter(text: str, letters: str, candidates: list[int]) -> int:
    letter = text.upper()
    if len(letter) != 1 or not letter.isalpha():
        raise InputError(f"--axis takes an axis letter (z, t) or an axis index; got {text!r}.")
    named = [index for index in candidates if letters[index] == letter]
    if named:
        return named[0]
    unnamed = [index for index in candidates if letters[index] in UNNAMED_LETTERS]
    if letter in "ZT" and len(candidates) == 1 and unnamed:
        return unnamed[0]  # e.g. a plain 3D TIFF ("QYX"): its one unnamed axis is the z or t the user means
    if letter in letters:
        raise InputError(
            f"{letter.lower()} is an image or channel axis of the stack (its axes are {letters}): SAM2 segments each "
            f"frame in y and x; propagate along {_describe(letters, candidates)}."
        )
    raise InputError(
        f"The stack has no {letter.lower()} axis to propagate along (its axes are {letters}); use "
        f"{_describe(letters, candidates)}."
    )


def _normalised_axis(axis, ndim: int, name: str, shape) -> int:
    try:
        axis = operator.index(axis)
    except TypeError:
        raise InputError(f"{name} must be an integer axis number, got {axis!r}.") from None
    if not -ndim <= axis < ndim:
        raise InputError(f"{name}={axis} is out of range for data with {ndim} axes (shape {tuple(shape)}).")
    return axis % ndim


def _normalised_fixed_indices(fixed_indices, shape, frame_axis, channel_axis) -> dict[int, int]:
    fixed: dict[int, int] = {}
    for axis, position in dict(fixed_indices or {}).items():
        axis = _normalised_axis(axis, len(shape), "fixed_indices axis", shape)
        if axis in (frame_axis, channel_axis) or axis in fixed:
            role = "the frame axis" if axis == frame_axis else "the channel axis" if axis == channel_axis else "fixed"
            raise InputError(f"fixed_indices gives axis {axis} an index, but it is already {role}.")
        try:
            position = operator.index(position)
        except TypeError:
            raise InputError(f"fixed_indices[{axis}] must be an integer index, got {position!r}.") from None
        if not -shape[axis] <= position < shape[axis]:
            raise InputError(
                f"fixed_indices[{axis}]={position} is out of range: axis {axis} has {shape[axis]} positions "
                f"(0 to {shape[axis] - 1})."
            )
        fixed[axis] = position % shape[axis]
    return fixed


def _image_axes(shape, frame_axis: int, channel_axis: int | None, fixed: Mapping[int, int]) -> tuple[int, int]:
    """The two axes left for height and width, or an error saying how to get there."""
    ndim = len(shape)
    used = {frame_axis, *fixed} | ({channel_axis} if channel_axis is not None else set())
    spatial_axes = tuple(a for a in range(ndim) if a not in used)
    if len(spatial_axes) < 2:
        if not fixed and ndim == (2 if channel_axis is None else 3):
            raise InputError(
                f"The data has shape {shape}: this is a single 2D image, not a stack of frames; "
                "use segment_image for a single image."
            )
        raise InputError(
            f"The data has shape {shape}: after the frame axis ({frame_axis})"
            + (f", the channel axis ({channel_axis})" if channel_axis is not None else "")
            + (f" and the fixed axes {sorted(fixed)}" if fixed else "")
            + " fewer than 2 axes are left for the image height and width."
        )
    if len(spatial_axes) > 2:
        extra = spatial_axes[0]
        raise InputError(
            f"The data has {ndim} axes (shape {shape}) but a stack of frames uses only the frame axis "
            f"({frame_axis}), the image height and width" + (", and channels" if channel_axis is not None else "")
            + f". Choose one index for axis {extra} with fixed_indices, e.g. fixed_indices={{{extra}: 0}} "
            f"to track along axis {frame_axis} at index 0 of axis {extra}."
        )
    return spatial_axes
