"""Tracks out: Cell Tracking Challenge (CTC) result folders, GEFF graphs and CSV tables of a Lineage.

Every writer is atomic: it writes to a temporary name beside the output and renames it into place, so a failure
leaves nothing half-written. geff is optional (``pip install geff``).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile

from ..core.lineage import Lineage, check_labels
from ..errors import InputError
from .permissions import as_created

CTC_MAX_LABEL = np.iinfo(np.uint16).max
LOOKUP_MAX_LABEL = 1 << 22  # segment_masks maps label values through a table up to here (16 MiB as uint32)


def write_ctc(labels, lineage: Lineage, folder, *, overwrite: bool = False) -> Path:
    """Write a CTC result folder: ``mask000.tif``... (uint16, one per frame) and ``res_track.txt``.

    ``res_track.txt`` has one line ``L B E P`` per track segment: track id, first and last frame, parent track id
    (0 for none). Where the lineage split a label at gaps, the masks carry the segments' track ids, so every track
    is present on each frame from B to E as CTC requires. CTC masks are 16-bit: when a track id is above 65535
    (e.g. daughters of seeds with large ids), the tracks are numbered 1, 2, ... in the order of their ids, in the
    masks and ``res_track.txt`` alike. Masks are named ``mask%03d.tif``, ``mask%04d.tif`` for more than 1000 frames.

    Args:
        labels: (T, Y, X) or (T, Z, Y, X) label series the lineage was built from (``build_lineage(labels)``).
        lineage: its Lineage.
        folder: output folder; its parent is created if needed.
        overwrite: replace an existing non-empty folder.

    Returns:
        The folder.

    Raises:
        InputError: bad labels, more than 65535 tracks (CTC masks are uint16), labels and lineage that do not match,
            or an existing non-empty folder without ``overwrite``.
    """
    labels = _fitting_labels(labels, lineage)
    ids = sorted(segment.track_id for segment in lineage.segments)
    if len(ids) > CTC_MAX_LABEL:
        raise InputError(f"CTC masks are 16-bit: {len(ids)} tracks are more than the {CTC_MAX_LABEL} they can hold.")
    renumber = None if not ids or ids[-1] <= CTC_MAX_LABEL else {track_id: i for i, track_id in enumerate(ids, 1)}
    digits = 3 if len(labels) <= 1000 else 4
    with _atomic_folder(Path(folder), overwrite) as temporary:
        for t, frame in enumerate(segment_masks(labels, lineage, renumber)):
            tifffile.imwrite(temporary / f"mask{t:0{digits}d}.tif", frame)
        named = {0: 0, **(renumber or {i: i for i in ids})}
        lines = [f"{named[s.track_id]} {s.first} {s.last} {named[s.parent]}\n"
                 for s in sorted(lineage.segments, key=lambda s: s.track_id)]
        (temporary / "res_track.txt").write_text("".join(lines))
    return Path(folder)


def _fitting_labels(labels, lineage: Lineage) -> np.ndarray:
    """The labels, checked, and the lineage built from them (as many frames and axes)."""
    labels = check_labels(labels)
    beyond = any(segment.last >= len(labels) for segment in lineage.segments)
    if beyond or (lineage.tracks.size and lineage.tracks.shape[1] != labels.ndim + 1):
        raise InputError(
            f"The lineage does not fit labels of shape {labels.shape} (more frames or other axes); build the "
            "lineage from these labels (build_lineage(labels)) and write them together."
        )
    return labels


def segment_masks(labels, lineage: Lineage, renumber: dict[int, int] | None = None):
    """Each frame of ``labels`` with every object's pixels holding its track segment's id (the label itself, or for
    a label split at gaps, its later segments' ids; ``renumber`` maps track ids to other ids): the masks of a CTC
    result, and the GEFF's segmentation. uint16 when every id fits, else uint32. InputError where a frame's labels do
    not match the lineage's tracks."""
    named = {0: 0, **{s.track_id: (renumber[s.track_id] if renumber else s.track_id) for s in lineage.segments}}
    dtype = np.uint16 if max(named.values()) <= CTC_MAX_LABEL else np.uint32
    highest = int(labels.max()) if labels.size else 0
    for t, frame in enumerate(labels):
        covering = {s.label: s.track_id for s in lineage.segments if s.first <= t <= s.last}
        if highest <= LOOKUP_MAX_LABEL:  # a table indexed by label value: linear in the pixels
            frame = frame.astype(np.intp, copy=False)
            _check_frame(t, covering, np.flatnonzero(np.bincount(frame.ravel(), minlength=1)))
            table = np.zeros(highest + 1, dtype)
            table[list(covering)] = [named[track_id] for track_id in covering.values()]
            yield table[frame]
        else:  # ids too large for a table: the frame's values sorted (20x slower on big frames)
            values, inverse = np.unique(frame, return_inverse=True)
            _check_frame(t, covering, values)
            table = np.array([named[covering.get(v, 0)] for v in values.tolist()], dtype)
            yield table[inverse].reshape(frame.shape)


def _check_frame(t: int, covering: dict, values: np.ndarray) -> None:
    """InputError unless the label values present on frame t (0 included or not) are those of the segments
    covering it."""
    if sorted(covering) != values[values != 0].tolist():
        raise InputError(
            f"The labels on frame {t} do not match the lineage's tracks; build the lineage from these "
            "labels (build_lineage(labels)) and write them together."
        )


def write_geff(
    lineage: Lineage,
    path,
    *,
    overwrite: bool = False,
    axis_names: tuple[str, ...] | None = None,
    scale: tuple[float, ...] | None = None,
    axis_units: tuple[str | None, ...] | None = None,
    labels=None,
) -> Path:
    """Write the lineage as a GEFF zarr store (Graph Exchange File Format) with the ``geff`` package.

    One node per track and frame, with properties named by ``axis_names`` (time as an int frame index, positions
    as centroids in pixels), ``track_id`` and ``label``. Edges join consecutive present frames of a track, and the
    last node of a parent track to the first node of each child (a division, or the same object across a gap).

    Args:
        lineage: from ``build_lineage``.
        path: output folder of the zarr store; its parent is created if needed.
        overwrite: replace an existing non-empty folder.
        axis_names: time axis then spatial axes; default ("t", "y", "x") or ("t", "z", "y", "x").
        scale: physical size of a frame and of a pixel along each axis, recorded in the metadata (positions stay in
            pixels); None for no scale.
        axis_units: units of the axes (e.g. ("second", "micrometer", "micrometer")), or None.
        labels: the label series the lineage was built from: stored in the store as the array ``segmentation``
            (each object's pixels holding its node's ``track_id``, as the CTC masks), named in the metadata as a
            related object of type "labels", so that readers (e.g. traccuracy's ``load_geff_data(...,
            load_geff_seg=True)``) match nodes to masks.

    Returns:
        The path.

    Raises:
        InputError: geff not installed, axis names / scale / units not matching the axes, or an existing non-empty
            folder without ``overwrite``.
    """
    try:
        import geff
        import networkx as nx
    except ImportError:
        raise InputError("Writing GEFF needs the geff package: pip install geff") from None
    tracks = lineage.tracks
    n_axes = tracks.shape[1] - 1  # time and space
    names = list(axis_names) if axis_names is not None else ["t", *["z", "y", "x"][1 - n_axes :]]
    if len(names) != n_axes or len(set(names)) != n_axes or {"track_id", "label"} & set(names):
        raise InputError(
            f"axis_names must name the {n_axes} axes (time first), all different and not 'track_id' or 'label'; "
            f"got {axis_names!r}."
        )
    for given, what in ((scale, "scale"), (axis_units, "axis_units")):
        if given is not None and len(given) != n_axes:
            raise InputError(f"{what} must have one entry per axis ({', '.join(names)}); got {given!r}.")
    if scale is not None and not all(float(s) > 0 for s in scale):
        raise InputError(f"scale must be positive sizes; got {scale!r}.")

    if labels is not None:
        labels = _fitting_labels(labels, lineage)
    label_of = lineage.labels()
    graph = nx.DiGraph()
    track = tracks[:, 0].astype(np.int64)
    for node, row in enumerate(tracks):
        position = {name: float(value) for name, value in zip(names[1:], row[2:])}
        track_id = int(track[node])
        graph.add_node(node, **{names[0]: int(row[1])}, **position, track_id=track_id, label=label_of[track_id])
    same = np.flatnonzero(track[1:] == track[:-1])
    graph.add_edges_from(zip(same.tolist(), (same + 1).tolist()))
    first_node = {int(t): int(i) for t, i in zip(*np.unique(track, return_index=True))}
    last_node = {int(t): len(track) - 1 - int(i) for t, i in zip(*np.unique(track[::-1], return_index=True))}
    for segment in lineage.segments:
        if segment.parent:
            graph.add_edge(last_node[segment.parent], first_node[segment.track_id])

    with _atomic_folder(Path(path), overwrite, create=False) as temporary:
        geff.write(
            graph,
            str(temporary),
            axis_names=names,
            axis_types=["time"] + ["space"] * (n_axes - 1),
            axis_units=list(axis_units) if axis_units is not None else None,
            axis_scales=[float(s) for s in scale] if scale is not None else None,
        )
        if labels is not None:
            _add_segmentation(temporary, np.stack(list(segment_masks(labels, lineage))))
    return Path(path)


def _add_segmentation(store: Path, masks: np.ndarray) -> None:
    """``masks`` as the array ``segmentation`` of a written GEFF store, and a "labels" related object naming it (its
    pixels hold the nodes' ``track_id``). geff-spec 1.2.1 names that property ``node_prop``; readers of earlier
    versions (traccuracy 0.4) read ``label_prop``, so both are set."""
    import warnings

    import zarr
    from geff_spec import GeffMetadata, RelatedObject

    array = zarr.create_array(str(store / "segmentation"), shape=masks.shape, dtype=masks.dtype,
                              chunks=(1, *masks.shape[1:]))
    array[:] = masks
    metadata = GeffMetadata.read(str(store))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        related = RelatedObject(type="labels", path="segmentation", node_prop="track_id", label_prop="track_id")
    metadata.related_objects = [related]
    metadata.write(str(store))


def write_tracks_csv(lineage: Lineage, path) -> Path:
    """Write the track points as CSV: ``track_id,t,(z,)y,x,label,parent_track_id``, one row per track and frame.

    Positions are centroids in pixels; parent_track_id is 0 for none. An existing file is replaced.
    """
    tracks = lineage.tracks
    spatial = ["z", "y", "x"][-(tracks.shape[1] - 2) :]
    label_of, parent_of = lineage.labels(), lineage.parents()
    with _atomic_file(Path(path)) as file:
        writer = csv.writer(file)
        writer.writerow(["track_id", "t", *spatial, "label", "parent_track_id"])
        for row in tracks:
            track_id = int(row[0])
            position = (float(v) for v in row[2:])
            writer.writerow([track_id, int(row[1]), *position, label_of[track_id], parent_of[track_id]])
    return Path(path)


def write_flags_csv(lineage: Lineage, path) -> Path:
    """Write the identity-safety flags as CSV: ``frame,track_id,label,kind,value,text``. An existing file is
    replaced."""
    with _atomic_file(Path(path)) as file:
        writer = csv.writer(file)
        writer.writerow(["frame", "track_id", "label", "kind", "value", "text"])
        for flag in lineage.flags:
            writer.writerow([flag.frame, flag.track_id, flag.label, flag.kind, flag.value, flag.text])
    return Path(path)


TRACK_FORMATS = ("ctc", "geff", "csv")


def write_tracking(labels, lineage: Lineage, folder, formats=TRACK_FORMATS, *, overwrite: bool = False,
                   scale=None) -> list[Path]:
    """Write a tracking result into ``folder`` in each of ``formats``: "ctc" -> ``folder/RES`` (a CTC result
    folder, ``write_ctc``), "geff" -> ``folder/tracks.geff`` (``write_geff``; ``scale``: the size of a frame
    and of a pixel along each axis, time first, recorded in its metadata), "csv" -> ``folder/tracks.csv`` and ``folder/flags.csv`` (the identity-safety flags). Returns the paths
    written. Every output is checked for existence before anything is written (InputError without ``overwrite``)."""
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in TRACK_FORMATS]
    if unknown or not formats:
        raise InputError(f"Unknown track format(s) {unknown}: choose from {', '.join(TRACK_FORMATS)}.")
    folder = Path(folder)
    outputs = {"ctc": [folder / "RES"], "geff": [folder / "tracks.geff"],
               "csv": [folder / "tracks.csv", folder / "flags.csv"]}
    chosen = [path for f in formats for path in outputs[f]]
    existing = [str(path) for path in chosen if path.exists()]
    if existing and not overwrite:
        raise InputError(f"{', '.join(existing)} already exist(s); pass overwrite to replace, or choose another folder.")
    if "geff" in formats and importlib.util.find_spec("geff") is None:  # before anything is written
        raise InputError("Writing GEFF needs the geff package: pip install geff (or leave out the geff format).")
    written = []
    if "ctc" in formats:
        written.append(write_ctc(labels, lineage, folder / "RES", overwrite=overwrite))
    if "geff" in formats:
        written.append(write_geff(lineage, folder / "tracks.geff", overwrite=overwrite, scale=scale, labels=labels))
    if "csv" in formats:
        written += [write_tracks_csv(lineage, folder / "tracks.csv"), write_flags_csv(lineage, folder / "flags.csv")]
    return written


@contextmanager
def _atomic_file(path: Path):
    """A text file open at a temporary name beside ``path``, renamed to ``path`` when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f"{path.name}.tmp-", dir=path.parent)
    as_created(temporary)
    try:
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as file:
            yield file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def _atomic_folder(folder: Path, overwrite: bool, create: bool = True):
    """A folder to fill in ``<folder>.tmp-XXXX``; it becomes ``folder`` when the block succeeds.

    ``create=False`` yields a path that does not exist yet, for writers that refuse an existing folder (geff).
    """
    if folder.exists() and not overwrite and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"{folder} already exists; choose another output or pass overwrite=True.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=folder.parent))
    as_created(temporary)
    staged = temporary if create else temporary / folder.name
    try:
        yield staged
        old = None
        if folder.exists() or folder.is_symlink():
            # Moved aside, not deleted, until the new folder is in place.
            old = Path(tempfile.mkdtemp(prefix=f"{folder.name}.old-", dir=folder.parent)) / "old"
            os.replace(folder, old)
        try:
            os.replace(staged, folder)
        except BaseException:
            if old is not None:
                os.replace(old, folder)
            raise
        if old is not None:
            shutil.rmtree(old.parent, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
