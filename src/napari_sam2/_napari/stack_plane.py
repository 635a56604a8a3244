"""Which axis of an image layer is what: the image plane (the last two dims), a channel axis, the axis to propagate
along (z or t), and the other axes, which stay at the viewer's current position (e.g. z of a (t, z, y, x) stack
tracked along t). Also the index of one frame of that plane in a layer of the same dims.

Free of Qt; it reads only the layer's shape, rgb flag, axis labels and metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.axes import CHANNEL_LETTERS, FRAME_LETTER_PREFERENCE, AxisRoles, axis_letter
from ..core.channels import MAX_SHOWN_CHANNELS, default_channels
from ..errors import InputError


def layer_array(layer):
    """The full-resolution data of an image layer (the first level of a multiscale one)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def axis_letters(layer) -> tuple[str, ...]:
    """Lower-case letter per layer dim (e.g. ("t", "z", "y", "x")), "" where unknown.

    From the layer's axis labels when they were set (napari's defaults are "-3", "-2", ...), else from metadata
    "layer_axes" (the project's reader) or "axes" when it has one letter per dim.
    """
    ndim = layer.ndim
    labels = tuple(str(label) for label in getattr(layer, "axis_labels", ()) or ())
    if len(labels) == ndim and not all(_is_default_label(label) for label in labels):
        return tuple(axis_letter(label).lower() for label in labels)
    metadata = getattr(layer, "metadata", {}) or {}
    for key in ("layer_axes", "axes"):
        letters = metadata.get(key)
        if isinstance(letters, str) and len(letters) == ndim:
            return tuple(letters.lower())
    return ("",) * ndim


def channel_axis_of(layer) -> int | None:
    """The layer dim holding channels (a "c" axis among the non-image dims), or None."""
    letters = axis_letters(layer)
    for axis in range(layer.ndim - 2):
        if letters[axis] and letters[axis].upper() in CHANNEL_LETTERS:
            return axis
    return None


def frame_axis_choices(layer) -> list[int]:
    """Layer dims one can propagate along: every dim but the image plane and a channel axis."""
    channel_axis = channel_axis_of(layer)
    return [axis for axis in range(layer.ndim - 2) if axis != channel_axis]


def default_frame_axis(layer) -> int | None:
    """z, else t, else the first dim that can be propagated along; None for a 2D image."""
    choices = frame_axis_choices(layer)
    letters = axis_letters(layer)
    for letter in FRAME_LETTER_PREFERENCE:
        for axis in choices:
            if letters[axis].upper() == letter:
                return axis
    return choices[0] if choices else None


def axis_name(layer, axis: int) -> str:
    letter = axis_letters(layer)[axis]
    return f"{letter} (axis {axis})" if letter else f"axis {axis}"


def channel_options(layer) -> list[tuple[str, tuple[int, ...] | None]]:
    """(text, channels) choices for the channels SAM2 sees; empty for single-channel data."""
    data = layer_array(layer)
    if getattr(layer, "rgb", False):
        n = data.shape[-1]
        options = [("RGB", default_channels(n, samples=True))]
        return options + [(name, (i,)) for i, name in enumerate(("red", "green", "blue")[:n])]
    channel_axis = channel_axis_of(layer)
    if channel_axis is None:
        return []
    n = data.shape[channel_axis]
    options = [(f"channels 0-{n - 1} as RGB", None)] if n <= MAX_SHOWN_CHANNELS else []
    return options + [(f"channel {i}", (i,)) for i in range(n)]


@dataclass(frozen=True)
class StackPlane(AxisRoles):
    """How one image layer becomes a stack of frames (its :class:`AxisRoles`), and where a frame of it sits in
    layers of the same dims.

    ``shape`` is the layer's dims (without RGB samples); ``frame_axis`` None means a 2D image (one frame);
    ``fixed`` holds the other non-image dims at the viewer's position. ``channel_axis`` is the axis of the layer's
    *data* holding channels: a layer dim, or for an RGB layer its samples axis (one past the dims). A label result
    is written across a channel dim (``broadcast_axes``). ``channels``: the channels SAM2 is shown.
    """

    channels: tuple[int, ...] | None = field(default=None, kw_only=True)

    @property
    def broadcast_axes(self) -> tuple[int, ...]:
        """The layer dims a label result is written across: a channel dim (not an RGB layer's samples)."""
        return (self.channel_axis,) if self.channel_axis is not None and self.channel_axis < len(self.shape) else ()

    def stack_arguments(self, data) -> dict:
        """Keyword arguments of TrackingSession / StackFrames for the layer's data."""
        if self.frame_axis is None:
            channel_axis = None if self.channel_axis is None else self.channel_axis + 1
            return dict(stack=data[None], axis=0, channel_axis=channel_axis, channels=self.channels)
        return dict(
            stack=data, axis=self.frame_axis, channel_axis=self.channel_axis, channels=self.channels,
            fixed_indices=dict(self.fixed) or None,
        )

    def frame_of(self, position) -> int | None:
        """The frame of a position (layer data coordinates) on this plane, or None if it lies on another plane."""
        for axis, index in self.fixed:
            if round(float(position[axis])) != index:
                return None
        if self.frame_axis is None:
            return 0
        return int(round(float(position[self.frame_axis])))

    def row_col(self, position) -> tuple[float, float]:
        return float(position[self.spatial_axes[0]]), float(position[self.spatial_axes[1]])

    def frame_index(self, frame: int, channel=0) -> tuple:
        """Basic index of one frame's (H, W) plane in an array of the layer's dims (a channel dim at ``channel``)."""
        return super().frame_index(frame, channel)

    def pixel_indices(self, frame: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        """Fancy index (one array per dim) of pixels of one frame, repeated along every broadcast dim."""
        copies = int(np.prod([self.shape[axis] for axis in self.broadcast_axes], dtype=np.int64))
        count = len(rows) * copies
        index = [np.empty(count, np.intp) for _ in self.shape]
        index[self.spatial_axes[0]] = np.tile(rows, copies)
        index[self.spatial_axes[1]] = np.tile(cols, copies)
        if self.frame_axis is not None:
            index[self.frame_axis] = np.full(count, frame, np.intp)
        for axis, position in self.fixed:
            index[axis] = np.full(count, position, np.intp)
        if self.broadcast_axes:
            grids = np.meshgrid(*[np.arange(self.shape[a]) for a in self.broadcast_axes], indexing="ij")
            for axis, grid in zip(self.broadcast_axes, grids):
                index[axis] = np.repeat(grid.ravel(), len(rows))
        return tuple(index)


def stack_plane(layer, frame_axis: int | None, current_position, channels: tuple[int, ...] | None = None) -> StackPlane:
    """The plane of ``layer`` to propagate along ``frame_axis`` (None: the image is 2D), with every other non-image
    dim at ``current_position`` (the layer's data coordinates of the viewer's current point)."""
    ndim = layer.ndim
    if ndim < 2:
        raise InputError(f"The layer {layer.name!r} has {ndim} dimension(s); SAM2 needs images of at least 2D.")
    data = layer_array(layer)
    shape = tuple(int(s) for s in data.shape[:ndim])
    spatial_axes = (ndim - 2, ndim - 1)
    channel_dim = channel_axis_of(layer)
    if frame_axis is None and frame_axis_choices(layer):
        raise InputError(f"Choose the axis of layer {layer.name!r} to propagate along.")
    if frame_axis is not None and frame_axis not in frame_axis_choices(layer):
        raise InputError(f"Axis {frame_axis} of layer {layer.name!r} cannot be propagated along.")
    fixed = []
    for axis in range(ndim - 2):
        if axis in (frame_axis, channel_dim):
            continue
        index = int(np.clip(round(float(current_position[axis])), 0, shape[axis] - 1))
        fixed.append((axis, index))
    if getattr(layer, "rgb", False):
        channel_axis = data.ndim - 1
        if channels is None:
            channels = default_channels(data.shape[-1], samples=True)
    elif channel_dim is not None:
        channel_axis = channel_dim
    else:
        channel_axis, channels = None, None
    return StackPlane(shape, frame_axis, channel_axis, spatial_axes, tuple(fixed), channels=channels)


def _is_default_label(label: str) -> bool:
    return label.lstrip("-").isdigit()
