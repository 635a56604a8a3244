"""Track cells through time-lapse TIFFs on disk: pair each time-lapse with its seeds (prompts, a label image, or
SAM2's automatic masks) and its output folder, check everything before the first model is loaded, track with
divisions, and write the labels and the tracks (CTC, GEFF, CSV) into one folder per time-lapse.

The command line's ``track`` is a thin layer over this module (and over ``file_segmentation`` for reading stacks,
prompts and seed labels).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.axes import StackAxes
from ..core.prompts import Prompt
from ..errors import InputError
from ..io.permissions import as_created
from ..io.tiff import TiffStack, read_tiff, tiff_stem, write_labels_tiff
from ..io.track_export import TRACK_FORMATS
from .file_segmentation import (
    DEFAULT_PROMPTS,
    SeedLabels,
    check_not_own_seeds,
    check_seed_frame,
    default_prompts,
    file_identity,
    fill_template,
    further_positions,
    is_template,
    laid_out,
    paired_file,
    read_prompts,
    read_seed_labels,
    seed_frame_labels,
    stack_layout,
    without_seed_files,
)

LABELS_NAME = "labels.tif"
# What each format writes into a time-lapse's folder (io.track_export.write_tracking); labels.tif is always written.
FORMAT_OUTPUTS = {"ctc": ("RES",), "geff": ("tracks.geff",), "csv": ("tracks.csv", "flags.csv")}
ALL_OUTPUTS = (LABELS_NAME, *(name for names in FORMAT_OUTPUTS.values() for name in names))


@dataclass(frozen=True)
class TrackJob:
    """One time-lapse, its prompts file and seed label file (either may be None), and its output folder."""

    stack: Path
    prompts: Path | None
    seed_labels: Path | None
    out: Path


@dataclass(frozen=True)
class PreparedTimelapse:
    """A time-lapse read (memory-mapped where possible) with its seeds checked, ready to track."""

    job: TrackJob
    image: TiffStack
    axes: StackAxes
    channels: tuple[int, ...] | None
    position: tuple[tuple[int, int], ...]  # the one position of further axes of length 1 (e.g. z of a T1YX file)
    prompts: list[Prompt]
    seeds: SeedLabels | None
    seed_frame: int

    @property
    def largest_id(self) -> int:
        given = [prompt.obj_id for prompt in self.prompts]
        return max([*given, self.seeds.largest if self.seeds is not None else 0])


def available_formats() -> tuple[str, ...]:
    """The track formats this installation can write: GEFF needs the optional geff package."""
    return tuple(f for f in TRACK_FORMATS if f != "geff" or importlib.util.find_spec("geff") is not None)


def parse_formats(text: str) -> tuple[str, ...]:
    """``ctc,geff,csv`` (any order, any subset) as a tuple; InputError for an unknown format, or geff without the
    geff package."""
    formats = tuple(dict.fromkeys(part.strip().lower() for part in text.replace(",", " ").split()))
    unknown = [f for f in formats if f not in TRACK_FORMATS]
    if unknown or not formats:
        raise InputError(f"--formats {text!r}: choose one or more of {', '.join(TRACK_FORMATS)}, e.g. ctc,csv.")
    if "geff" in formats and "geff" not in available_formats():
        raise InputError("Writing GEFF needs the geff package: pip install geff (or leave geff out of --formats).")
    return formats


def outputs_of(formats: Sequence[str]) -> tuple[str, ...]:
    """The names written into a time-lapse's folder for ``formats``."""
    return (LABELS_NAME, *(name for f in formats for name in FORMAT_OUTPUTS[f]))


def plan_track_jobs(
    stacks: Sequence[Path],
    out: str,
    prompts: Sequence[str] | None = None,
    seed_labels: Sequence[str] | None = None,
    auto: bool = False,
    overwrite: bool = False,
) -> list[TrackJob]:
    """Pair every time-lapse with its seeds and its output folder.

    ``out``: a folder (each time-lapse goes into ``out/{stem}``) or a template such as ``results/{stem}_tracks``.
    ``prompts`` and ``seed_labels``: one file per time-lapse (in order) or one template each, as for ``segment``.
    Without any of ``prompts``, ``seed_labels`` and ``auto`` (SAM2's automatic masks), the prompts file beside each
    time-lapse (STACK.csv or STACK.json) is taken; InputError when there is none. No output may replace an existing
    one without ``overwrite``, nor an input, nor another time-lapse's.
    """
    stacks = without_seed_files(stacks, seed_labels)
    jobs = []
    for index, stack in enumerate(stacks):
        prompts_file = paired_file(stack, index, stacks, prompts, "--prompts", "prompts files", "{dir}/{stem}.csv")
        seeds_file = paired_file(stack, index, stacks, seed_labels, "--seed-labels", "seed label files",
                                 "{dir}/{stem}_seeds.tif")
        if prompts_file is None and seeds_file is None and not auto:
            prompts_file = default_prompts(stack)
            if prompts_file is None:
                candidates = " or ".join(str(fill_template(template, stack)) for template in DEFAULT_PROMPTS)
                raise InputError(
                    f"Nothing to track in {stack}: give the objects with --prompts FILE, --seed-labels FILE (a label "
                    f"image of one frame) or --seed auto (SAM2 finds them), or put prompts in {candidates}."
                )
        check_not_own_seeds(stack, seeds_file)
        folder = fill_template(out, stack) if is_template(out) else Path(out) / tiff_stem(stack)
        jobs.append(TrackJob(stack, prompts_file, seeds_file, folder))

    inputs = {file_identity(path): path for job in jobs for path in (job.stack, job.prompts, job.seed_labels) if path}
    seen: dict[Path, Path] = {}
    for job in jobs:
        identity = file_identity(job.out)
        if identity in seen:
            raise InputError(
                f"{seen[identity]} and {job.stack} would both be written to {job.out}; use a folder (each time-lapse "
                "goes into FOLDER/{stem}) or a template with {stem}."
            )
        seen[identity] = job.stack
        if identity in inputs or job.out.is_file():
            raise InputError(f"The output folder {job.out} is a file; choose another --out.")
        for name in ALL_OUTPUTS:
            if file_identity(job.out / name) in inputs:
                raise InputError(f"The output {job.out / name} is one of the input files; choose another --out.")
        existing = [str(job.out / name) for name in ALL_OUTPUTS if os.path.lexists(job.out / name)]
        if existing and not overwrite:
            raise InputError(
                f"{', '.join(existing)} already exist(s); pass --overwrite to replace the earlier results, or "
                "choose another --out."
            )
        parent = next(folder for folder in (job.out.parent, *job.out.parent.parents) if folder.exists())
        if not parent.is_dir():
            raise InputError(f"Cannot write {job.out}: {parent} is a file, not a folder.")
    return jobs


def prepare_timelapse(job: TrackJob, axis=None, channels: Sequence[int] | None = None, seed_frame: int = 0,
                      pixels: bool = True) -> PreparedTimelapse:
    """Read the time-lapse's layout, its prompts and its seed labels and check that they fit together, without
    loading any model. Frames are along ``axis``, by default the file's t axis where it has one. Refuses a stack
    with further axes (each 2D frame is one time point). ``pixels=False``: the layout only (``with_pixels``
    later)."""
    image = read_tiff(job.stack, pixels=pixels)
    if axis is None and "T" in image.axes.upper():
        axis = "t"  # a time-lapse is tracked through time, even where the file has other axes too
    axes, chosen = stack_layout(job.stack, image, axis, channels)
    image = laid_out(image, axes)
    positions = further_positions(axes)
    if len(positions) > 1:
        further = ", ".join(axes.letters[axis].lower() for axis, _ in positions[0])
        raise InputError(
            f"track follows 2D cells through time: {job.stack} has axes {axes.letters} (shape {axes.shape}), with "
            f"{further} besides the frames ({axes.letters[axes.frame_axis].lower()}) and the image. Save one 2D "
            "time-lapse per file (e.g. one z slice, or a projection), or segment 3D objects with `segment`."
        )
    check_seed_frame(seed_frame, axes, job.stack)
    runs = read_prompts(job.prompts, axes)
    prompts = [prompt for run in runs.values() for prompt in run]
    seeds = read_seed_labels(job.seed_labels, axes, seed_frame, job.stack) if job.seed_labels is not None else None
    return PreparedTimelapse(job, image, axes, chosen, positions[0], prompts, seeds, seed_frame)


def with_pixels(stack: PreparedTimelapse) -> PreparedTimelapse:
    """The time-lapse checked by ``prepare_timelapse(..., pixels=False)``, now with its pixels."""
    return replace(stack, image=laid_out(read_tiff(stack.job.stack), stack.axes))


def track_prepared(
    stack: PreparedTimelapse,
    model,
    *,
    auto: bool = False,
    auto_options: dict | None = None,
    divisions: bool = True,
    min_division_frames: int = 3,
    intensity_range=None,
    progress: Callable[[int, int], None] | None = None,
    seed_progress: Callable[[int, int], None] | None = None,
    preprocessing=None,
):
    """``api.track_stack`` on the time-lapse with its seeds: a TimelapseTracks (labels (T, H, W))."""
    from .. import api  # torch: only once a time-lapse is tracked, not for the checks before

    seeding = {}
    if stack.seeds is not None:
        labels = read_tiff(stack.seeds.path).data
        seeding["seed_labels"] = np.asarray(
            seed_frame_labels(labels, stack.axes, stack.seed_frame, stack.position, stack.seeds.whole_stack)
        )
    if auto:
        seeding.update(seed="auto", auto_options=auto_options)
    return api.track_stack(
        stack.image.data, stack.prompts or None, axis=stack.axes.frame_axis, model=model, seed_frame=stack.seed_frame,
        divisions=divisions, min_division_frames=min_division_frames, progress=progress, seed_progress=seed_progress,
        channel_axis=stack.axes.channel_axis, channels=stack.channels, intensity_range=intensity_range,
        fixed_indices=dict(stack.position) or None, preprocessing=preprocessing, **seeding,
    )


def write_track_outputs(stack: PreparedTimelapse, tracks, formats: Sequence[str], overwrite: bool) -> Path:
    """Write ``labels.tif`` (the stack's axes and pixel sizes) and the tracks in ``formats`` into the time-lapse's
    folder. Everything is written into a temporary folder beside it first, so that only complete outputs appear;
    with ``overwrite``, an earlier run's outputs there are replaced (those of formats not written now removed)."""
    folder = stack.job.out
    names = outputs_of(formats)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    as_created(temporary)  # it becomes the result folder
    try:
        axes = stack.axes
        labels = _in_stack_layout(np.asarray(tracks.labels), axes, stack.position)
        unit = {"unit": stack.image.unit} if stack.image.unit else {}
        write_labels_tiff(temporary / LABELS_NAME, labels, axes.file_label_letters, stack.image.pixel_sizes, **unit)
        from ..io.track_export import write_tracking

        write_tracking(tracks.labels, tracks.lineage, temporary, formats, scale=_scale(stack))
        _publish(temporary, folder, names, overwrite)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def _in_stack_layout(labels: np.ndarray, axes: StackAxes, position) -> np.ndarray:
    """(T, H, W) labels with the axes of the stack's labels (a single plane: its own (H, W))."""
    order = (axes.frame_axis, *axes.spatial_axes)
    present = sorted(order)
    labels = np.transpose(labels, [order.index(axis) for axis in present])
    for axis, _ in position:  # further axes of length 1
        labels = np.expand_dims(labels, axes.label_axes.index(axis))
    return labels[0] if axes.added_frame_axis else labels


def _scale(stack: PreparedTimelapse) -> tuple[float, ...] | None:
    """GEFF's scale: one frame (its interval is unknown: 1), then the pixel size along y and x when known."""
    sizes = stack.image.pixel_sizes
    letters = [stack.axes.letters[axis] for axis in stack.axes.spatial_axes]
    if not all(letter in sizes for letter in letters):
        return None
    return (1.0, *(float(sizes[letter]) for letter in letters))


def _publish(temporary: Path, folder: Path, names: Sequence[str], overwrite: bool) -> None:
    """Move the outputs ``names`` from ``temporary`` into ``folder``: the whole folder at once when it does not
    exist yet; else output by output, each replacing an earlier one only with ``overwrite``."""
    if not os.path.lexists(folder):
        os.replace(temporary, folder)
        return
    existing = [str(folder / name) for name in ALL_OUTPUTS if os.path.lexists(folder / name)]
    if existing and not overwrite:  # they may have appeared while the time-lapse was being tracked
        raise InputError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace them.")
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    moved = []
    try:
        for name in ALL_OUTPUTS:  # earlier results out of the way, stale formats included
            if os.path.lexists(folder / name):
                os.replace(folder / name, aside / name)
                moved.append(name)
        for name in names:
            os.replace(temporary / name, folder / name)
    except BaseException:
        for name in moved:  # the earlier results back where no new one took their place
            if not os.path.lexists(folder / name):
                os.replace(aside / name, folder / name)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
