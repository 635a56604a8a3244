"""Synthetic sample data made in code (no download), with ground-truth labels, deterministic for a given seed.

- a 3D stack of fluorescent nuclei (z, y, x), anisotropic like a confocal stack;
- a time-lapse of moving cells (t, y, x) in which one cell divides halfway through.

napari's *Open Sample* menu (``_napari/samples.py``), the tests and ``napari-sam2 sample`` share these.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.filters import gaussian

from ..errors import InputError

# z step relative to the xy pixel size: nuclei are drawn squashed in z by this factor, and the layer scale undoes it.
NUCLEI_Z_STEP = 2.0
BACKGROUND_LEVEL = 100.0
NUCLEUS_LEVEL = 1400.0
CELL_LEVEL = 900.0


def make_nuclei_stack(shape=(24, 192, 256), n_nuclei: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fluorescent nuclei: (image uint16 (z, y, x), labels int32 (z, y, x)) with labels 1..n_nuclei, no overlaps.

    Nuclei are ellipsoids of varied size, orientation and brightness, with some texture, blurred by the optics,
    on a background, with Poisson (photon) noise.
    """
    depth, height, width = _checked_shape(shape)
    n_nuclei = _checked_count(n_nuclei, "n_nuclei")
    rng = np.random.default_rng(seed)
    labels = np.zeros((depth, height, width), np.int32)
    brightness = np.zeros((depth, height, width), np.float64)

    typical_radius = 0.09 * min(height, width)
    max_radius_z = (depth - 3) / 2
    placed, attempts = 0, 0
    while placed < n_nuclei and attempts < 300 * n_nuclei:
        attempts += 1
        radius_y, radius_x = typical_radius * rng.uniform(0.6, 1.1, size=2)
        radius_z = min(max_radius_z, (radius_y + radius_x) / 2 * rng.uniform(0.7, 1.0) / NUCLEI_Z_STEP)
        if radius_z < 1 or 2 * max(radius_y, radius_x) + 3 > min(height, width):
            continue
        reach = (radius_z, max(radius_y, radius_x), max(radius_y, radius_x))
        center = [rng.uniform(r + 1, size - 2 - r) for r, size in zip(reach, labels.shape)]
        angle = rng.uniform(0, np.pi)
        # A 2-pixel halo keeps neighbours apart, as real nuclei are rarely touching at this density.
        halo, halo_box = _ellipsoid_mask(center, (radius_z + 1, radius_y + 2, radius_x + 2), angle, labels.shape)
        if labels[halo_box][halo].any():
            continue
        mask, box = _ellipsoid_mask(center, (radius_z, radius_y, radius_x), angle, labels.shape)
        placed += 1
        labels[box][mask] = placed
        brightness[box][mask] = rng.uniform(0.5, 1.0)
    if placed < n_nuclei:
        raise InputError(
            f"Could not fit {n_nuclei} separate nuclei in a stack of shape {tuple(shape)}; "
            "use a larger shape or fewer nuclei."
        )

    texture = gaussian(rng.standard_normal(labels.shape), sigma=2.0)
    texture /= texture.std() or 1.0
    signal = NUCLEUS_LEVEL * brightness * np.clip(1.0 + 0.15 * texture, 0.0, None)
    blurred = gaussian(signal, sigma=(0.7, 1.5, 1.5), preserve_range=True)
    return _photon_counts(blurred + BACKGROUND_LEVEL, rng), labels


def make_cell_timelapse(shape=(20, 192, 256), n_cells: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Moving cells: (image uint16 (t, y, x), labels int32 (t, y, x)), labels 1..n_cells from the first frame.

    Cells wander smoothly and turn slowly. Cell 1 elongates and divides at frame ``t // 2``: from that frame on,
    one daughter keeps label 1 and the other gets the new label ``n_cells + 1``. Each cell wanders within its own
    part of the field, so cells never overlap.
    """
    n_frames, height, width = _checked_shape(shape)
    n_cells = _checked_count(n_cells, "n_cells")
    if n_frames < 3:
        raise InputError(f"A time-lapse with a division needs at least 3 frames; got shape {tuple(shape)}.")
    rng = np.random.default_rng(seed)

    # The dividing cell gets two neighbouring tiles, one per daughter.
    rows, cols = _grid(n_cells + 1, height, width)
    tile_h, tile_w = height // rows, width // cols
    radius = 0.3 * min(tile_h, tile_w)
    if radius < 4:
        raise InputError(
            f"{n_cells} cells do not fit in frames of {height} x {width}; use fewer cells or larger frames."
        )
    split_along_x = cols >= 2
    tiles = [(r, c) for r in range(rows) for c in range(cols)]
    second_tile = (0, 1) if split_along_x else (1, 0)
    tiles.remove((0, 0))
    tiles.remove(second_tile)

    ellipses: list[list[tuple]] = [[] for _ in range(n_frames)]
    division_frame = n_frames // 2
    for label, (row, col) in enumerate(tiles[: n_cells - 1], start=2):
        box = (row * tile_h, col * tile_w, tile_h, tile_w)
        for t, ellipse in enumerate(_wandering_cell(box, radius, n_frames, rng)):
            ellipses[t].append((label, *ellipse))
    region = (0, 0, tile_h * (1 if split_along_x else 2), tile_w * (2 if split_along_x else 1))
    for t, cells in enumerate(_dividing_cell(region, radius, n_frames, division_frame, split_along_x, rng)):
        for label, ellipse in zip((1, n_cells + 1), cells):
            ellipses[t].append((label, *ellipse))

    labels = np.zeros((n_frames, height, width), np.int32)
    signal = np.zeros((n_frames, height, width), np.float64)
    for t, frame_ellipses in enumerate(ellipses):
        for label, center_y, center_x, radius_y, radius_x, angle, brightness in frame_ellipses:
            inside, box = _ellipsoid_mask((center_y, center_x), (radius_y, radius_x), angle, (height, width))
            labels[t][box][inside] = label
            signal[t][box][inside] = CELL_LEVEL * brightness
    blurred = gaussian(signal, sigma=(0.0, 1.5, 1.5), preserve_range=True)
    return _photon_counts(blurred + BACKGROUND_LEVEL, rng), labels


def _wandering_cell(box, radius, n_frames, rng):
    """(center_y, center_x, radius_y, radius_x, angle, brightness) per frame for a cell kept inside ``box``."""
    top, left, box_h, box_w = box
    size = radius * rng.uniform(0.8, 1.0)
    elongation = rng.uniform(0.05, 0.2)
    radius_y, radius_x = size * (1 + elongation), size * (1 - elongation)
    reach = size * (1 + elongation) + 2
    amplitude_y, amplitude_x = max(0.0, box_h / 2 - reach), max(0.0, box_w / 2 - reach)
    frequency_y, frequency_x = rng.uniform(0.3, 0.8, size=2)
    phase_y, phase_x = rng.uniform(0, 2 * np.pi, size=2)
    angle0, turn = rng.uniform(0, np.pi), rng.uniform(-0.08, 0.08)
    brightness = rng.uniform(0.6, 1.0)
    for t in range(n_frames):
        progress = 2 * np.pi * t / n_frames
        center_y = top + box_h / 2 + amplitude_y * math.sin(frequency_y * progress + phase_y)
        center_x = left + box_w / 2 + amplitude_x * math.sin(frequency_x * progress + phase_x)
        yield center_y, center_x, radius_y, radius_x, angle0 + turn * t, brightness


def _dividing_cell(region, radius, n_frames, division_frame, split_along_x, rng):
    """Per frame, the ellipses of cell 1: the mother before ``division_frame``, then the two daughters."""
    top, left, region_h, region_w = region
    center_y, center_x = top + region_h / 2, left + region_w / 2
    half_extent = region_w / 2 if split_along_x else region_h / 2
    other_extent = region_h / 2 if split_along_x else region_w / 2
    # Rotating by 90 degrees turns an x-aligned ellipse into a y-aligned one.
    angle = 0.0 if split_along_x else np.pi / 2
    size = min(radius, (half_extent - 2) / 1.5, other_extent - 2)
    brightness = rng.uniform(0.7, 1.0)
    daughter_drift = rng.uniform(0, 2 * np.pi)
    for t in range(n_frames):
        if t < division_frame:
            stretch = t / max(1, division_frame - 1)  # the mother elongates along the future division axis
            yield [(center_y, center_x, size * (1 - 0.1 * stretch), size * (1 + 0.5 * stretch), angle, brightness)]
            continue
        # Daughters start just apart and glide to the middle of their halves over three frames.
        settled = min(1.0, (t - division_frame + 1) / 3)
        daughter = size * (0.75 + 0.15 * settled)
        offset = (1 - settled) * (size * 0.75 + 1.5) + settled * half_extent / 2
        sway = settled * max(0.0, other_extent - daughter - 2) * 0.5 * math.sin(0.4 * t + daughter_drift)
        cells = []
        for side in (-1, 1):
            along, across = side * offset, side * sway
            dy, dx = (across, along) if split_along_x else (along, across)
            cells.append((center_y + dy, center_x + dx, daughter, daughter, angle, brightness))
        yield cells


def _ellipsoid_mask(center, radii, angle, shape):
    """Boolean mask of an ellipse or ellipsoid (rotated by ``angle`` in the last two axes) and its bounding box.

    ``radii`` are along the last two axes before rotation; the box is clipped to ``shape``.
    """
    reach = list(radii[:-2]) + [max(radii[-2:])] * 2
    box = tuple(
        slice(max(0, math.floor(c - r)), min(size, math.ceil(c + r) + 1)) for c, r, size in zip(center, reach, shape)
    )
    grids = np.ogrid[box]
    offsets = [grid - c for grid, c in zip(grids, center)]
    dy, dx = offsets[-2], offsets[-1]
    along_y = dy * math.cos(angle) + dx * math.sin(angle)
    along_x = -dy * math.sin(angle) + dx * math.cos(angle)
    distance = (along_y / radii[-2]) ** 2 + (along_x / radii[-1]) ** 2
    for offset, r in zip(offsets[:-2], radii[:-2]):
        distance = distance + (offset / r) ** 2
    return distance <= 1.0, box


def _photon_counts(expected: np.ndarray, rng) -> np.ndarray:
    return np.clip(rng.poisson(expected), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _grid(n_tiles: int, height: int, width: int) -> tuple[int, int]:
    """Rows and columns of a grid of at least ``n_tiles`` tiles that are as square as the frame allows."""
    rows = max(1, round(math.sqrt(n_tiles * height / width)))
    cols = math.ceil(n_tiles / rows)
    if rows * cols < n_tiles:
        rows += 1
    return rows, max(cols, 1)


def _checked_shape(shape) -> tuple[int, int, int]:
    try:
        sizes = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be three integers, got {shape!r}.") from None
    if len(sizes) != 3 or min(sizes) < 1:
        raise InputError(f"shape must be three positive integers, got {shape!r}.")
    return sizes


def _checked_count(value, name: str) -> int:
    if int(value) != value or value < 1:
        raise InputError(f"{name} must be a positive whole number, got {value!r}.")
    return int(value)
