"""Map raw pixel values of any numeric dtype to [0, 1], with one (low, high) range per channel.

The range is fixed for a whole stack (not recomputed per slice) so that an object keeps the same brightness from
frame to frame, which is what SAM2's memory expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError

DEFAULT_PERCENTILES = (0.5, 99.5)

# Enough values for stable percentiles; a strided subsample keeps memory small on very large frames.
MAX_VALUES_PER_SAMPLE = 1 << 18

# More than this fraction of a channel's sampled values at the top of its range, while the other values reach
# less than DIM_REACH of the range: SAM2 may be shown nothing, and a warning says so (see saturation_message).
SATURATED_FRACTION = 0.005
DIM_REACH = 0.5

# Used when a channel has no finite value at all in the sampled frames.
FALLBACK_RANGE = (0.0, 1.0)


def parse_intensity_range(intensity_range, n_channels: int) -> np.ndarray:
    """Check a user's range, one (low, high) pair for all channels or one pair per channel; return (n_channels, 2)."""
    try:
        pairs = np.asarray(intensity_range, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(
            f"intensity_range must be numbers (low, high), or one (low, high) per channel; got {intensity_range!r}."
        ) from error
    if pairs.shape == (2,):
        pairs = np.tile(pairs, (n_channels, 1))
    if pairs.shape != (n_channels, 2):
        raise InputError(
            f"intensity_range must be one (low, high) pair, or one pair for each of the {n_channels} channel(s); "
            f"got {intensity_range!r}."
        )
    if not np.isfinite(pairs).all():
        raise InputError(f"intensity_range must be finite numbers; got {intensity_range!r}.")
    if (pairs[:, 0] > pairs[:, 1]).any():
        raise InputError(f"intensity_range: each low value must not be above its high value; got {intensity_range!r}.")
    return pairs


def percentile_ranges(
    frames: Iterable[np.ndarray], n_channels: int, percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> np.ndarray:
    """Robust (low, high) per channel over sample frames shaped (H, W, C), ignoring NaN and infinities."""
    return sampled_ranges(frames, n_channels, percentiles).ranges


@dataclass(frozen=True)
class SampledRanges:
    """What the sample frames of a stack say about its intensities, per channel (see ``saturation_message``)."""

    ranges: np.ndarray  # (C, 2) float64: (low, high) percentiles
    at_top: np.ndarray  # (C,) fraction of the sampled values at the top: equal to high, or to the dtype's maximum
    others_reach: np.ndarray  # (C,) where the 99.5th percentile of the other values falls in the range, 0 to 1
    dtype: np.dtype  # of the sampled values


def sampled_ranges(
    frames: Iterable[np.ndarray], n_channels: int, percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> SampledRanges:
    """(low, high) per channel over sample frames shaped (H, W, C), ignoring NaN and infinities, and how much of
    each channel sits at the top of that range."""
    values_per_channel: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    dtype = np.dtype(np.float64)
    for frame in frames:
        dtype = frame.dtype
        for channel in range(n_channels):
            values = frame[..., channel].ravel()
            step = max(1, values.size // MAX_VALUES_PER_SAMPLE)
            values = values[::step]
            if values.dtype.kind == "f":
                values = values[np.isfinite(values)]
            values_per_channel[channel].append(values)

    ranges = np.empty((n_channels, 2), dtype=np.float64)
    at_top = np.zeros(n_channels, dtype=np.float64)
    others_reach = np.ones(n_channels, dtype=np.float64)
    for channel, chunks in enumerate(values_per_channel):
        values = np.concatenate(chunks) if chunks else np.empty(0)
        ranges[channel] = np.percentile(values, percentiles) if values.size else FALLBACK_RANGE
        at_top[channel], others_reach[channel] = _top_of_range(values, *ranges[channel], percentiles[1])
    return SampledRanges(ranges, at_top, others_reach, np.dtype(dtype))


def _top_of_range(values: np.ndarray, low: float, high: float, percentile: float) -> tuple[float, float]:
    """The fraction of ``values`` at the top of (low, high) (equal to high, or to the largest value of their integer
    type), and where the given percentile of the other values falls in the range (0 = low, 1 = high).

    A constant channel gives (0, 1): no range shows anything there, so there is nothing to say.
    """
    if values.size == 0 or values.min() == values.max():
        return 0.0, 1.0
    top = values == high
    if values.dtype.kind in "iu":
        top |= values == np.iinfo(values.dtype).max
    fraction = float(np.count_nonzero(top)) / values.size
    if fraction <= SATURATED_FRACTION:
        return fraction, 1.0
    others = values[~top]
    if others.size == 0 or high <= low:
        return fraction, 0.0
    reach = (float(np.percentile(others, percentile)) - low) / (high - low)
    return fraction, float(np.clip(reach, 0.0, 1.0))


def saturation_message(sampled: SampledRanges, channel_names: Sequence | None = None) -> str | None:
    """A warning text when SAM2 may be shown (almost) nothing, else None.

    That is when, in a channel, more than SATURATED_FRACTION (0.5 %) of the sampled values sit at the top of the
    range (equal to its high value, or to the dtype's maximum: saturated pixels, hot pixels, a bright border or
    bead) and the other values reach less than DIM_REACH (half) of the range: the high end of the range is pinned to
    the saturated pixels and the cells, dimmer, come out nearly black. (Without the second condition the warning
    would also fire on ordinary images with few grey levels, e.g. 8-bit data whose brightest level holds more than
    0.5 % of the pixels, where the cells use the whole range.) ``channel_names``: how to name each channel (by
    default 0, 1, ...).
    """
    names = list(channel_names) if channel_names is not None else list(range(len(sampled.at_top)))
    parts = []
    for name, fraction, reach, (low, high) in zip(names, sampled.at_top, sampled.others_reach, sampled.ranges):
        if not (fraction > SATURATED_FRACTION and reach < DIM_REACH):
            continue
        which = "" if len(names) == 1 else f" of channel {name}"
        if high <= low:
            parts.append(
                f"{fraction:.1%} of the sampled pixels{which} have the same value ({high:g}), so the automatic "
                "intensity range is empty and that channel comes out black"
            )
        else:
            top = f"{high:g}"
            if sampled.dtype.kind in "iu" and high == np.iinfo(sampled.dtype).max:
                top += f", the largest value a {sampled.dtype} pixel holds"
            parts.append(
                f"{fraction:.1%} of the sampled pixels{which} sit at the top of the intensity range ({top}) and the "
                f"others reach only {reach:.0%} of it"
            )
    if not parts:
        return None
    return (
        "; ".join(parts) + ". The cells may then come out nearly black: SAM2 is shown (almost) nothing. Give the "
        "intensity range yourself: in napari set the contrast so that the cells show and tick \"Use the layer's "
        "contrast limits\"; in Python pass intensity_range=(low, high); on the command line --intensity-range "
        "LOW,HIGH."
    )


def to_unit_range(values: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Scale (H, W, C) values to [0, 1] float32 with ranges (C, 2).

    NaN becomes 0 (the low value), +Inf 1 and -Inf 0, so a few bad pixels cannot poison the frame; a channel whose
    range is empty (a constant image) becomes all zeros rather than NaN.
    """
    low, high = ranges[:, 0], ranges[:, 1]
    span = high - low
    usable = span > 0
    scaled = (values.astype(np.float64) - low) / np.where(usable, span, 1.0)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    scaled[np.isnan(scaled)] = 0.0
    scaled[..., ~usable] = 0.0
    return scaled.astype(np.float32)
