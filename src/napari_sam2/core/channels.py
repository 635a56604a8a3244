"""The one rule for channels: SAM2 sees an RGB picture, so it is shown at most 3 channels of an image.

One channel is shown as grey, two as red and green (blue dark, like a two-colour overlay), three as RGB. Four
RGB(A) samples (an RGBA picture, napari's RGB layers, a TIFF's "S" axis of 4, a trailing axis of 4 in
``segment_image``) show R, G and B: alpha is not part of the picture. Any other choice is the user's: up to 3
channels, by index.
"""

from __future__ import annotations

import operator
from typing import Sequence

import numpy as np

from ..errors import InputError

MAX_SHOWN_CHANNELS = 3
RGBA_SAMPLES = 4


def default_channels(n_channels: int, samples: bool) -> tuple[int, ...] | None:
    """The channels shown when the user chose none: all of up to 3 (None), R, G, B of 4 RGBA ``samples``.

    Raises InputError for more channels (the caller's message says how to choose): see :func:`choose_channels`.
    """
    if n_channels <= MAX_SHOWN_CHANNELS:
        return None
    if samples and n_channels == RGBA_SAMPLES:
        return (0, 1, 2)
    return ()  # the user must choose


def choose_channels(
    n_channels: int, channels: Sequence[int] | None, samples: bool = False, option: str = "channels=",
    example: str = "[0]",
) -> tuple[int, ...]:
    """The channel indices (0 to ``n_channels`` - 1) shown to SAM2, in the order given (red, green, blue).

    ``channels`` None takes :func:`default_channels`; negative indices count from the end. ``option`` and
    ``example`` spell how the user chooses in the interface at hand ("channels=" and "[0]" in Python, "--channels "
    and "0" on the command line). Raises InputError saying what to give.
    """
    if channels is None:
        default = default_channels(n_channels, samples)
        if default is None:
            return tuple(range(n_channels))
        if default:
            return default
        raise InputError(
            f"The data has {n_channels} channels; SAM2 sees at most {MAX_SHOWN_CHANNELS}, as RGB. Choose up to "
            f"{MAX_SHOWN_CHANNELS} with {option.strip(' =')}, e.g. {option}{example} for the first channel alone."
        )
    chosen = []
    for channel in channels:
        try:
            channel = operator.index(channel)
        except TypeError:
            raise InputError(f"{option.strip(' =')} takes integer channel indices, got {channels!r}.") from None
        if not -n_channels <= channel < n_channels:
            raise InputError(f"Channel {channel} does not exist: the data has channels 0 to {n_channels - 1}.")
        chosen.append(channel % n_channels)
    if not 1 <= len(chosen) <= MAX_SHOWN_CHANNELS:
        raise InputError(
            f"Choose 1 to {MAX_SHOWN_CHANNELS} channels to show as RGB with {option.strip(' =')}; got {len(chosen)}: "
            f"{list(channels)!r}."
        )
    return tuple(chosen)


def channels_to_rgb(unit: np.ndarray) -> np.ndarray:
    """(H, W, C) in [0, 1] with C <= 3 -> (H, W, 3): grey, red and green, or RGB."""
    n_channels = unit.shape[-1]
    if n_channels == 1:
        return np.repeat(unit, 3, axis=-1)
    if n_channels == 2:
        return np.concatenate([unit, np.zeros_like(unit[..., :1])], axis=-1)
    if n_channels == 3:
        return unit
    raise InputError(f"At most {MAX_SHOWN_CHANNELS} channels can be shown to SAM2 as RGB; got {n_channels}.")
