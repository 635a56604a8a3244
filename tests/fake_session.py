"""A stand-in for TrackingSession with its contract and no model: a positive click gives a disc around it, a box
fills the box, a negative click cuts a disc out; propagation copies each object's mask from its first prompted
slice to every slice. ``delay`` seconds pass before each result (to test cancelling). For controller tests."""

from __future__ import annotations

import time

import numpy as np

from napari_sam2.core.frame_labels import FrameLabels

RADIUS = 4


class FakePropagation:
    def __init__(self, results, total, n_frames, frame_size):
        self._results = iter(results)
        self.total, self.n_frames, self.frame_size = total, n_frames, frame_size
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._results)

    def close(self):
        self.closed = True


class FakeSession:
    instances: list["FakeSession"] = []

    def __init__(self, stack, axis=0, model=None, device="auto", channel_axis=None, channels=None,
                 intensity_range=None, fixed_indices=None, delay=0.0, fast=False):
        self.stack, self.axis, self.model = stack, axis, model
        shape = np.shape(stack)
        self.n_frames = shape[axis]
        self.frame_size = tuple(shape[-2:])
        self.delay = delay
        self._given: dict[tuple[int, int], tuple] = {}
        self._tracked: dict[tuple[int, int], np.ndarray] = {}
        self._pending: set[int] = set()
        self.has_propagated = False
        self.closed = False
        self.calls: list[tuple] = []
        FakeSession.instances.append(self)

    # ---- the contract ----

    @property
    def obj_ids(self):
        return tuple(sorted({obj_id for _, obj_id in self._given}))

    @property
    def prompted_frames(self):
        frames: dict[int, list[int]] = {}
        for frame, obj_id in self._given:
            frames.setdefault(obj_id, []).append(frame)
        return {obj_id: tuple(sorted(f)) for obj_id, f in frames.items()}

    @property
    def pending_frames(self):
        return tuple(sorted(self._pending))

    def prompt_updates(self, prompts):
        self.calls.append(("prompt_updates", len(prompts)))
        wanted: dict[tuple[int, int], list] = {}
        for prompt in prompts:
            wanted.setdefault((prompt.frame, prompt.obj_id), []).append(prompt)
        wanted = {key: tuple(value) for key, value in wanted.items()}
        for key in [key for key in self._given if key not in wanted]:
            del self._given[key]
            self._tracked.pop(key, None)
            self._wait()
            yield FrameLabels(key[0], (key[1],), np.zeros((1, *self.frame_size), bool))
        for key, group in wanted.items():
            if self._given.get(key) == group:
                continue
            self._given[key] = group
            self._pending.add(key[0])
            mask = self._decode(group)
            self._tracked[key] = mask
            self._wait()
            yield FrameLabels(key[0], (key[1],), mask[None])

    def set_prompts(self, prompts):
        return list(self.prompt_updates(prompts))

    def frame_labels(self, frame):
        obj_ids = tuple(sorted(obj_id for f, obj_id in self._given if f == frame))
        masks = np.array([self._tracked[(frame, obj_id)] for obj_id in obj_ids], bool).reshape(-1, *self.frame_size)
        return FrameLabels(frame, obj_ids, masks)

    def remove_object(self, obj_id):
        self.calls.append(("remove_object", obj_id))
        for key in [key for key in self._given if key[1] == obj_id]:
            del self._given[key]
        for key in [key for key in self._tracked if key[1] == obj_id]:
            del self._tracked[key]

    def clear_prompts(self, frame, obj_id):
        self._given.pop((frame, obj_id), None)

    def propagate(self, direction="both", frame_range=None, obj_ids=None):
        self.calls.append(("propagate", direction, frame_range, None if obj_ids is None else tuple(obj_ids)))
        first, last = frame_range if frame_range is not None else (0, self.n_frames - 1)
        objects = sorted({obj_id for _, obj_id in self._given if obj_ids is None or obj_id in obj_ids})
        frames = list(range(first, last + 1))
        return FakePropagation(self._results(frames, objects), len(frames), self.n_frames, self.frame_size)

    def propagate_corrections(self):
        self.calls.append(("propagate_corrections", self.pending_frames))
        frames = sorted({f for p in self._pending for f in (p - 1, p, p + 1) if 0 <= f < self.n_frames})
        objects = sorted({obj_id for frame, obj_id in self._given if frame in self._pending})
        return FakePropagation(self._results(frames, objects), len(frames), self.n_frames, self.frame_size)

    def close(self):
        self.closed = True

    # ---- internals ----

    def _results(self, frames, objects):
        for frame in frames:
            masks = []
            for obj_id in objects:
                own = self._tracked.get((frame, obj_id))
                if own is None:
                    start = min(f for f, o in self._given if o == obj_id)
                    own = self._tracked[(start, obj_id)]
                masks.append(own)
            self._wait()
            yield FrameLabels(frame, tuple(objects), np.array(masks, bool).reshape(-1, *self.frame_size))
        self._pending.clear()
        self.has_propagated = True

    def _decode(self, group) -> np.ndarray:
        height, width = self.frame_size
        rows, cols = np.mgrid[:height, :width]
        mask = np.zeros((height, width), bool)
        for prompt in group:
            if prompt.box is not None:
                r0, c0, r1, c1 = prompt.box
                mask |= (rows >= min(r0, r1)) & (rows <= max(r0, r1)) & (cols >= min(c0, c1)) & (cols <= max(c0, c1))
            for (row, col), label in zip(prompt.points, prompt.labels):
                if label == 1:
                    mask |= (rows - row) ** 2 + (cols - col) ** 2 <= RADIUS**2
        for prompt in group:
            for (row, col), label in zip(prompt.points, prompt.labels):
                if label == 0:
                    mask &= (rows - row) ** 2 + (cols - col) ** 2 > RADIUS**2
        return mask

    def _wait(self):
        if self.delay:
            time.sleep(self.delay)
