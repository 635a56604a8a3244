"""A tracking session over one stack: prompts in (row, col), per-frame label results out, with the engine's Tracker
underneath. The napari widget and ``segment_stack`` share it.

A session remembers which prompts the tracker holds, so a caller can hand it the complete, current prompt list again
and again (as the widget does after each click): only what changed reaches the tracker, and after a first propagation
the frames clicked since are re-tracked outward from there (``propagate_corrections``) instead of the whole stack.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from .engine import FrameResult, Sam2Model, Tracker
from .errors import DeviceError, InputError
from .frame_labels import FrameLabels, highest_logit_wins
from .frames import StackFrames
from .model_cache import DEFAULT_MODEL, get_model
from .prompts import EnginePrompt, Prompt, check_prompts_fit, group_prompts, prompt_list

DIRECTIONS = ("both", "forward", "backward")

_OUT_OF_MEMORY = tuple(
    error for error in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if error
)


class Propagation:
    """An iterator of FrameLabels, one per frame as it is finished, with ``total``: the number of distinct frames the
    run will visit at most (a run of corrections may stop earlier, once the masks agree with the earlier ones), and
    the stack's ``n_frames`` and ``frame_size`` (H, W).

    Stop iterating (or call ``close``) to cancel: the frames already yielded are final.
    """

    def __init__(self, results: Iterator[FrameLabels], total: int, n_frames: int, frame_size: tuple[int, int]):
        self._results = results
        self.total = total
        self.n_frames = n_frames
        self.frame_size = frame_size

    def __iter__(self) -> "Propagation":
        return self

    def __next__(self) -> FrameLabels:
        return next(self._results)

    def close(self) -> None:
        self._results.close()


class TrackingSession:
    """Objects tracked through one axis of an array.

    ``stack``, ``axis``, ``channel_axis``, ``channels``, ``intensity_range`` and ``fixed_indices`` are those of
    :class:`napari_sam2.frames.StackFrames`; ``model`` a name, checkpoint path or loaded model.
    """

    def __init__(
        self,
        stack,
        axis: int = 0,
        model=DEFAULT_MODEL,
        device="auto",
        channel_axis: int | None = None,
        channels: Sequence[int] | None = None,
        intensity_range=None,
        fixed_indices=None,
        prefetch: int = 2,
    ):
        self.model: Sam2Model = get_model(model, device)
        self.frames = StackFrames(
            stack,
            axis=axis,
            channel_axis=channel_axis,
            channels=channels,
            intensity_range=intensity_range,
            image_size=self.model.image_size,
            prefetch=prefetch,
            fixed_indices=fixed_indices,
        )
        self._tracker = Tracker(self.model, self.frames)
        self._given: dict[tuple[int, int], EnginePrompt] = {}  # (frame, obj_id) -> what the tracker holds
        self._pending_frames: set[int] = set()  # frames prompted since the last propagation
        self._has_propagated = False

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.frames.original_size

    @property
    def has_propagated(self) -> bool:
        return self._has_propagated

    @property
    def pending_frames(self) -> tuple[int, ...]:
        """Frames prompted since the last propagation, in order."""
        return tuple(sorted(self._pending_frames))

    @property
    def prompted_pairs(self) -> tuple[tuple[int, int], ...]:
        """The (frame, obj_id) pairs the tracker holds prompts for."""
        return tuple(self._given)

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(self._tracker.obj_ids)

    def add_prompts(self, prompts: Iterable[Prompt]) -> list[FrameLabels]:
        """Add prompts (replacing earlier ones of the same object on the same frame); returns the mask of each
        prompted object on its frame."""
        grouped = self._checked(prompts)
        return [self._give(prompt) for prompt in grouped]

    def set_prompts(self, prompts: Iterable[Prompt]) -> list[FrameLabels]:
        """Make the tracker hold exactly ``prompts``: new or changed (frame, object) pairs are added, and if a pair
        disappeared (a point deleted) the tracker starts over with the remaining ones. Returns the masks of the
        pairs that changed (after a restart: of every pair)."""
        grouped = self._checked(prompts)
        wanted = {(prompt.frame, prompt.obj_id): prompt for prompt in grouped}
        if set(self._given) - set(wanted):
            self.restart()
        return [self._give(prompt) for key, prompt in wanted.items() if not _same(self._given.get(key), prompt)]

    def restart(self) -> None:
        """Forget every prompt and tracked mask (the frames and the model stay)."""
        self._tracker.reset()
        self._given.clear()
        self._pending_frames.clear()
        self._has_propagated = False

    def propagate(self, direction: str = "both", frame_range: tuple[int, int] | None = None) -> Propagation:
        """Track every object from its prompted frames: ``direction`` "both" (forward, then backward), "forward" or
        "backward"; ``frame_range`` (first, last), inclusive, limits the frames visited."""
        direction = _checked_direction(direction)
        if not self._given:
            raise InputError("No prompts yet: add points or a box for at least one object before propagating.")
        first, last = self._checked_range(frame_range)
        prompted = sorted({frame for frame, _ in self._given if first <= frame <= last})
        if not prompted:
            raise InputError(
                f"No prompt lies within frames {first} to {last}: add one there, or widen the range."
            )
        if direction == "forward":
            start = prompted[0]
            steps = [(start, last - start, False)]
            total = last - start + 1
        elif direction == "backward":
            start = prompted[-1]
            steps = [(start, start - first, True)]
            total = start - first + 1
        else:
            start = prompted[0]
            steps = [(start, last - start, False), (start, start - first, True)]
            total = last - first + 1
        results = (
            result
            for begin, length, reverse in steps
            for result in self._tracker.propagate(begin, length, reverse=reverse)
        )
        return Propagation(self._labelled(results), total, self.n_frames, self.frame_size)

    def propagate_corrections(self) -> Propagation:
        """Re-track, outward from each frame prompted since the last propagation, the objects prompted there.
        Each direction stops once an object's masks agree with those it had before."""
        frames = self.pending_frames
        if not frames:
            raise InputError("No corrections to propagate: click on a slice where the mask is wrong first.")

        def corrected() -> Iterator[FrameResult]:
            for frame in frames:
                yield from self._tracker.repropagate(frame)

        return Propagation(self._labelled(corrected()), self.n_frames, self.n_frames, self.frame_size)

    def close(self) -> None:
        """Release the frame reader's background thread."""
        self.frames.close()

    def __enter__(self) -> "TrackingSession":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- internals -------------------------------------------------------------------------

    def _checked(self, prompts) -> list[EnginePrompt]:
        prompts = prompt_list(prompts)
        check_prompts_fit(prompts, self.n_frames, self.frame_size)
        return group_prompts(prompts, self.frame_size)

    def _give(self, prompt: EnginePrompt) -> FrameLabels:
        with _friendly_out_of_memory():
            result = self._tracker.add_prompt(
                prompt.frame,
                prompt.obj_id,
                points=prompt.points_xy,
                labels=prompt.labels,
                box=prompt.box_xy,
                clear_old_points=True,
            )
        self._given[(prompt.frame, prompt.obj_id)] = prompt
        self._pending_frames.add(prompt.frame)
        # Only the prompted object: the others' results on this frame may be stale or not kept by the tracker.
        labels = _frame_labels(result)
        return FrameLabels(labels.frame, (prompt.obj_id,), labels.mask(prompt.obj_id)[None])

    def _labelled(self, results: Iterator[FrameResult]) -> Iterator[FrameLabels]:
        with _friendly_out_of_memory():
            for result in results:
                yield _frame_labels(result)
        # Only a run that went to its end counts: after a cancel the clicked frames are still to be propagated.
        self._pending_frames.clear()
        self._has_propagated = True

    def _checked_range(self, frame_range) -> tuple[int, int]:
        if frame_range is None:
            return 0, self.n_frames - 1
        try:
            first, last = (int(v) for v in frame_range)
        except (TypeError, ValueError):
            raise InputError(f"frame_range must be (first, last) frame numbers, got {frame_range!r}.") from None
        if not 0 <= first <= last < self.n_frames:
            raise InputError(
                f"frame_range {tuple(frame_range)} is not within the stack's frames 0 to {self.n_frames - 1} "
                "(or first is after last)."
            )
        return first, last


def _frame_labels(result: FrameResult) -> FrameLabels:
    masks = highest_logit_wins(result.mask_logits.numpy())
    return FrameLabels(int(result.frame_idx), tuple(int(i) for i in result.obj_ids), masks)


def _same(given: EnginePrompt | None, wanted: EnginePrompt) -> bool:
    if given is None:
        return False
    return all(
        _equal_arrays(getattr(given, name), getattr(wanted, name)) for name in ("points_xy", "labels", "box_xy")
    )


def _equal_arrays(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _checked_direction(direction) -> str:
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}.")
    return direction


class _friendly_out_of_memory:
    """Turn the GPU's out-of-memory error into a DeviceError that says what to do."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is not None and _OUT_OF_MEMORY and issubclass(exc_type, _OUT_OF_MEMORY):
            raise DeviceError(
                "The GPU ran out of memory. Choose a smaller model (e.g. sam2.1_hiera_tiny), close other programs "
                "using the GPU, or run on the CPU (device 'cpu')."
            ) from exc
        return False
