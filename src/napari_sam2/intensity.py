"""Map raw pixel values of any numeric dtype to [0, 1], with one (low, high) range per channel.

The range is fixed for a whole stack (not recomputed per slice) so that an object keeps the same brightness from
frame to frame, which is what SAM2's memory expects.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .errors import InputError

DEFAULT_PERCENTILES = (0.5, 99.5)

# Enough values for stable percentiles; a strided subsample keeps memory small on very large frames.
MAX_VALUES_PER_SAMPLE = 1 << 18

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
    values_per_channel: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    for frame in frames:
        for channel in range(n_channels):
            values = frame[..., channel].ravel()
            step = max(1, values.size // MAX_VALUES_PER_SAMPLE)
            values = values[::step]
            if values.dtype.kind == "f":
                values = values[np.isfinite(values)]
            values_per_channel[channel].append(values)

    ranges = np.empty((n_channels, 2), dtype=np.float64)
    for channel, chunks in enumerate(values_per_channel):
        values = np.concatenate(chunks) if chunks else np.empty(0)
        ranges[channel] = np.percentile(values, percentiles) if values.size else FALLBACK_RANGE
    return ranges


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
