"""Time-lapse cell tracking on a TrackingSession: seed objects (prompts, a label image or SAM2's automatic masks on one
frame), track them all, follow divisions, and build the lineage.

Divisions: SAM2 keeps tracking a dividing cell as one object whose mask covers both daughters. When an object's mask
splits into two lasting parts (core.lineage.find_divisions), the mother ends on the frame before, and each part
becomes a new object, prompted by its mask on the division frame and tracked forward; its parent is the mother.
Daughters that divide in turn are handled the same way, round after round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generator, Sequence

import numpy as np

from ..errors import InputError
from .frame_labels import LABEL_DTYPE, FrameLabels
from .lineage import Division, Lineage, build_lineage, find_divisions
from .prompts import Prompt
from .tracking import TrackingSession

# Division rounds at most: each round lets the daughters of the previous one divide (2^8 cells from one is plenty).
MAX_DIVISION_ROUNDS = 8


@dataclass
class TimelapseTracks:
    """What a time-lapse run gives: ``labels`` (T, H, W) int32, label value = object id (daughters get new ids
    above every seed's); ``lineage`` (core.lineage.Lineage: napari Tracks data and graph, segments, flags);
    ``divisions``: mother id -> (division frame, (daughter ids)); a daughter the tracker lost at once has no pixel
    and no track."""

    labels: np.ndarray
    lineage: Lineage
    divisions: dict[int, tuple[int, tuple[int, int]]] = field(default_factory=dict)


def automatic_seeds(session: TrackingSession, frame: int, progress: Callable[[int, int], None] | None = None,
                    **options) -> np.ndarray:
    """SAM2's automatic mask generator on ``frame`` as an (H, W) int32 label image (engine.auto_masks: a point grid,
    batched decoding, predicted-IoU and stability filtering, non-maximum suppression; ``options`` are its
    parameters, e.g. points_per_side, pred_iou_thresh, stability_score_thresh, min_mask_region_area). InputError
    if no object is found."""
    from ..engine.auto_masks import AutomaticMaskGenerator, to_label_image

    check_auto_options(options)
    if not 0 <= frame < session.n_frames:
        raise InputError(f"The seed frame {frame} is not a frame of the stack (0 to {session.n_frames - 1}).")
    generator = AutomaticMaskGenerator(session.model, **options)
    masks = generator.generate(session.frames.frame_rgb(frame), progress=progress)
    labels = to_label_image(masks, session.frame_size)
    if not labels.any():
        raise InputError(
            f"No object found on frame {frame}: lower the IoU and stability thresholds (pred_iou_thresh and "
            "stability_score_thresh; --pred-iou-thresh and --stability-score-thresh on the command line; IoU and "
            "Stability in the widget), or seed from labels or clicks."
        )
    return labels.astype(LABEL_DTYPE, copy=False)


def check_auto_options(options: dict) -> None:
    """InputError for a name that is not a parameter of the automatic mask generator (a typo would otherwise fail
    only once the model is loaded)."""
    import inspect

    from ..engine.auto_masks import AutomaticMaskGenerator

    known = [name for name in inspect.signature(AutomaticMaskGenerator).parameters if name != "model"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"Unknown automatic seeding option(s) {unknown}: the options are {', '.join(known)}.")


def track_timelapse(session: TrackingSession, prompts: Sequence[Prompt], *, divisions: bool = True,
                    min_division_frames: int = 3, progress: Callable[[int, int], None] | None = None,
                    on_frame: Callable[[np.ndarray, int], None] | None = None) -> TimelapseTracks:
    """Track every prompted object through the session's frames ("both" ways from its prompts), then, with
    ``divisions``, split each object whose mask divides into two parts lasting ``min_division_frames`` frames into
    two daughter objects tracked forward from there. ``progress(frames_done, frames_total)`` after each frame (the
    total grows when a division adds a run); ``on_frame(labels, frame)`` after each frame's labels are written
    (``labels`` is the run's (T, H, W) array, updated in place: e.g. to refresh a viewer). Stop early by raising in
    a callback: nothing is returned then."""
    labels = np.zeros((session.n_frames, *session.frame_size), LABEL_DTYPE)
    counter = _Progress(progress)
    steps = timelapse_steps(session, prompts, divisions=divisions, min_division_frames=min_division_frames,
                            labels=labels)
    while True:
        try:
            item = next(steps)
        except StopIteration as finished:
            return finished.value
        if isinstance(item, RunPlanned):
            counter.add(item.frames)
            continue
        if not isinstance(item, Ended):
            counter.frame_done(item.frame)
        if on_frame is not None:
            on_frame(labels, item.frame)


@dataclass(frozen=True)
class Ended(FrameLabels):
    """A divided mother's empty mask on a frame from her division on: she leaves that frame to her daughters."""


@dataclass(frozen=True)
class RunPlanned:
    """A tracking run of ``timelapse_steps`` starts: it visits at most ``frames`` frames."""

    frames: int


def timelapse_steps(session: TrackingSession, prompts: Sequence[Prompt], *, divisions: bool = True,
                    min_division_frames: int = 3,
                    labels: np.ndarray | None = None) -> Generator[FrameLabels | RunPlanned, None, TimelapseTracks]:
    """``track_timelapse`` one step at a time, for callers that write results themselves (the napari widget): yields
    a RunPlanned as each run starts and the FrameLabels of each frame (the objects it names replace their own
    pixels; an Ended, a mother's empty mask after her division, clears her from that frame); returns the
    TimelapseTracks.
    ``prompts`` are added to the session first (none: the session's prompts as they are). ``labels``: the
    (T, H, W) int32 array the results are written into before each is yielded (default: a new one)."""
    if prompts:
        session.add_prompts(prompts)
    if labels is None:
        labels = np.zeros((session.n_frames, *session.frame_size), LABEL_DTYPE)
    yield from _run(session.propagate("both"), labels)
    found: dict[int, tuple[int, tuple[int, int]]] = {}
    if divisions:
        yield from _follow_divisions(session, labels, found, min_division_frames)
    present = set(np.unique(labels).tolist())
    # A daughter SAM2 lost at once (no pixel on any frame) is no track.
    parents = {daughter: mother for mother, (_, daughters) in found.items() for daughter in daughters
               if daughter in present and mother in present}
    return TimelapseTracks(labels, build_lineage(labels, parents, infer_divisions=False), found)


def _follow_divisions(session, labels, found: dict, min_frames: int):
    seen: set[int] = set()
    next_id = int(labels.max()) + 1
    for _ in range(MAX_DIVISION_ROUNDS):
        new = {}
        for division in find_divisions(labels, min_frames=min_frames):  # by frame: a label's first division only
            if division.label not in seen:
                new.setdefault(division.label, division)
        if not new:
            return
        for division in new.values():
            seen.add(division.label)
            daughters = (next_id, next_id + 1)
            if (yield from _divide(session, labels, division, daughters)):
                found[division.label] = (division.frame, daughters)
                next_id += 2


def _divide(session, labels, division: Division, daughters: tuple[int, int]):
    """The mother ends before the division frame; each part is a daughter object tracked forward from it. Returns
    False (nothing changed) where the division cannot be followed: on the mother's first frame (nothing to end), or
    the mother has prompts from there on (the user says it is one object)."""
    frame, mother = division.frame, division.label
    first = int(np.flatnonzero((labels == mother).reshape(len(labels), -1).any(axis=1))[0])
    if frame <= first or any(f >= frame for f in session.prompted_frames.get(mother, ())):
        return False
    session.end_object(mother, frame - 1)
    for t in range(frame, len(labels)):
        if (labels[t] == mother).any():
            cleared = Ended(t, (mother,), np.zeros((1, *labels.shape[1:]), bool))
            _write_objects(labels[t], cleared)
            yield cleared
    session.add_prompts([Prompt(frame, obj_id, mask=part) for obj_id, part in zip(daughters, division.parts)])
    yield from _run(session.propagate("forward", frame_range=(frame, session.n_frames - 1), obj_ids=daughters), labels)
    return True


def _run(run, labels: np.ndarray):
    yield RunPlanned(run.total)
    for result in run:
        _write_objects(labels[result.frame], result)
        yield result


def _write_objects(frame_labels: np.ndarray, result: FrameLabels) -> None:
    """The result's objects replace their own earlier pixels on the frame; other objects' pixels stay."""
    for obj_id, mask in zip(result.obj_ids, result.masks):
        frame_labels[frame_labels == obj_id] = 0
        frame_labels[mask] = obj_id


class _Progress:
    """Frames done over the frames planned, across runs (a run's frame counts once however often it comes)."""

    def __init__(self, callback):
        self.callback = callback
        self.done = self.total = 0
        self._run_frames: set[int] = set()

    def add(self, frames: int) -> None:
        self.total = self.done + frames  # the run before may have visited fewer frames than planned
        self._run_frames = set()

    def frame_done(self, frame: int) -> None:
        if frame not in self._run_frames:
            self._run_frames.add(frame)
            self.done += 1
            if self.callback is not None:
                self.callback(self.done, self.total)
