"""A synthetic time-lapse with tracking ground truth: divisions with new daughter ids, a cell that leaves the field of
view and comes back, and two cells that touch for a few frames. Made in code, deterministic for a given seed.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.filters import gaussian

from ..errors import InputError
from .sample_data import BACKGROUND_LEVEL, CELL_LEVEL, _checked_shape, _ellipsoid_mask, _photon_counts

# Label ids: 1, 2 divide; 3 leaves and re-enters; 4, 5 touch; 6 wanders. Daughters: 7, 8 of 1 and 9, 10 of 2.
DIVIDING = {1: (7, 8), 2: (9, 10)}
LEAVING = 3
TOUCHING = (4, 5)


def make_tracking_timelapse(shape=(30, 128, 160), seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """Moving cells with tracking ground truth: (image uint16 (T, Y, X), labels int32 (T, Y, X), parents).

    - cells 1 and 2 elongate and divide at frames ``round(0.3 (T-1))`` and ``round(0.6 (T-1))``: the mother's last
      frame is the one before, and two daughters with new ids (7, 8 and 9, 10) start there touching each other,
      inside the mother's footprint, then move apart;
    - cell 3 moves out through the right edge, is absent on frames ``round(0.42 (T-1))``..``round(0.58 (T-1))``,
      then comes back with the same label;
    - cells 4 and 5 approach each other, touch on the 5 or so frames around the middle, and move apart;
    - cell 6 wanders.

    ``parents`` maps each daughter label to its mother's label ({7: 1, 8: 1, 9: 2, 10: 2}). Sizes and positions
    scale with the frame; brightness, sizes and wandering vary with ``seed``.

    Raises:
        InputError: a shape with fewer than 15 frames or frames smaller than 64 x 64 pixels.
    """
    n_frames, height, width = _checked_shape(shape)
    if n_frames < 15 or min(height, width) < 64:
        raise InputError(f"The tracking sample needs at least 15 frames of 64 x 64 pixels; got shape {tuple(shape)}.")
    rng = np.random.default_rng(seed)
    last = n_frames - 1
    radius = 0.075 * min(height, width)
    step = min(height, width) / 128  # pixels per frame of the slowest motions, scaled with the frame

    cells: list[list[tuple]] = [[] for _ in range(n_frames)]  # per frame: (label, cy, cx, ry, rx, angle, brightness)
    parents: dict[int, int] = {}
    for mother, center, angle, division in (
        (1, (0.3 * height, 0.2 * width), 0.0, round(0.3 * last)),
        (2, (0.8 * height, 0.2 * width), -math.pi / 4, round(0.6 * last)),
    ):
        for t, ellipses in enumerate(_dividing(mother, center, angle, division, radius, step, n_frames, rng)):
            cells[t].extend(ellipses)
        parents.update({daughter: mother for daughter in DIVIDING[mother]})

    # Cell 3 leaves through the right edge at constant speed, stays out, and comes back the same way.
    size = radius * rng.uniform(0.9, 1.0)
    gone, back = round(0.42 * last), round(0.58 * last)
    outside = width + size + 2  # the centre from which no pixel is in the frame
    speed = (outside - 0.62 * width) / gone
    brightness = rng.uniform(0.6, 1.0)
    for t in range(n_frames):
        if t < gone or t > back:
            center_x = outside - speed * (gone - t if t < gone else t - back)
            cells[t].append(
                (LEAVING, 0.2 * height + 2 * step * math.sin(0.3 * t), center_x, size, size, 0.0, brightness)
            )

    # Cells 4 and 5 share a row: centre distance = sum of radii - 1 (touching) on the middle frames, more elsewhere.
    middle, touching_half = round(0.5 * last), 2
    sizes = radius * rng.uniform(0.85, 1.0, size=2)
    brightness_pair = rng.uniform(0.6, 1.0, size=2)
    for t in range(n_frames):
        distance = sizes.sum() - 1 + 2.5 * step * max(0, abs(t - middle) - touching_half)
        center_y = 0.6 * height + step * math.sin(0.2 * t)
        for side, label, cell_size, cell_brightness in zip((-1, 1), TOUCHING, sizes, brightness_pair):
            center_x = 0.68 * width + side * distance / 2
            cells[t].append((label, center_y, center_x, cell_size, cell_size, 0.0, cell_brightness))

    # Cell 6 wanders in the bottom right corner.
    size, phase = radius * rng.uniform(0.85, 1.0), rng.uniform(0, 2 * math.pi)
    brightness = rng.uniform(0.6, 1.0)
    for t in range(n_frames):
        center = (0.85 * height + 4 * step * math.sin(0.3 * t + phase), 0.82 * width + 4 * step * math.cos(0.2 * t))
        cells[t].append((6, *center, size * 1.1, size * 0.9, 0.2 * t, brightness))

    labels = np.zeros((n_frames, height, width), np.int32)
    signal = np.zeros((n_frames, height, width), np.float64)
    for t, ellipses in enumerate(cells):
        for label, center_y, center_x, radius_y, radius_x, angle, level in ellipses:
            inside, box = _ellipsoid_mask((center_y, center_x), (radius_y, radius_x), angle, (height, width))
            # Drawn on the background only: a cell never cuts into one drawn before (touching cells share no pixel).
            inside &= labels[t][box] == 0
            labels[t][box][inside] = label
            signal[t][box][inside] = CELL_LEVEL * level
    texture = gaussian(rng.standard_normal(signal.shape), sigma=(0, 2, 2))
    signal *= np.clip(1 + 0.5 * texture / (texture.std() or 1.0), 0, None)
    blurred = gaussian(signal, sigma=(0.0, 1.5, 1.5), preserve_range=True)
    return _photon_counts(blurred + BACKGROUND_LEVEL, rng), labels, parents


def _dividing(mother, center, angle, division, radius, step, n_frames, rng):
    """Per frame, the ellipses of a dividing cell: the mother before ``division``, then its two daughters.

    The mother stretches along the axis given by ``angle`` (its x axis before rotation); the daughters start
    touching on that axis inside the mother's last footprint and move apart along it.
    """
    size = radius * rng.uniform(0.9, 1.05)
    brightness = rng.uniform(0.6, 1.0)
    phase = rng.uniform(0, 2 * math.pi)
    axis = (-math.sin(angle), math.cos(angle))  # (dy, dx) of the ellipse's x axis after rotation
    daughter = 0.72 * size
    for t in range(n_frames):
        wobble_y, wobble_x = 1.5 * step * math.sin(0.3 * t + phase), 1.5 * step * math.cos(0.25 * t + phase)
        center_y, center_x = center[0] + wobble_y, center[1] + wobble_x
        if t < division:
            stretch = t / max(1, division - 1)
            yield [
                (mother, center_y, center_x, size * (1 - 0.1 * stretch), size * (1 + 0.5 * stretch), angle, brightness)
            ]
            continue
        # Centre distance 2 * daughter - 1 on the first frame: they touch; then they glide apart.
        offset = min(daughter - 0.5 + 1.5 * step * (t - division), 1.7 * size)
        yield [
            (
                label,
                center_y + side * offset * axis[0],
                center_x + side * offset * axis[1],
                daughter,
                daughter,
                0.0,
                brightness,
            )
            for side, label in zip((-1, 1), DIVIDING[mother])
        ]
