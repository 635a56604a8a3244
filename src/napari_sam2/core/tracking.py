"""A tracking session over one stack: prompts in (row, col), per-frame label results out, with the engine's Tracker
underneath. The napari widget and ``segment_stack`` share it.

Results depend on the prompts alone, never on the order of actions. Every (frame, object) pair with prompts is a
conditioning frame of that object, decoded from those prompts only (no memory, no earlier mask: what Meta's
predictor does with a first prompt on an untracked frame), and a full propagation forgets what was tracked before
and tracks each object outward from its own prompted frames. So a caller can hand the session the complete,
current prompt list again and again (as the widget does after each click): only the pairs that changed reach the
tracker, a deleted point re-decodes only its own pair, and the same prompts always give the same labels.

After a first propagation, ``propagate_corrections`` re-tracks only what the prompts changed since: outward from
each slice prompted since then, for the objects prompted there, stopping where the masks agree with before
(objects never tracked, or whose prompts were deleted, are tracked afresh).
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

from ..engine import FrameResult, Sam2Model, Tracker
from ..engine.feature_cache import FeatureCache
from ..engine.track_cache import TrackCache
from ..errors import InputError, translate_out_of_memory
from ..models.loaded import DEFAULT_MODEL, get_model, preprocessing_for
from .feature_store import precompute_features, shared_feature_cache
from .frame_labels import FrameLabels
from .frames import StackFrames
from .prompts import DIRECTIONS, EnginePrompt, Prompt, check_prompts_fit, group_prompts, prompt_list
from .track_store import shared_track_cache


class Propagation:
    """An iterator of FrameLabels, one per frame as it is finished, with ``total``: the number of distinct frames the
    run will visit at most (a run of corrections may stop earlier, once the masks agree with the earlier ones), and
    the stack's ``n_frames`` and ``frame_size`` (H, W).

    A frame can come twice in one run: in a "both" run, a frame between two objects' first prompted frames comes
    with the objects that reach it going forward, and again with all objects going backward. Each FrameLabels holds
    the final masks of the objects it names.

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
    :class:`napari_sam2.core.frames.StackFrames`; ``model`` a name, checkpoint path or loaded model.
    ``preprocessing``: the model's input preprocessing (a Preprocessing or "sam2" / "micro_sam"); by default the
    registry's profile for a registry name (e.g. "hvit_t_cells" -> "micro_sam"), else SAM2's.
    ``feature_cache``: where image features are kept and looked up (engine.feature_cache): by default the
    process-wide cache over the on-disk store (core.feature_store.shared_feature_cache), so clicks, corrections,
    further runs and other sessions on the same frames never run the image encoder twice; None for none.
    ``track_cache``: where each object's passes are kept and looked up (engine.track_cache): by default the
    process-wide cache (core.track_store.shared_track_cache), so a run with the same prompts on the same frames, in
    this session or another, replays what was tracked instead of tracking it again (a second run, an object added
    to others already tracked); None for none.
    ``fast``: the model at a 512-px input instead of 1024, in bfloat16 on a CPU with native bfloat16
    (models.loaded.fast_variant): 6-15x quicker on a CPU, coarser masks.
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
        preprocessing=None,
        feature_cache: FeatureCache | None | str = "shared",
        fast: bool = False,
        track_cache: TrackCache | None | str = "shared",
    ):
        preprocessing = preprocessing_for(model, preprocessing)
        self.model: Sam2Model = get_model(model, device, fast=fast)
        self.frames = StackFrames(
            stack,
            axis=axis,
            channel_axis=channel_axis,
            channels=channels,
            intensity_range=intensity_range,
            image_size=self.model.image_size,
            prefetch=prefetch,
            fixed_indices=fixed_indices,
            preprocessing=preprocessing,
            pin_memory=self.model.device.type == "cuda",
        )
        if feature_cache == "shared":
            feature_cache = shared_feature_cache()
        self.feature_cache: FeatureCache | None = feature_cache
        if track_cache == "shared":
            track_cache = shared_track_cache()
        self._tracker = Tracker(self.model, _ModelFrames(self.frames), feature_cache=feature_cache,
                                track_cache=track_cache)
        self._given: dict[tuple[int, int], EnginePrompt] = {}  # (frame, obj_id) -> what the tracker holds
        self._changed: set[tuple[int, int]] = set()  # pairs prompted or changed since the last finished run
        self._stale: set[int] = set()  # objects with prompts deleted since their last run: re-track them whole
        self._tracked: set[int] = set()  # objects a finished run tracked
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
        """Frames whose prompts changed since the last finished propagation, in order."""
        stale = {frame for frame, obj_id in self._given if obj_id in self._stale}
        return tuple(sorted({frame for frame, _ in self._changed} | stale))

    @property
    def prompted_pairs(self) -> tuple[tuple[int, int], ...]:
        """The (frame, obj_id) pairs the tracker holds prompts for."""
        return tuple(self._given)

    @property
    def prompted_frames(self) -> dict[int, tuple[int, ...]]:
        """obj_id -> the frames where it has prompts, in order."""
        frames: dict[int, list[int]] = {}
        for frame, obj_id in sorted(self._given):
            frames.setdefault(obj_id, []).append(frame)
        return {obj_id: tuple(frames[obj_id]) for obj_id in sorted(frames)}

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(self._tracker.obj_ids)

    def add_prompts(self, prompts: Iterable[Prompt]) -> list[FrameLabels]:
        """Add prompts (replacing earlier ones of the same object on the same frame); returns the mask of each
        prompted object on its frame."""
        return [self._give(prompt) for prompt in self._checked(prompts)]

    def set_prompts(self, prompts: Iterable[Prompt]) -> list[FrameLabels]:
        """Make the tracker hold exactly ``prompts``. Returns a FrameLabels per (frame, object) pair that changed:
        a new or changed pair's mask decoded from its prompts, a removed pair's all-False mask."""
        return list(self.prompt_updates(prompts))

    def prompt_updates(self, prompts: Iterable[Prompt]) -> Iterator[FrameLabels]:
        """``set_prompts`` one changed pair at a time (stop iterating to stop between pairs: the pairs not reached
        yet keep their earlier prompts)."""
        wanted = {(prompt.frame, prompt.obj_id): prompt for prompt in self._checked(prompts)}
        for frame, obj_id in [key for key in self._given if key not in wanted]:
            self.clear_prompts(frame, obj_id)
            yield FrameLabels(frame, (obj_id,), np.zeros((1, *self.frame_size), bool))
        for key, prompt in wanted.items():
            if not _same(self._given.get(key), prompt):
                yield self._give(prompt)

    def frame_labels(self, frame: int) -> FrameLabels:
        """The masks of the objects prompted on ``frame``, from those prompts (overlaps: highest logit wins)."""
        obj_ids = tuple(obj_id for f, obj_id in sorted(self._given) if f == frame)
        if not obj_ids:
            return FrameLabels(frame, (), np.zeros((0, *self.frame_size), bool))
        return _frame_labels(self._tracker.result_on(frame, obj_ids), self.frame_size)

    def clear_prompts(self, frame: int, obj_id: int) -> None:
        """Forget ``obj_id``'s prompts on ``frame`` (nothing happens where it has none)."""
        if self._given.pop((frame, obj_id), None) is None:
            return
        self._tracker.clear_prompt(frame, obj_id)
        self._changed.discard((frame, obj_id))
        if obj_id in self._tracker.obj_ids:
            self._stale.add(obj_id)
        else:
            self._forget(obj_id)

    def remove_object(self, obj_id: int) -> None:
        """Forget an object: its prompts on every frame and what it tracked."""
        for frame, other in list(self._given):
            if other == obj_id:
                del self._given[(frame, other)]
                self._changed.discard((frame, other))
        if obj_id in self._tracker.obj_ids:
            self._tracker.remove_object(obj_id)
        self._forget(obj_id)

    def end_object(self, obj_id: int, last_frame: int) -> None:
        """Forget what ``obj_id`` tracked after ``last_frame``: a cell that divided there, its daughters tracked as
        objects of their own (core.timelapse). Its prompts stay; a later full propagation tracks it whole again."""
        self._tracker.end_track(obj_id, last_frame)

    def restart(self) -> None:
        """Forget every prompt and tracked mask (the frames and the model stay)."""
        self._tracker.reset()
        self._given.clear()
        self._changed.clear()
        self._stale.clear()
        self._tracked.clear()
        self._has_propagated = False

    def propagate(
        self, direction: str = "both", frame_range: tuple[int, int] | None = None, obj_ids: Sequence[int] | None = None
    ) -> Propagation:
        """Track objects (default: all) from their prompts alone, forgetting what they tracked before: the same
        prompts always give the same labels. ``direction`` "both": each object forward from its first prompted
        frame, then backward from it; "forward": from its first prompted frame on; "backward": from its last
        prompted frame back. ``frame_range`` (first, last), inclusive, limits the frames visited; an object with no
        prompt inside it is not tracked. Objects are independent: one first prompted on frame 30 is tracked
        outward from frame 30, whatever the other objects' frames."""
        direction = _checked_direction(direction)
        if not self._given:
            raise InputError("No prompts yet: add points, a box or a mask for at least one object before propagating.")
        first, last = self._checked_range(frame_range)
        chosen = self._checked_objects(obj_ids)
        in_range = {(frame, obj_id) for frame, obj_id in self._given if obj_id in chosen and first <= frame <= last}
        frames = {frame for frame, _ in in_range}
        chosen = {obj_id for _, obj_id in in_range}
        if not frames:
            raise InputError(f"No prompt lies within frames {first} to {last}: add one there, or widen the range.")
        if direction == "forward":
            total = last - min(frames) + 1
        elif direction == "backward":
            total = max(frames) - first + 1
        else:
            total = last - first + 1
        results = self._tracker.propagate_from_prompts(direction, first, last, obj_ids=sorted(chosen))
        return Propagation(self._labelled(results, chosen), total, self.n_frames, self.frame_size)

    def propagate_corrections(self) -> Propagation:
        """Re-track what the prompts changed since the last finished propagation: outward from each frame prompted
        since, the objects prompted there, each direction stopping once an object's masks agree with those it had
        before; objects never tracked, or whose prompts were deleted since, are tracked afresh ("both")."""
        afresh = {obj_id for _, obj_id in self._given if obj_id not in self._tracked} | self._stale
        corrected: dict[int, list[int]] = {}
        for frame, obj_id in sorted(self._changed):
            if obj_id not in afresh:
                corrected.setdefault(frame, []).append(obj_id)
        if not afresh and not corrected:
            raise InputError("No corrections to propagate: click on a slice where the mask is wrong first.")

        def results() -> Iterator[FrameResult]:
            if afresh:
                yield from self._tracker.propagate_from_prompts("both", obj_ids=sorted(afresh))
            for frame, obj_ids in corrected.items():
                yield from self._tracker.repropagate(frame, obj_ids=obj_ids)

        chosen = afresh | {obj_id for obj_ids in corrected.values() for obj_id in obj_ids}
        return Propagation(self._labelled(results(), chosen), self.n_frames, self.n_frames, self.frame_size)

    def precompute_features(self) -> Iterator[int]:
        """Compute the image features of every frame not yet on disk and store them there
        (core.feature_store.precompute_features: yields each frame index as it is done; stop iterating to stop, the
        next call resumes). Later clicks, runs and sessions on these frames, in this process or another, skip the
        image encoder."""
        cache = self.feature_cache if self.feature_cache is not None else shared_feature_cache()
        with translate_out_of_memory(self.model.device):
            for index, key in precompute_features(self.model, _ModelFrames(self.frames), cache):
                self._tracker.feature_keys[index] = key
                yield index

    def cached_frames(self) -> int:
        """How many frames' features are cached (in memory or on disk), among the frames whose model input this
        session has seen (a frame never read counts as not cached)."""
        cache = self.feature_cache
        if cache is None:
            return 0
        return sum(key in cache for key in self._tracker.feature_keys.values())

    def close(self) -> None:
        """Release the frame reader's background thread and the tracker's temporary memory file."""
        self._tracker.close()
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

    def _checked_objects(self, obj_ids) -> set[int]:
        known = {obj_id for _, obj_id in self._given}
        if obj_ids is None:
            return known
        chosen = {int(obj_id) for obj_id in obj_ids}
        unknown = sorted(chosen - known)
        if unknown:
            raise InputError(f"Object(s) {unknown} have no prompts (objects with prompts: {sorted(known)}).")
        return chosen

    def _give(self, prompt: EnginePrompt) -> FrameLabels:
        result = self._redecode(prompt)
        key = (prompt.frame, prompt.obj_id)
        self._given[key] = prompt
        self._changed.add(key)
        return _frame_labels(result, self.frame_size)

    def _redecode(self, prompt: EnginePrompt) -> FrameResult:
        with translate_out_of_memory(self.model.device):
            return self._tracker.set_prompt(
                prompt.frame, prompt.obj_id, points=prompt.points_xy, labels=prompt.labels, box=prompt.box_xy,
                mask=self._model_frame_mask(prompt.mask),
            )

    def _model_frame_mask(self, mask: np.ndarray | None) -> np.ndarray | None:
        """A frame-sized mask on the frame the model sees (zero-padded below and to the right when the
        preprocessing pads, as the image is)."""
        if mask is None:
            return None
        height, width = self.frames.model_frame_size
        return np.pad(mask, ((0, height - mask.shape[0]), (0, width - mask.shape[1])))

    def _forget(self, obj_id: int) -> None:
        self._stale.discard(obj_id)
        self._tracked.discard(obj_id)

    def _labelled(self, results: Iterator[FrameResult], obj_ids: set[int]) -> Iterator[FrameLabels]:
        """The run's objects only: others' outputs in a result (kept from earlier runs) decide overlaps, and their
        labels stay as they are."""
        with translate_out_of_memory(self.model.device):
            for result in results:
                yield _frame_labels(result, self.frame_size).only(obj_ids)
        # Only a run that went to its end counts: after a cancel or a failure the changes are still to propagate.
        self._changed = {key for key in self._changed if key[1] not in obj_ids}
        self._stale -= obj_ids
        self._tracked |= obj_ids
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


def _frame_labels(result: FrameResult, frame_size: tuple[int, int]) -> FrameLabels:
    """The result's masks cropped to the frame (the tracker sees a padded square when the preprocessing pads)."""
    h, w = frame_size
    owner = result.owner[:h, :w].numpy()  # the highest logit above 0 wins (frame_labels.highest_logit_wins)
    masks = owner[None] == np.arange(1, len(result.obj_ids) + 1, dtype=owner.dtype)[:, None, None]
    return FrameLabels(int(result.frame_idx), tuple(int(i) for i in result.obj_ids), masks)


class _ModelFrames:
    """The frames as the engine's Tracker sees them: the same model inputs, with ``original_size`` the frame size the
    model is given (``StackFrames.model_frame_size``: the padded (L, L) square when the preprocessing pads), so the
    tracker maps clicks and returns masks in that square."""

    def __init__(self, frames: StackFrames):
        self._frames = frames

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int):
        return self._frames[index]

    @property
    def original_size(self) -> tuple[int, int]:
        return self._frames.model_frame_size


def _same(given: EnginePrompt | None, wanted: EnginePrompt) -> bool:
    if given is None:
        return False
    return all(
        _equal_arrays(getattr(given, name), getattr(wanted, name))
        for name in ("points_xy", "labels", "box_xy", "mask")
    )


def _equal_arrays(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _checked_direction(direction) -> str:
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}.")
    return direction
