"""Segment TIFF stacks on disk: pair each stack with its prompts file and its output, check everything before the
first model is loaded, track, and write the labels with the stack's axes and pixel sizes.

The command line's ``segment`` is a thin layer over this module.
"""

from __future__ import annotations

import glob
import itertools
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..core.axes import StackAxes, stack_axes
from ..core.channels import choose_channels
from ..core.frame_labels import check_ids_fit, smallest_label_dtype
from ..core.prompts import Prompt, check_prompts_fit
from ..errors import InputError
from ..io.prompt_files import Position, read_prompt_file
from ..io.tiff import TiffStack, read_tiff, tiff_stem, write_labels_tiff

DEFAULT_PROMPTS = ("{dir}/{stem}.csv", "{dir}/{stem}.json")
DEFAULT_OUT = "{dir}/{stem}_labels.tif"


@dataclass(frozen=True)
class FileJob:
    """One stack, the file with its prompts, and where its labels go."""

    stack: Path
    prompts: Path
    out: Path


@dataclass(frozen=True)
class PreparedStack:
    """A stack read (memory-mapped where possible) with its prompts checked, ready to segment."""

    job: FileJob
    image: TiffStack
    axes: StackAxes
    channels: tuple[int, ...] | None
    runs: dict[Position, list[Prompt]]  # one tracking run per position of the further axes

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


def plan_jobs(stacks: Sequence[Path], prompts: Sequence[str] | None, out: str | None, overwrite: bool) -> list[FileJob]:
    """Pair every stack with its prompts file and output path.

    ``prompts``: one path per stack (in order), or one template such as ``{dir}/{stem}.csv``, or None for the
    defaults (``STACK.csv`` or ``STACK.json`` beside each stack). ``out``: a file (one stack), a folder (existing, or
    ending in a path separator), a template such as ``results/{stem}_labels.tif``, or None for
    ``STACK_labels.tif`` beside each stack. Placeholders: {stem} (name without .tif / .ome.tif), {name}, {dir}.
    Missing output folders are made when the labels are written. No output may overwrite an existing file without
    ``overwrite``, a stack, or another stack's output.
    """
    jobs = [FileJob(stack, _prompts_for(stack, index, stacks, prompts), _out_for(stack, stacks, out))
            for index, stack in enumerate(stacks)]
    inputs = {_identity(job.stack) for job in jobs}
    seen: dict[Path, Path] = {}
    for job in jobs:
        identity = _identity(job.out)
        if identity in inputs:
            raise InputError(f"The output {job.out} is one of the input stacks; choose another --out.")
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


def prepare_stack(job: FileJob, axis=None, channels: Sequence[int] | None = None, pixels: bool = True) -> PreparedStack:
    """Read the stack's layout and its prompts and check that they fit together, without loading any model.

    ``pixels=False`` reads only the layout (see ``read_tiff``): to check many stacks before segmenting any, then
    ``with_pixels`` when a stack's turn comes.
    """
    image = read_tiff(job.stack, pixels=pixels)
    axes, chosen = stack_layout(job.stack, image, axis, channels)
    image = _laid_out(image, axes)
    runs = read_prompt_file(job.prompts, axes)
    for prompts in runs.values():
        try:
            check_prompts_fit(prompts, axes.n_frames, axes.frame_size)
        except InputError as error:
            raise InputError(f"{job.prompts}: {error}") from None
    return PreparedStack(job, image, axes, chosen, runs)


def with_pixels(stack: PreparedStack) -> PreparedStack:
    """The stack checked by ``prepare_stack(..., pixels=False)``, now with its pixels (memory-mapped where possible)."""
    return replace(stack, image=_laid_out(read_tiff(stack.job.stack), stack.axes))


def _laid_out(image: TiffStack, axes: StackAxes) -> TiffStack:
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
    largest = max(prompt.obj_id for prompts in stack.runs.values() for prompt in prompts)
    labels = np.zeros(axes.label_shape, smallest_label_dtype(largest, smallest=np.uint16))
    frame_position = axes.label_axes.index(axes.frame_axis)
    # Runs start one after the other (each holds its own frames and memories); the total counts every frame of
    # a run not started yet, and shrinks to the run's own count once it starts.
    run_totals = {position: stack.n_frames for position in stack.runs}
    done = 0
    for position, prompts in stack.runs.items():
        run = stream_stack(
            stack.image.data, prompts, axis=axes.frame_axis, model=model, device=device, direction=direction,
            channel_axis=axes.channel_axis, channels=stack.channels, intensity_range=intensity_range,
            fixed_indices=dict(position) or None, preprocessing=preprocessing,
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
    image = _laid_out(image, axes)
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


def _fill(template: str, stack: Path) -> Path:
    try:
        return Path(template.format(stem=tiff_stem(stack), name=stack.name, dir=str(stack.parent)))
    except (KeyError, IndexError, ValueError) as error:
        raise InputError(
            f"Cannot use {template!r} as a file name template ({error}); its placeholders may be {{stem}}, {{name}} "
            "and {dir}."
        ) from None


def _is_template(text: str) -> bool:
    return "{" in text


def _prompts_for(stack: Path, index: int, stacks: Sequence[Path], prompts: Sequence[str] | None) -> Path:
    if not prompts:
        candidates = [_fill(template, stack) for template in DEFAULT_PROMPTS]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise InputError(
            f"No prompts for {stack}: give --prompts, or put them in {candidates[0]} (napari Points CSV) or "
            f"{candidates[1]}."
        )
    if len(prompts) == 1 and _is_template(prompts[0]):
        return _fill(prompts[0], stack)
    if len(prompts) == len(stacks):
        return Path(prompts[index])
    raise InputError(
        f"{len(stacks)} stacks but {len(prompts)} prompts files: give one --prompts per stack, in the same order, "
        "or one template such as --prompts '{dir}/{stem}.csv'."
    )


def _out_for(stack: Path, stacks: Sequence[Path], out: str | None) -> Path:
    if out is None:
        return _fill(DEFAULT_OUT, stack)
    if _is_template(out):
        return _fill(out, stack)
    if os.path.isdir(out) or out.endswith(("/", os.sep)):
        return Path(out) / f"{tiff_stem(stack)}_labels.tif"
    if len(stacks) > 1:
        raise InputError(
            f"{len(stacks)} stacks cannot all be written to {out}: give a folder, or a template such as "
            "--out 'results/{stem}_labels.tif'."
        )
    return Path(out)


def _identity(path: Path) -> Path:
    return path.resolve()
