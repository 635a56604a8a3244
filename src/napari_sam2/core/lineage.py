"""Lineage of a label time-lapse: tracks, parent links, divisions and identity-safety flags. Numpy only.

A label series is (T, Y, X) or (T, Z, Y, X) of non-negative ints, one value per object, 0 the background. Each label
value becomes a track named by that value. The Cell Tracking Challenge (CTC) format, and traccuracy's CTC loader,
need a track to be present on every frame from its first to its last: the loader makes a node per frame in between
and refuses masks that lack one. So an object that vanishes for some frames and comes back is split into segments:
the first keeps the label as its track id, each later one gets a new track id (above the highest label) whose
parent is the segment before it. A parent with a single child is read as the same cell across a gap (a frame
skipping edge), never as a division, so such a lineage scores as a correct continuation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from skimage.measure import label as connected_components
from skimage.measure import regionprops
from skimage.segmentation import watershed

from ..errors import InputError


@dataclass(frozen=True)
class TrackSegment:
    """A run of consecutive frames ``first``..``last`` (inclusive) on which ``label`` is present, as one track.

    ``parent`` is the track id of the parent segment (a mother cell, or the same object before a gap), 0 for none.
    """

    track_id: int
    label: int
    first: int
    last: int
    parent: int


@dataclass(frozen=True)
class Flag:
    """A frame where an object's identity may have been swapped or lost.

    ``kind`` is "jump" (``value``: centroid displacement in pixels) or "area" (``value``: area ratio, later over
    earlier); ``frame`` is the later of the two frames compared.
    """

    frame: int
    track_id: int
    label: int
    kind: str
    value: float
    text: str


@dataclass
class Division:
    """One label's mask splitting into lasting parts from ``frame`` on.

    ``parts``: boolean masks (the shape of one frame) of the two largest parts on ``frame``, largest first.
    """

    frame: int
    label: int
    parts: list[np.ndarray]


@dataclass
class Lineage:
    """Tracks of a label series, ready for napari's Tracks layer and for export.

    - ``segments``: the tracks, sorted by track id (see the module docstring for gaps).
    - ``tracks``: float array (M, 4) rows ``[track_id, t, y, x]``, or (M, 5) ``[track_id, t, z, y, x]`` for
      (T, Z, Y, X) labels: the centroid (pixels) of each track on each frame, sorted by track id then t. This is
      the Tracks layer's ``data``.
    - ``graph``: child track id -> [parent track id], the Tracks layer's ``graph``.
    - ``flags``: identity-safety flags, by frame.
    """

    segments: list[TrackSegment]
    tracks: np.ndarray
    graph: dict[int, list[int]]
    flags: list[Flag] = field(default_factory=list)

    def parents(self) -> dict[int, int]:
        """{track_id: parent track id, 0 for none} for every track."""
        return {segment.track_id: segment.parent for segment in self.segments}

    def labels(self) -> dict[int, int]:
        """{track_id: label value} for every track (a label split at gaps has several tracks)."""
        return {segment.track_id: segment.label for segment in self.segments}


def check_labels(labels) -> np.ndarray:
    """The label series as an integer array (T, Y, X) or (T, Z, Y, X), checked.

    Whole-valued floats are converted to int64 and booleans to uint8; integer arrays are returned as they are.

    Raises:
        InputError: not 3 or 4 dimensions, not integers (or whole floats), or negative values.
    """
    array = np.asarray(labels)
    if array.ndim not in (3, 4):
        raise InputError(
            f"Labels must be a time series (T, Y, X) or (T, Z, Y, X); got an array of shape {array.shape}. "
            "For a single frame add a time axis (labels[None])."
        )
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        whole = finite & (np.floor(array) == array)
        if not whole.all():
            example = array[~whole].flat[0]
            raise InputError(
                f"Labels must be whole numbers (one id per object); found {example!r}. "
                "Use the labels layer's data, or round the array first."
            )
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iu":
        raise InputError(f"Labels must be an integer array; got dtype {array.dtype}.")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise InputError(
            f"Labels must not be negative (0 is the background, 1, 2, ... the objects); found {array.min()}."
        )
    return array


def frame_stats(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label values (n,), areas in pixels (n,), centroids (n, ndim) in pixels) of one label frame, sorted by label."""
    flat = frame.ravel()
    foreground = np.flatnonzero(flat)
    if foreground.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, frame.ndim))
    values, inverse = np.unique(flat[foreground], return_inverse=True)
    areas = np.bincount(inverse)
    coordinates = np.unravel_index(foreground, frame.shape)
    centroids = np.stack([np.bincount(inverse, weights=c) / areas for c in coordinates], axis=1)
    return values.astype(np.int64), areas, centroids


def check_min_frames(value, name: str = "min_frames") -> int:
    """How many frames the two parts of a mask must last to be a division: ``value`` as an int >= 1, or InputError
    naming the parameter ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(
            f"{name} must be a whole number of 1 or more (how many frames the two parts of a mask must last to be a "
            f"division), got {value!r}."
        )
    return int(value)


def find_divisions(labels, *, min_frames: int = 3, min_part_fraction: float = 0.15,
                   pinch_solidity: float = 0.92) -> list[Division]:
    """Divisions the way SAM2 shows them: one label's mask splitting into lasting parts.

    A label is split on a frame when its mask has at least two connected parts (8-connectivity in 2D, full in 3D)
    that each hold at least ``min_part_fraction`` of its area there. A split on ``min_frames`` consecutive frames
    is a division, reported at the first frame of the run; shorter runs (transient splits) and small specks are not.
    Daughters are born touching: on the frames just before the run, a mask pinched at a waist (solidity, area over
    convex-hull area, below ``pinch_solidity``; a whole cell is near 1) that both parts of the next frame overlap
    is already the two daughters, split between them (each pixel to the part it is reached from first), and the
    division is reported there.

    Args:
        labels: (T, Y, X) or (T, Z, Y, X) non-negative ints.
        min_frames: how many consecutive split frames make a division (>= 1).
        min_part_fraction: smallest part, as a fraction of the label's area on that frame (0 < f <= 0.5).

    Returns:
        Divisions sorted by frame then label; several if a label splits, merges and splits again.

    Raises:
        InputError: bad labels or parameters.
    """
    labels = check_labels(labels)
    min_frames = check_min_frames(min_frames)
    if not 0 < min_part_fraction <= 0.5:
        raise InputError(f"min_part_fraction must be in (0, 0.5]; got {min_part_fraction!r}.")
    divisions: list[Division] = []
    runs: dict[int, list] = {}  # label -> [start frame, length, components of that frame, part ids]
    for t, frame in enumerate(labels):
        split, components = _split_labels(frame, min_part_fraction)
        for value in list(runs):
            if value not in split:
                del runs[value]
        for value, part_ids in split.items():
            run = runs.setdefault(value, [t, 0, components, part_ids])
            run[1] += 1
            if run[1] == min_frames:
                start, _, start_components, ids = run  # the run's first frame (not this frame's components)
                parts = [start_components == i for i in ids[:2]]
                divisions.append(_pinched_start(labels, value, start, parts, min_part_fraction, pinch_solidity))
    divisions.sort(key=lambda d: (d.frame, d.label))
    return divisions


def _pinched_start(labels, value, start, parts, min_part_fraction, pinch_solidity) -> Division:
    """The division moved back over the frames where the mask is pinched into the two parts (find_divisions)."""
    for t in range(start - 1, -1, -1):
        mask = labels[t] == value
        seeds = np.zeros(mask.shape, np.int32)
        for i, part in enumerate(parts, start=1):
            seeds[part & mask] = i
        if (connected_components(mask, connectivity=mask.ndim).max() != 1 or len(np.unique(seeds)) != 3
                or regionprops(mask.astype(np.uint8))[0].solidity >= pinch_solidity):
            break
        halves = watershed(np.zeros(mask.shape, np.uint8), seeds, mask=mask)
        area = mask.sum()
        if min((halves == 1).sum(), (halves == 2).sum()) < min_part_fraction * area:
            break
        start, parts = t, [halves == 1, halves == 2]
    return Division(start, value, parts)


def _split_labels(frame: np.ndarray, min_part_fraction: float) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """({label: ids of its large parts, largest first} for the labels split on this frame, the part image)."""
    splits: dict[int, np.ndarray] = {}
    # skimage's label connects only equal neighbours, so touching objects stay apart.
    components = connected_components(frame, background=0, connectivity=frame.ndim)
    n = int(components.max())
    if n == 0:
        return splits, components
    flat = components.ravel()
    foreground = np.flatnonzero(flat)
    ids = flat[foreground]
    area = np.bincount(ids, minlength=n + 1)
    owner = np.zeros(n + 1, np.int64)
    owner[ids] = frame.ravel()[foreground]
    values, counts = np.unique(owner[1:], return_counts=True)
    for value in values[counts >= 2]:
        parts = np.flatnonzero(owner == value)
        sizes = area[parts]
        large = parts[sizes >= min_part_fraction * sizes.sum()]
        if large.size >= 2:
            splits[int(value)] = large[np.argsort(-area[large], kind="stable")]
    return splits, components


def build_lineage(
    labels,
    parents: dict[int, int] | None = None,
    *,
    infer_divisions: bool = True,
    max_jump: float | None = None,
    area_change: float = 2.0,
) -> Lineage:
    """Tracks, parent links and identity-safety flags of a label series.

    Each label value is a track (track id = label) from its first to its last frame. A label absent on some frames
    in between is split into segments at each gap; later segments get new track ids (above the highest label),
    each the child of the segment before (see the module docstring: CTC cannot express a gap inside one track).

    Args:
        labels: (T, Y, X) or (T, Z, Y, X) non-negative ints (or whole floats).
        parents: daughter label -> parent label, e.g. from handling ``find_divisions``; 0 means "no parent" and
            stops inference for that label. The parent must end before the daughter starts.
        infer_divisions: link a label without a given parent that first appears on frame t > 0 to the label whose
            last frame is t - 1 and whose pixels on t - 1 it overlaps most (how ground-truth series with new
            daughter ids are read). A label that is only absent for a while (a gap) has not ended.
        max_jump: centroid displacement (pixels) between consecutive present frames (across a gap too) above which
            a "jump" is flagged;
            None: one object diameter on the earlier frame (2 sqrt(area / pi), in 3D the equal-volume sphere's).
        area_change: area ratio (either way) between consecutive present frames above which "area" is flagged.

    Returns:
        A Lineage; its ``tracks`` are centroids in pixels (no scale applied).

    Raises:
        InputError: bad labels, bad parameters, or ``parents`` naming labels that are absent or do not end in time.
    """
    labels = check_labels(labels)
    if area_change <= 1:
        raise InputError(f"area_change must be a factor above 1; got {area_change!r}.")
    if max_jump is not None and max_jump < 0:
        raise InputError(f"max_jump must be a distance in pixels >= 0 (or None); got {max_jump!r}.")
    spatial = labels.ndim - 1

    values, times, areas, centroids = [], [], [], []
    for t, frame in enumerate(labels):
        frame_values, frame_areas, frame_centroids = frame_stats(frame)
        values.append(frame_values)
        times.append(np.full(frame_values.size, t, np.int64))
        areas.append(frame_areas)
        centroids.append(frame_centroids)
    value = np.concatenate(values)
    time = np.concatenate(times)
    area = np.concatenate(areas).astype(np.float64)
    centroid = np.concatenate(centroids).reshape(-1, spatial)
    order = np.lexsort((time, value))
    value, time, area, centroid = value[order], time[order], area[order], centroid[order]

    # A new segment starts at each new label and after each gap.
    starts = np.ones(value.size, bool)
    starts[1:] = (value[1:] != value[:-1]) | (time[1:] != time[:-1] + 1)
    run_of_row = np.cumsum(starts) - 1
    run_first = np.flatnonzero(starts)
    run_last = np.append(run_first[1:], value.size) - 1
    run_label = value[run_first]

    first_frame: dict[int, int] = {}
    last_frame: dict[int, int] = {}
    for v, i, j in zip(run_label.tolist(), run_first.tolist(), run_last.tolist()):
        first_frame.setdefault(v, int(time[i]))
        last_frame[v] = int(time[j])
    label_parent = _checked_parents(parents, first_frame, last_frame)
    if infer_divisions:
        label_parent.update(_inferred_parents(labels, first_frame, last_frame, label_parent))

    # Runs are sorted by label then frame: the first run of a label keeps it as track id, later ones get new ids.
    next_id = int(run_label.max()) + 1 if run_label.size else 1
    run_track = np.zeros(run_first.size, np.int64)
    latest: dict[int, int] = {}  # label -> track id of its latest segment
    gap_parent = np.zeros(run_first.size, np.int64)
    for k, v in enumerate(run_label.tolist()):
        if v in latest:
            run_track[k], gap_parent[k], next_id = next_id, latest[v], next_id + 1
        else:
            run_track[k] = v
        latest[v] = int(run_track[k])
    segments = []
    for k, v in enumerate(run_label.tolist()):
        # A daughter hangs from the last segment of its mother (the one that ends before it starts).
        parent = gap_parent[k] or latest.get(label_parent.get(v, 0), 0)
        first, last = int(time[run_first[k]]), int(time[run_last[k]])
        segments.append(TrackSegment(int(run_track[k]), v, first, last, int(parent)))
    segments.sort(key=lambda s: s.track_id)

    track_of_row = run_track[run_of_row]
    tracks = np.column_stack([track_of_row, time, centroid]).astype(np.float64)
    tracks = tracks[np.lexsort((time, track_of_row))]
    graph = {s.track_id: [s.parent] for s in segments if s.parent}
    flags = _flags(value, time, area, centroid, track_of_row, spatial, max_jump, area_change)
    return Lineage(segments, tracks, graph, flags)


def _checked_parents(parents, first_frame: dict[int, int], last_frame: dict[int, int]) -> dict[int, int]:
    checked: dict[int, int] = {}
    for daughter, mother in (parents or {}).items():
        try:
            daughter, mother = int(daughter), int(mother)
        except (TypeError, ValueError):
            raise InputError(f"parents must map label ids to label ids; got {daughter!r}: {mother!r}.") from None
        if daughter not in first_frame:
            raise InputError(f"parents names label {daughter}, which is not in the labels; remove it from parents.")
        if mother == 0:
            checked[daughter] = 0
            continue
        if mother not in last_frame:
            raise InputError(
                f"parents gives label {mother} as the parent of {daughter}, but {mother} is not in the labels."
            )
        if last_frame[mother] >= first_frame[daughter]:
            raise InputError(
                f"Label {mother} cannot be the parent of {daughter}: it is still present on frame "
                f"{last_frame[mother]}, but {daughter} starts on frame {first_frame[daughter]}. A parent must end "
                "before its daughters start (give the daughters new label ids from the division frame on)."
            )
        checked[daughter] = mother
    return checked


def _inferred_parents(labels, first_frame, last_frame, given) -> dict[int, int]:
    """{daughter: parent} for new labels overlapping, on their first frame, the pixels of a label that just ended."""
    ended_by_frame: dict[int, list[int]] = {}
    for v, last in last_frame.items():
        ended_by_frame.setdefault(last, []).append(v)
    new_by_frame: dict[int, list[int]] = {}
    for v, first in first_frame.items():
        if first > 0 and v not in given and first - 1 in ended_by_frame:
            new_by_frame.setdefault(first, []).append(v)
    inferred = {}
    for t, daughters in new_by_frame.items():
        current, previous = labels[t], labels[t - 1]
        overlap = np.isin(current, daughters) & np.isin(previous, ended_by_frame[t - 1])
        if not overlap.any():
            continue
        pairs, counts = np.unique(np.stack([current[overlap], previous[overlap]]), axis=1, return_counts=True)
        # Largest overlap last, so it wins in the dict.
        for k in np.argsort(counts, kind="stable"):
            inferred[int(pairs[0, k])] = int(pairs[1, k])
    return inferred


def _flags(value, time, area, centroid, track, spatial, max_jump, area_change) -> list[Flag]:
    """Jump and area flags between consecutive present frames of each label (rows sorted by label then t)."""
    same = value[1:] == value[:-1]
    before, after = np.flatnonzero(same), np.flatnonzero(same) + 1
    distance = np.linalg.norm(centroid[after] - centroid[before], axis=1)
    if max_jump is None:
        if spatial == 2:
            limit = 2 * np.sqrt(area[before] / math.pi)
        else:
            limit = 2 * np.cbrt(3 * area[before] / (4 * math.pi))
    else:
        limit = np.full(before.size, float(max_jump))
    ratio = area[after] / area[before]
    flags = []
    for k in np.flatnonzero(distance > limit):
        i, j = before[k], after[k]
        text = f"object {value[j]} jumps {distance[k]:.0f} px between frames {time[i]} and {time[j]}"
        flags.append(Flag(int(time[j]), int(track[j]), int(value[j]), "jump", float(distance[k]), text))
    for k in np.flatnonzero((ratio > area_change) | (ratio < 1 / area_change)):
        i, j = before[k], after[k]
        change = f"grows {ratio[k]:.1f}x" if ratio[k] > 1 else f"shrinks to {ratio[k]:.2f}x its area"
        text = f"object {value[j]} {change} between frames {time[i]} and {time[j]}"
        flags.append(Flag(int(time[j]), int(track[j]), int(value[j]), "area", float(ratio[k]), text))
    flags.sort(key=lambda f: (f.frame, f.track_id, f.kind))
    return flags
