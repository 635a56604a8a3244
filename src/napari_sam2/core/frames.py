"""One axis of an array, read lazily, as the sequence of model-ready frames the SAM2 tracker consumes.

``frames[i]`` is a float32 tensor (3, S, S): frame i as RGB in [0, 1], resized to S x S and normalised with the
ImageNet mean and std, exactly as SAM2 was trained. Only frame i is read from the array (plus, once, a few evenly
spaced frames to fix the intensity range), so numpy memmaps, TIFF memmaps and dask arrays larger than memory work.

A single 2D image can go through the same conversion with ``StackFrames(image[None], axis=0, ...)``.
"""

from __future__ import annotations

import operator
import threading
import warnings
from typing import Mapping, Sequence

import numpy as np
import torch

from ..engine.preprocess import Preprocessing, model_input, prepare_input, preprocessing_profile
from ..errors import InputError, SaturationWarning
from ..numbers import whole_number
from .axes import AxisRoles, axis_roles
from .channels import channels_to_rgb, choose_channels
from .intensity import parse_intensity_range, sampled_ranges, saturation_message, to_unit_range
from .prefetch import PrefetchCache

DEFAULT_IMAGE_SIZE = 1024

# Frames read to fix the intensity range: enough to be representative, few enough to be quick on a slow disk.
MAX_PERCENTILE_SAMPLES = 16

_DTYPE_ADVICE = {
    "c": "complex values: convert to magnitude (np.abs) or take the real part first",
    "O": "Python objects: convert to a numeric array first",
}


def model_input_from_rgb(rgb01: np.ndarray, image_size: int = DEFAULT_IMAGE_SIZE) -> torch.Tensor:
    """(H, W, 3) RGB in [0, 1] -> float32 tensor (3, S, S), resized and normalised as SAM2 expects."""
    rgb = np.asarray(rgb01, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"Expected an RGB image shaped (height, width, 3); got shape {rgb.shape}.")
    return model_input(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous(), image_size)


class StackFrames:
    """A lazy, model-ready view of one axis of an array (z slices or time points) for the SAM2 tracker.

    - ``data``: numpy array, numpy/TIFF memmap, dask array, or any array-like with ``shape``, ``dtype`` and
      ``__getitem__``. Only one frame is read per request.
    - ``axis``: the axis that becomes the frame index. ``channel_axis``: the axis holding channels, or None.
      ``fixed_indices``: ``{axis: index}`` for further axes, e.g. ``{1: 12}`` to track a (t, z, y, x) stack along
      t at z = 12. The two remaining axes are the image height and width, in their original order.
    - ``channels``: up to 3 channel indices to show as RGB (needed when there are more than 3 channels). One
      channel is grey, two are red and green, three are RGB.
    - ``intensity_range``: (low, high) mapped to 0 and 1 (e.g. napari's contrast limits), one pair for all
      channels or one pair per channel of the data; by default the preprocessing's percentiles (0.5 and 99.5 for
      SAM2, 2 and 98 for micro-sam's models) of up to 16 evenly spaced frames, per channel, fixed for the whole stack.
    - ``preprocessing``: the model's :class:`napari_sam2.engine.preprocess.Preprocessing` or its name ("sam2",
      the default, or "micro_sam"): the default percentiles, and whether frames are stretched to the model's square
      input or padded to a square first (``model_frame_size``).
    - ``prefetch``: frames prepared ahead on a background thread (0 = none).
    - ``pin_memory``: frames prepared in page-locked memory (for a CUDA model: the upload to the GPU then overlaps
      the GPU's work instead of waiting for it).

    The returned tensors are shared with the prefetch cache: treat them as read-only.
    """

    def __init__(
        self,
        data,
        axis: int = 0,
        channel_axis: int | None = None,
        channels: Sequence[int] | None = None,
        intensity_range=None,
        image_size: int = DEFAULT_IMAGE_SIZE,
        prefetch: int = 2,
        fixed_indices: Mapping[int, int] | None = None,
        preprocessing: Preprocessing | str | None = None,
        pin_memory: bool = False,
    ):
        data = _as_array_like(data)
        _check_dtype(data.dtype)
        self._data = data
        self._dtype = np.dtype(data.dtype)
        self._layout = axis_roles(data.shape, axis, channel_axis, fixed_indices)
        self._channels = _chosen_channels(self._layout, channels)
        self._image_size = whole_number(image_size, "image_size", minimum=1)
        self._pin_memory = bool(pin_memory)
        self._preprocessing = preprocessing_profile(preprocessing)  # an InputError for an unknown profile
        prefetch = whole_number(prefetch, "prefetch", minimum=0)

        self._ranges_lock = threading.Lock()
        self._ranges: np.ndarray | None = None
        self.saturation_message: str | None = None
        if intensity_range is not None:
            n_data_channels = 1 if self._layout.channel_axis is None else self._layout.shape[self._layout.channel_axis]
            per_data_channel = parse_intensity_range(intensity_range, n_data_channels)
            self._ranges = per_data_channel[list(self._channels or [0])]
        elif self._dtype == np.bool_:
            self._ranges = np.tile([0.0, 1.0], (len(self._channels or [0]), 1))

        self._cache = PrefetchCache(self._prepare, len(self), depth=prefetch)

    def __len__(self) -> int:
        return self._layout.n_frames

    @property
    def original_size(self) -> tuple[int, int]:
        """(height, width) of the user's frames, in pixels."""
        return self._layout.frame_size

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def preprocessing(self) -> Preprocessing:
        return self._preprocessing

    @property
    def model_frame_size(self) -> tuple[int, int]:
        """(height, width) of the frame the model is given: ``original_size``, or the (L, L) square holding the frame
        in its top-left corner when the preprocessing pads (L = the longer side). Prompts in (row, col) are the
        same pixels in it; masks come back at this size and are cropped to ``original_size``."""
        return self._preprocessing.model_frame_size(self.original_size)

    @property
    def channels(self) -> tuple[int, ...] | None:
        """Channel indices shown as RGB, or None when the data has no channel axis."""
        return self._channels

    @property
    def intensity_ranges(self) -> np.ndarray:
        """(low, high) per shown channel, shape (n_channels, 2); computed from sample frames on first use.

        When that automatic range is pinned to saturated pixels (more than 0.5 % of a channel's sampled pixels at
        its top), a :class:`napari_sam2.errors.SaturationWarning` says so, once for this view; its text stays in
        ``saturation_message`` (None otherwise) for callers that show it their own way (the widget).
        """
        warning = None
        with self._ranges_lock:
            if self._ranges is None:
                samples = np.unique(np.linspace(0, len(self) - 1, min(len(self), MAX_PERCENTILE_SAMPLES)).round())
                sampled = sampled_ranges(
                    (self._read(int(i)) for i in samples), n_channels=len(self._channels or [0]),
                    percentiles=self._preprocessing.intensity_percentiles,
                )
                self._ranges = sampled.ranges
                # Only the automatic range is checked. A range the user gave (napari's contrast limits,
                # intensity_range=, --intensity-range) is a choice made looking at the data, where clipping the
                # brightest pixels is often the point; and giving a range is what the warning would advise.
                warning = self.saturation_message = saturation_message(sampled, self._channels)
            ranges = self._ranges
        if warning is not None:
            warnings.warn(warning, SaturationWarning, stacklevel=2)
        return ranges

    def __getitem__(self, index: int) -> torch.Tensor:
        index = self._checked_index(index)
        # The range first, here: so that it is computed (and any SaturationWarning raised) on the caller's thread,
        # not on the prefetch thread.
        _ = self.intensity_ranges
        return self._cache.get(index)

    def frame_rgb(self, index: int) -> np.ndarray:
        """Frame ``index`` as (H, W, 3) float32 RGB in [0, 1], before resizing: what the model is shown."""
        index = self._checked_index(index)
        ranges = self.intensity_ranges  # first, so the stack's samples are read before this frame is held
        return channels_to_rgb(to_unit_range(self._read(index), ranges))

    def close(self) -> None:
        """Stop the prefetch thread and release prepared frames; the view still works, without prefetch."""
        self._cache.close()

    def __enter__(self) -> "StackFrames":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"StackFrames({len(self)} frames of {self.original_size[0]} x {self.original_size[1]}, "
            f"axis={self._layout.frame_axis}, channels={self._channels}, image_size={self._image_size})"
        )

    def _prepare(self, index: int) -> torch.Tensor:
        if not self._preprocessing.pads:
            prepared = model_input_from_rgb(self.frame_rgb(index), self._image_size)
        else:
            rgb = torch.from_numpy(np.ascontiguousarray(self.frame_rgb(index))).permute(2, 0, 1)
            prepared = prepare_input(rgb, self._image_size, self._preprocessing)
        return prepared.pin_memory() if self._pin_memory else prepared

    def _read(self, index: int) -> np.ndarray:
        """Frame ``index`` as (H, W, C) raw values, C being the shown channels (1 without a channel axis)."""
        channel_slice = slice(None)
        if self._channels is not None:
            # Read the smallest contiguous block holding the chosen channels, with basic indexing only.
            channel_slice = slice(min(self._channels), max(self._channels) + 1)
        raw = np.asarray(self._data[self._layout.frame_index(index, channel_slice)])
        position = self._layout.channel_position_in_frame()
        if position is None:
            return raw[..., None]
        raw = np.moveaxis(raw, position, -1)
        return raw[..., [c - channel_slice.start for c in self._channels]]

    def _checked_index(self, index) -> int:
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"frame index must be an integer, got {type(index).__name__}") from None
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"frame index {index} is out of range for {len(self)} frames")
        return index


def _as_array_like(data):
    if isinstance(data, torch.Tensor):
        return data.numpy(force=True)  # no copy for a CPU tensor
    if all(hasattr(data, attribute) for attribute in ("shape", "dtype", "__getitem__")):
        return data
    if isinstance(data, (list, tuple)):
        return np.asarray(data)
    raise InputError(f"Expected an array (numpy, memmap, dask, ...), got {type(data).__name__}.")


def _check_dtype(dtype) -> None:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise InputError(f"Unsupported pixel type {dtype!r}: convert the data to a numpy numeric array.") from None
    if dtype.kind in "biuf":
        return
    advice = _DTYPE_ADVICE.get(dtype.kind, "convert to integers or floating point numbers first")
    raise InputError(f"Pixels of type {dtype} cannot be segmented: {advice}.")


def _chosen_channels(roles: AxisRoles, channels) -> tuple[int, ...] | None:
    if roles.channel_axis is None:
        if channels is not None:
            raise InputError("channels= chooses channels along channel_axis; give channel_axis too.")
        return None
    return choose_channels(roles.shape[roles.channel_axis], channels)
