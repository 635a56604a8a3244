"""Segment TIFF stacks on disk: pair each stack with its prompts file (and / or its seed label file) and its output,
check everything before the first model is loaded, track, and write the labels with the stack's axes and pixel sizes.

The command line's ``segment`` is a thin layer over this module.
"""

from __future__ import annotations

import glob
import itertools
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.axes import StackAxes, stack_axes
from ..core.channels import choose_channels
from ..core.frame_labels import check_ids_fit, smallest_label_dtype
from ..core.prompts import MAX_OBJ_ID, Prompt, check_prompts_fit
from ..errors import InputError
from ..io.permissions import as_created
from ..io.prompt_files import Position, read_prompt_file
from ..io.tiff import TiffStack, is_tiff, read_tiff, tiff_stem, write_labels_tiff

DEFAULT_PROMPTS = ("{dir}/{stem}.csv", "{dir}/{stem}.json")
DEFAULT_OUT = "{dir}/{stem}_labels.tif"


@dataclass(frozen=True)
class FileJob:
    """One stack, the file with its prompts (None: objects from seed labels only), where its labels go, and the
    label file seeding its objects (or None)."""

    stack: Path
    prompts: Path | None
    out: Path
    seed_labels: Path | None = None


@dataclass(frozen=True)
class SeedLabels:
    """A label TIFF checked by ``read_seed_labels``: its label values on ``frame`` seed objects with those ids.

    ``whole_stack``: the file has the stack's label shape and is indexed at each run's position; else it holds one
    frame's (H, W) labels, which seed every run. ``positions``: the positions of the further axes where the seed
    frame holds a label; ``largest``: the largest label there."""

    path: Path
    frame: int
    whole_stack: bool
    positions: tuple[Position, ...]
    largest: int


@dataclass(frozen=True)
class PreparedStack:
    """A stack read (memory-mapped where possible) with its prompts and seed labels checked, ready to segment."""

    job: FileJob
    image: TiffStack
    axes: StackAxes
    channels: tuple[int, ...] | None
    runs: dict[Position, list[Prompt]]  # one tracking run per position of the further axes (prompts may be [])
    seeds: SeedLabels | None = None  # objects seeded from a label image, in every run it has labels for

    @property
    def n_frames(self) -> int:
        return self.axes.n_frames


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Paths of the stacks to segment: each argument is a file, or a glob pattern (quoted, or from a shell that does
    not expand it) matching files. Duplicates are dropped; order is kept."""
    found: list[Path] = []
    for pattern in patterns:
        if os.path.isfile(pattern):
            matches = [pattern]
        elif glob.has_magic(pattern):
            matches = sorted(path for path in glob.glob(pattern) if os.path.isfile(path))
            if not matches:
                raise InputError(f"No file matches {pattern}.")
            matches = _without_earlier_outputs(matches)
        elif os.path.isdir(pattern):
            raise InputError(f"{pattern} is a folder; give the stacks in it, e.g. '{os.path.join(pattern, '*.tif')}'.")
        else:
            raise InputError(f"Cannot read {pattern}: no such file.")
        for match in matches:
            path = Path(match)
            if path not in found:
                found.append(path)
    return found


def _without_earlier_outputs(paths: list[str]) -> list[str]:
    """Drop STACK_labels.tif where STACK.tif is matched too: the output of an earlier run is not a stack."""
    suffix = Path(DEFAULT_OUT).name.replace("{stem}", "")
    names = {os.path.join(os.path.dirname(path), tiff_stem(Path(path))) for path in paths}
    return [
        path for path in paths
        if not (path.endswith(suffix) and path[: -len(suffix)] in names)
    ]


def plan_jobs(stacks: Sequence[Path], prompts: Sequence[str] | None, out: str | None, overwrite: bool,
              seed_labels: Sequence[str] | None = None) -> list[FileJob]:
    """Pair every stack with its prompts file, its seed label file and output path.

    ``prompts``: one path per stack (in order), or one template such as ``{dir}/{stem}.csv``, or None for the
    defaults (``STACK.csv`` or ``STACK.json`` beside each stack; with ``seed_labels`` no prompts are needed and none
    are looked for). ``seed_labels``: label TIFFs seeding the objects, paired with the stacks as ``prompts`` are, or
    None. ``out``: a file (one stack), a folder (existing, or ending in a path separator), a template such as
    ``results/{stem}_labels.tif``, or None for ``STACK_labels.tif`` beside each stack. Placeholders: {stem} (name
    without .tif / .ome.tif), {name}, {dir}. Missing output folders are made when the labels are written. No output
    may overwrite an existing file without ``overwrite``, a stack, a seed label file, or another stack's output.
    """
    stacks = without_seed_files(stacks, seed_labels)
    jobs = [
        FileJob(
            stack,
            _prompts_for(stack, index, stacks, prompts, required=not seed_labels),
            _out_for(stack, stacks, out),
            paired_file(stack, index, stacks, seed_labels, "--seed-labels", "seed label files", "{dir}/{stem}_seeds.tif"),
        )
        for index, stack in enumerate(stacks)
    ]
    inputs = {file_identity(job.stack) for job in jobs}
    seed_files = {file_identity(job.seed_labels): job.stack for job in jobs if job.seed_labels is not None}
    seen: dict[Path, Path] = {}
    for job in jobs:
        if not is_tiff(job.out):  # the labels are TIFF: another extension would mislabel the file
            raise InputError(
                f"The output {job.out} is not a TIFF file name: segment writes label TIFFs, so end --out in .tif "
                "(or in / for a folder)."
            )
        identity = file_identity(job.out)
        if identity in inputs:
            raise InputError(f"The output {job.out} is one of the input stacks; choose another --out.")
        if identity in seed_files:
            raise InputError(f"The output {job.out} is the seed labels of {seed_files[identity]}; choose another --out.")
        check_not_own_seeds(job.stack, job.seed_labels)
        if identity in seen:
            raise InputError(
                f"{seen[identity]} and {job.stack} would both be written to {job.out}; use a template such as "
                "--out '{dir}/{stem}_labels.tif'."
            )
        seen[identity] = job.stack
        if job.out.exists() and not overwrite:
            raise InputError(f"{job.out} already exists; pass --overwrite to replace it, or choose another --out.")
        existing = next(folder for folder in (job.out.parent, *job.out.parent.parents) if folder.exists())
        if not existing.is_dir():
            raise InputError(f"Cannot write {job.out}: {existing} is a file, not a folder.")
    return jobs


def prepare_stack(job: FileJob, axis=None, channels: Sequence[int] | None = None, pixels: bool = True,
                  seed_frame: int = 0) -> PreparedStack:
    """Read the stack's layout, its prompts and its seed labels and check that they fit together, without loading
    any model. ``seed_frame``: the frame whose labels in ``job.seed_labels`` seed the objects.

    ``pixels=False`` reads only the layout (see ``read_tiff``): to check many stacks before segmenting any, then
    ``with_pixels`` when a stack's turn comes.
    """
    image = read_tiff(job.stack, pixels=pixels)
    axes, chosen = stack_layout(job.stack, image, axis, channels)
    image = laid_out(image, axes)
    runs = read_prompts(job.prompts, axes)
    seeds = None
    if job.seed_labels is not None:
        seeds = read_seed_labels(job.seed_labels, axes, seed_frame, job.stack)
        # A run for every position seeded, in the order of the positions; the prompts add to their run.
        runs = {position: runs.get(position, []) for position in further_positions(axes)
                if position in runs or position in seeds.positions}
    return PreparedStack(job, image, axes, chosen, runs, seeds)


def read_prompts(path: Path | None, axes: StackAxes) -> dict[Position, list[Prompt]]:
    """The prompts file's prompts by run ({} for no file), checked against the stack laid out as ``axes``."""
    if path is None:
        return {}
    runs = read_prompt_file(path, axes)
    for prompts in runs.values():
        try:
            check_prompts_fit(prompts, axes.n_frames, axes.frame_size)
        except InputError as error:
            raise InputError(f"{path}: {error}") from None
    return runs


def read_seed_labels(path: Path, axes: StackAxes, frame: int, stack: Path | None = None) -> SeedLabels:
    """Check the label TIFF at ``path`` as seeds of a stack laid out as ``axes``: one frame's labels (H, W), or
    labels with the stack's label shape (its axes less the channels, e.g. a segmentation of every frame); integer
    labels (whole-number floats are taken), 0 for background, and at least one label on ``frame``. Reads only the
    seed frame at each position of the further axes (memory-mapped where the file allows). InputError naming the
    file, saying what to fix."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Seed labels {path} do not exist" + (f" (for {stack})." if stack else "."))
    check_seed_frame(frame, axes, stack)
    labels = read_tiff(path).data
    height, width = axes.frame_size
    whole_stack = labels.shape == axes.label_shape
    if not whole_stack and labels.shape != (height, width):
        whole = axes.label_shape[1:] if axes.added_frame_axis else axes.label_shape
        letters = ", ".join(axes.file_label_letters.lower())
        raise InputError(
            f"{path}: the seed labels have shape {labels.shape}; give one frame's labels ({height}, {width}) or "
            f"the whole stack's labels {whole} ({letters}) of {stack or 'the stack'}."
        )
    if labels.dtype.kind not in "biuf":
        raise InputError(f"{path}: seed labels must be an integer label image, got pixels of type {labels.dtype}.")
    positions = further_positions(axes)
    seeded: list[Position] = []
    largest = 0
    for position in positions if whole_stack else positions[:1]:
        values = _seed_values(seed_frame_labels(labels, axes, frame, position, whole_stack), path)
        if values.size:
            seeded.append(position)
            largest = max(largest, int(values[-1]))
    if not seeded:
        where = f"frame {frame}" if len(positions) == 1 or not whole_stack else f"frame {frame} at any position"
        raise InputError(
            f"{path}: the seed labels have no object on {where}: every pixel is 0 (background). Choose the frame "
            "with --seed-frame."
        )
    return SeedLabels(path, frame, whole_stack, tuple(seeded) if whole_stack else tuple(positions), largest)


def check_seed_frame(frame: int, axes: StackAxes, stack: Path | None = None) -> None:
    if not 0 <= frame < axes.n_frames:
        raise InputError(
            f"--seed-frame {frame} is not a frame of {stack or 'the stack'}: it has {axes.n_frames} frame(s) "
            f"(0 to {axes.n_frames - 1})."
        )


def seed_frame_labels(labels: np.ndarray, axes: StackAxes, frame: int, position: Position,
                      whole_stack: bool) -> np.ndarray:
    """The (H, W) seed labels of one run: a one-frame label image as it is, a whole stack's at ``frame`` and
    ``position``, with the image axes in the frame's order."""
    if not whole_stack:
        return labels
    index: list = [slice(None)] * len(axes.label_axes)
    index[axes.label_axes.index(axes.frame_axis)] = frame
    for axis, at in position:
        index[axes.label_axes.index(axis)] = at
    plane = labels[tuple(index)]
    first, second = (axes.label_axes.index(axis) for axis in axes.spatial_axes)
    return plane.T if first > second else plane


def seeds_of_run(stack: PreparedStack, position: Position, labels: np.ndarray | None = None) -> np.ndarray | None:
    """The (H, W) seed labels of the run at ``position``, or None when the stack has none there. ``labels``: the
    seed file's pixels when already read."""
    seeds = stack.seeds
    if seeds is None or position not in seeds.positions:
        return None
    labels = read_tiff(seeds.path).data if labels is None else labels
    return np.asarray(seed_frame_labels(labels, stack.axes, seeds.frame, position, seeds.whole_stack))


def _seed_values(plane: np.ndarray, path: Path) -> np.ndarray:
    """The label values (sorted, 0 left out) of one seed frame, or InputError for fractions, negative values and
    ids beyond the labels' range."""
    plane = np.asarray(plane)
    if plane.dtype.kind == "f" and not (np.isfinite(plane).all() and np.array_equal(plane, np.round(plane))):
        raise InputError(
            f"{path}: seed labels must be whole numbers (a label image: 0 background, 1, 2, ... objects), "
            "not fractions, NaN or infinity. Is this an image rather than its labels?"
        )
    values = np.unique(plane)
    if values.size and values[0] < 0:
        raise InputError(f"{path}: seed labels must be 0 (background) or positive object ids, found {values[0]:.0f}.")
    if values.size and values[-1] > MAX_OBJ_ID:
        raise InputError(f"{path}: seed label {values[-1]:.0f} is too large: object ids go up to {MAX_OBJ_ID}.")
    return values[values != 0].astype(np.int64)


def with_pixels(stack: PreparedStack) -> PreparedStack:
    """The stack checked by ``prepare_stack(..., pixels=False)``, now with its pixels (memory-mapped where possible)."""
    return replace(stack, image=laid_out(read_tiff(stack.job.stack), stack.axes))


def laid_out(image: TiffStack, axes: StackAxes) -> TiffStack:
    """The image with the axes ``axes`` describes: a single plane gets its frame axis of length 1 in front."""
    if not axes.added_frame_axis:
        return image
    return replace(image, data=image.data[np.newaxis], axes=axes.letters)


def segment_prepared(
    stack: PreparedStack,
    model,
    device="auto",
    direction: str = "both",
    intensity_range=None,
    progress: Callable[[int, int], None] | None = None,
    preprocessing=None,
) -> np.ndarray:
    """Track the objects of every run through the stack; returns labels over the stack's axes minus channels.
    ``preprocessing``: the model's (see ``stream_stack``; ``model`` is often loaded already, so give it here)."""
    from ..api import stream_stack  # torch: only once a stack is segmented, not for the checks before
    axes = stack.axes
    # Label values are object ids: the type is chosen from the largest, so that every id is stored exactly.
    largest = max([prompt.obj_id for prompts in stack.runs.values() for prompt in prompts]
                  + [stack.seeds.largest if stack.seeds is not None else 0])
    seed_file = read_tiff(stack.seeds.path).data if stack.seeds is not None else None
    labels = np.zeros(axes.label_shape, smallest_label_dtype(largest, smallest=np.uint16))
    frame_position = axes.label_axes.index(axes.frame_axis)
    # Runs start one after the other (each holds its own frames and memories); the total counts every frame of
    # a run not started yet, and shrinks to the run's own count once it starts.
    run_totals = {position: stack.n_frames for position in stack.runs}
    done = 0
    for position, prompts in stack.runs.items():
        seeds = seeds_of_run(stack, position, seed_file)
        seeding = {} if seeds is None else {"seed_labels": seeds, "seed_frame": stack.seeds.frame}
        run = stream_stack(
            stack.image.data, prompts, axis=axes.frame_axis, model=model, device=device, direction=direction,
            channel_axis=axes.channel_axis, channels=stack.channels, intensity_range=intensity_range,
            fixed_indices=dict(position) or None, preprocessing=preprocessing, **seeding,
        )
        run_totals[position] = run.total
        index: list = [slice(None)] * len(axes.label_axes)
        for axis, at in position:
            index[axes.label_axes.index(axis)] = at
        finished: set[int] = set()
        for result in run:
            check_ids_fit(result.obj_ids, labels.dtype)
            index[frame_position] = result.frame
            labels[tuple(index)] = result.labels
            if result.frame not in finished:
                finished.add(result.frame)
                done += 1
                if progress is not None:
                    progress(done, sum(run_totals.values()))
        run_totals[position] = len(finished)  # a run may end early; count what it did
    return labels


def precompute_file(path: Path, model, axis=None, channels: Sequence[int] | None = None, intensity_range=None,
                    progress: Callable[[int, int], None] | None = None, preprocessing=None) -> int:
    """Store on disk the image features of every frame `segment` could track in the stack at ``path``: along the
    frame axis, at every position of the further axes (api.precompute_features). Returns the frames done."""
    from ..api import precompute_features  # torch: only once a stack is processed

    image = read_tiff(path)
    axes, chosen = stack_layout(path, image, axis, channels)
    image = laid_out(image, axes)
    positions = further_positions(axes)
    total = len(positions) * axes.n_frames
    done = 0

    def step(frames_done: int, _):
        if progress is not None:
            progress(done + frames_done, total)

    for position in positions:
        done += precompute_features(
            image.data, axis=axes.frame_axis, model=model, progress=step, channel_axis=axes.channel_axis,
            channels=chosen, intensity_range=intensity_range, fixed_indices=dict(position) or None,
            preprocessing=preprocessing,
        )
    return done


def stack_layout(path: Path, image: TiffStack | None = None, axis=None, channels: Sequence[int] | None = None):
    """(StackAxes, chosen channels) of the stack at ``path`` (read without pixels unless ``image`` is given);
    InputError naming the file where the axis or channels do not fit."""
    image = read_tiff(path, pixels=False) if image is None else image
    try:
        axes = stack_axes(image.axes, image.data.shape, axis)
        return axes, _chosen_channels(axes, channels)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def further_positions(axes: StackAxes) -> list[Position]:
    """Every position of the axes that are neither the frame, channel nor image axes (one empty position if none)."""
    further = [a for a in range(len(axes.shape)) if a not in (axes.frame_axis, axes.channel_axis, *axes.spatial_axes)]
    return [tuple(zip(further, index)) for index in itertools.product(*(range(axes.shape[a]) for a in further))]


def write_labels(stack: PreparedStack, labels: np.ndarray, overwrite: bool) -> None:
    """Write the labels with the stack's axes and pixel sizes (a single plane as a 2D label image); a file appears
    only once it is complete."""
    out = stack.job.out
    letters = stack.axes.file_label_letters
    if stack.axes.added_frame_axis:
        labels = labels[0]
    if out.exists() and not overwrite:  # it may have appeared while the stack was being segmented
        raise InputError(f"{out} already exists; pass --overwrite to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(handle)
    as_created(temporary)
    try:
        unit = {"unit": stack.image.unit} if stack.image.unit else {}
        write_labels_tiff(temporary, labels, letters, stack.image.pixel_sizes, **unit)
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _chosen_channels(axes: StackAxes, channels) -> tuple[int, ...] | None:
    if axes.channel_axis is None:
        if channels:
            raise InputError(f"--channels was given but the stack has no channel axis (axes {axes.letters}).")
        return None
    samples = axes.letters[axes.channel_axis] == "S"
    return choose_channels(axes.shape[axes.channel_axis], channels or None, samples, "--channels ", "0")


def fill_template(template: str, stack: Path) -> Path:
    """A file name template ({stem}, {name}, {dir}) filled in for one stack."""
    try:
        return Path(template.format(stem=tiff_stem(stack), name=stack.name, dir=str(stack.parent)))
    except (KeyError, IndexError, ValueError) as error:
        raise InputError(
            f"Cannot use {template!r} as a file name template ({error}); its placeholders may be {{stem}}, {{name}} "
            "and {dir}."
        ) from None


def is_template(text: str) -> bool:
    """Whether a file option names a template (with placeholders) rather than one file or folder."""
    return "{" in text


def without_seed_files(stacks: Sequence[Path], seed_labels: Sequence[str] | None) -> list[Path]:
    """The stacks less those that are another stack's seed labels by the one ``seed_labels`` template: a glob such
    as 'data/*.tif' matches the seed files beside the stacks too."""
    if not seed_labels or len(seed_labels) != 1 or not is_template(seed_labels[0]):
        return list(stacks)
    seed_of = {file_identity(fill_template(seed_labels[0], stack)): stack for stack in stacks}
    return [stack for stack in stacks if seed_of.get(file_identity(stack), stack) == stack]


def check_not_own_seeds(stack: Path, seed_labels: Path | None) -> None:
    if seed_labels is not None and file_identity(seed_labels) == file_identity(stack):
        raise InputError(f"The seed labels of {stack} would be the stack itself; give its label image.")


def default_prompts(stack: Path) -> Path | None:
    """The prompts file beside the stack (STACK.csv, else STACK.json), or None."""
    candidates = (fill_template(template, stack) for template in DEFAULT_PROMPTS)
    return next((path for path in candidates if path.is_file()), None)


def _prompts_for(stack: Path, index: int, stacks: Sequence[Path], prompts: Sequence[str] | None,
                 required: bool = True) -> Path | None:
    if not prompts:
        if not required:
            return None
        found = default_prompts(stack)
        if found is not None:
            return found
        candidates = [fill_template(template, stack) for template in DEFAULT_PROMPTS]
        raise InputError(
            f"No prompts for {stack}: give --prompts (or --seed-labels), or put them in {candidates[0]} (napari "
            f"Points CSV) or {candidates[1]}."
        )
    return paired_file(stack, index, stacks, prompts, "--prompts", "prompts files", "{dir}/{stem}.csv")


def paired_file(stack: Path, index: int, stacks: Sequence[Path], given: Sequence[str] | None, option: str,
                what: str, example: str) -> Path | None:
    """The file of ``stack`` among those given with ``option``: one per stack, in order, or one template (filled
    for each stack); None when none is given."""
    if not given:
        return None
    if len(given) == 1 and is_template(given[0]):
        return fill_template(given[0], stack)
    if len(given) == len(stacks):
        return Path(given[index])
    raise InputError(
        f"{len(stacks)} stacks but {len(given)} {what}: give one {option} per stack, in the same order, "
        f"or one template such as {option} '{example}'."
    )


def _out_for(stack: Path, stacks: Sequence[Path], out: str | None) -> Path:
    if out is None:
        return fill_template(DEFAULT_OUT, stack)
    if is_template(out):
        return fill_template(out, stack)
    if os.path.isdir(out) or out.endswith(("/", os.sep)):
        return Path(out) / f"{tiff_stem(stack)}_labels.tif"
    if len(stacks) > 1:
        raise InputError(
            f"{len(stacks)} stacks cannot all be written to {out}: give a folder, or a template such as "
            "--out 'results/{stem}_labels.tif'."
        )
    return Path(out)


def file_identity(path: Path) -> Path:
    """What two paths must share to be the same file (links and relative parts resolved)."""
    return path.resolve()
