"""Which axis of an image file is what: the frame axis to propagate along, the channel axis, the two image axes,
and any further axes (whose position the prompts give), from the file's axis letters (tifffile's: T, Z, C, Y, X,
S for RGB samples, Q or I for an axis of unknown meaning).

No napari and no torch here: the command line and the file readers share this.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

CHANNEL_LETTERS = "CS"  # channels, and RGB(A) samples
UNNAMED_LETTERS = "QI"  # tifffile's letters for an axis whose meaning the file does not say
ADDED_FRAME_LETTER = "Q"  # the length-1 frame axis added in front of a single plane


@dataclass(frozen=True)
class StackAxes:
    """The roles of the axes of an array whose axes are named by ``letters``."""

    letters: str
    shape: tuple[int, ...]
    frame_axis: int
    channel_axis: int | None
    spatial_axes: tuple[int, int]
    other_axes: tuple[int, ...]  # neither frames, channels nor image axes: prompts pin them (e.g. T when tracking Z)
    # A single plane (a 2D image, with or without channels) is a stack of one frame: ``letters`` and ``shape`` then
    # describe the file's array with a frame axis of length 1 (letter ADDED_FRAME_LETTER) added in front, and the
    # file's own axes are ``letters[1:]`` (see ``file_label_letters``).
    added_frame_axis: bool = False

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
        return StackAxes(letters, shape, frame_axis, channel_axis, spatial, tuple(rest[:-2]))
    spatial = _spatial_axes(letters, channel_axis)
    candidates = [
        index for index in range(len(letters)) if index not in spatial and index != channel_axis
    ]
    if not candidates:
        # A single plane among stacks is segmented as a stack of one frame; ``axis`` (chosen for the stacks) has
        # nothing to choose from here.
        return StackAxes(
            ADDED_FRAME_LETTER + letters, (1, *shape), 0, None if channel_axis is None else channel_axis + 1,
            (spatial[0] + 1, spatial[1] + 1), (), added_frame_axis=True,
        )
    frame_axis = _frame_axis(axis, letters, candidates)
    others = tuple(index for index in candidates if index != frame_axis)
    return StackAxes(letters, shape, frame_axis, channel_axis, spatial, others)


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
    raise InputError(
        f"The stack has no {letter.lower()} axis to propagate along (its axes are {letters}); use "
        f"{_describe(letters, candidates)}."
    )
