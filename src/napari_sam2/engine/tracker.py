"""Tracker: SAM2's video predictor over any sequence of frames (a z-stack or a time-lapse).

Semantics follow Meta's SAM2VideoPredictor (Dec 2024): every object is tracked on its own
terms (its own prompts, conditioning frames and memory); prompts on a frame never tracked
for that object make it a conditioning frame; a click on an already tracked frame is a
correction that is not a conditioning frame, and the next propagation pass overwrites it
(use `repropagate` to make a correction stick); `reverse` passes; objects may be added at
any time. `add_prompt`, `add_mask` and `propagate` reproduce Meta's outputs at any length.

Beside Meta's calls, a history-free way to work (what the napari widget and the scripting API
use): `set_prompt` makes a frame a conditioning frame decoded from its own prompts alone (no
memory, no earlier mask), `clear_prompt` forgets one, and `propagate_from_prompts` forgets
earlier tracking and tracks each object outward from its own prompted frames, so the same
prompts always give the same masks, whatever was clicked and propagated before.

Where it departs from Meta's implementation, on purpose:
- Frames are read from `frames` when needed and dropped; image features are kept for the last two frames and, with
  a `feature_cache`, for as many frames as the cache holds, shared with other trackers. Every tracked frame's memory
  and mask are kept, as Meta keeps them, but only the `keep_frames` most recently used per object stay in memory:
  the others go to a temporary file and are read back, bit for bit, when a pass needs them. Host memory stays flat
  however long the stack, and results are exact.
- All objects share one image-encoder pass per frame; memory attention, the mask decoder
  and the memory encoder run batched over objects whose memories have the same layout.
- Small holes are filled everywhere (no CUDA extension needed).

Where the parts live: per-object state in object_state.py, Meta's memory-bank rule in memory_bank.py, FrameResult in
results.py, argument checks in validation.py; this module holds the calls and the frame-by-frame passes.

Coordinates: prompts are (x, y) = (column, row) in pixels of the original frames, 0 at the left / top edge of the
first pixel (as Meta's predictors take them); results are masks at the original size (H, W).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .feature_cache import FeatureCache, encode_image, feature_key
from .host_memory import outside_heap, release_freed_host_memory
from .memory_bank import AttendedMemory, gather_memory
from .model import DecoderOutput, FrameFeatures, Sam2Model
from .object_state import ObjectOutput, ObjectState
from .postprocess import fill_holes
from .results import FrameResult, frame_result
from .spill_store import SpillStore
from .tensor_cache import nbytes
from .track_cache import TrackCache, pack, pass_key, pass_prefix, unpack
from .validation import check_frame_index, check_obj_id, mask_prompt_to_model_space, prompt_to_model_space

__all__ = ["Tracker", "FrameResult"]


class Tracker:
    """Segment and track objects through `frames` from point / box / mask prompts (Meta's SAM2VideoPredictor with
    its inference state inside).

    model: a loaded Sam2Model (its device is the tracker's device).
    frames: any object with `len(frames)` >= 1, `frames.original_size` -> (H, W) in pixels and `frames[i]` -> float32
        tensor (3, S, S), S = model.image_size, the normalised model input of frame i (engine.preprocess.model_input).
    Object ids are any integers; frame indices are 0 to len(frames) - 1. Every method raises InputError for a bad
    argument (unknown object, frame outside the stack, malformed prompt).
    """

    def __init__(self, model: Sam2Model, frames, *, keep_frames: Optional[int] = 16,
                 offload_memory_to_cpu: bool = False, non_overlap_masks: bool = False,
                 fill_hole_area: Optional[int] = None, batch_objects: Optional[bool] = None,
                 memory_folder: Optional[str] = None, feature_cache: Optional[FeatureCache] = None,
                 track_cache: Optional[TrackCache] = None):
        """keep_frames: tracked frames per object whose memories and masks stay in memory (at least
        num_maskmem - 1); the others are written to a temporary file in `memory_folder` (default: the
        system's temporary folder) and read back when needed, with the same results. None keeps all in
        memory: no disk use, but ~0.75 MiB more per frame and object at 1024 px (0.5 MiB memory + 0.25 MiB
        mask), as Meta's predictor does.

        batch_objects: track objects with the same memory layout in one batch. None (default): on a GPU
        only. On CPU one object at a time is faster (4 objects at 512 px: 24 s vs 29 s for 10 frames) and
        reproduces Meta's predictor bit for bit (a batch of B rows takes other matrix kernels than Meta's one
        row, which round differently).

        feature_cache: where image features are looked up before the image encoder runs and kept after (shared by
        trackers, sessions and, with a disk store, processes: engine.feature_cache); None keeps the last two
        frames' only.

        track_cache: where each object's passes are kept and looked up (engine.track_cache): a pass this or another
        tracker already made with the same prompts, history and frames is replayed, not computed; None computes
        every pass."""
        if len(frames) < 1:
            raise InputError("The stack has no frames to track.")
        cfg = model.config
        self.model = model
        self.frames = frames
        self.num_frames = len(frames)
        self.video_hw = tuple(int(s) for s in frames.original_size)
        self.keep_frames = None if keep_frames is None else max(int(keep_frames), cfg.num_maskmem - 1)
        self.non_overlap_masks = non_overlap_masks
        self.fill_hole_area = cfg.fill_hole_area if fill_hole_area is None else fill_hole_area
        self.device = model.device
        self.batch_objects = self.device.type != "cpu" if batch_objects is None else bool(batch_objects)
        self.storage_device = torch.device("cpu") if offload_memory_to_cpu else self.device
        self._objects: "OrderedDict[int, ObjectState]" = OrderedDict()
        self._features: "OrderedDict[int, FrameFeatures]" = OrderedDict()
        self._decoder_images: dict = {}  # frame -> Sam2Model.decoder_image_side of its memory-free features
        self._maskmem_pos: Optional[torch.Tensor] = None
        self._spill = SpillStore(self.keep_frames, folder=memory_folder)
        self.feature_cache = feature_cache
        self.track_cache = track_cache
        self.feature_keys: dict = {}  # frame -> its feature-cache key, once read (the frames never change)

    # ---- public API ----------------------------------------------------------------------
    @property
    def obj_ids(self) -> list[int]:
        """The objects' ids, in the order they were first prompted (the row order of every FrameResult)."""
        return list(self._objects)

    @property
    def track_settings(self) -> str:
        """What besides prompts and frames decides a pass's outputs (part of every track-cache key)."""
        return (f"{self.model.signature}-{self.model.numerics}-holes{self.fill_hole_area}-frames{self.num_frames}"
                f"-batch{self.batch_objects}")

    def prompted_frames(self, obj_id: int) -> list[int]:
        """The frames where `obj_id` has prompts (its conditioning frames), in order."""
        return self._object(obj_id).prompted_frames()

    def tracked_frames(self, obj_id: int) -> list[int]:
        """The frames where `obj_id` has a tracked (non-conditioning) output, in order."""
        return self._object(obj_id).non_cond.frames()

    def reset(self) -> None:
        """Forget every object, prompt and memory."""
        self._objects.clear()
        self._features.clear()
        self._decoder_images.clear()
        self._spill.clear()

    def close(self) -> None:
        """Forget everything and remove the temporary memory file."""
        self.reset()
        self._spill.close()

    def remove_object(self, obj_id: int) -> None:
        """Forget one object, its prompts and memories; InputError if there is no such object."""
        if obj_id not in self._objects:
            raise InputError(f"There is no object {obj_id} to remove (objects: {self.obj_ids}).")
        self._objects.pop(obj_id).non_cond.clear()
        self._resize_store()

    @torch.no_grad()
    def add_prompt(self, frame_idx: int, obj_id: int, points=None, labels=None, box=None,
                   clear_old_points: bool = True) -> FrameResult:
        """Add clicks and/or a box for one object on one frame (Meta's `add_new_points_or_box`); returns that
        frame's result for every object known so far.

        points (N, 2) as (x, y) and box (x0, y0, x1, y1) in original-size pixels; labels (N,) 1 = positive,
        0 = negative. On a frame the object was never tracked on, the frame becomes a conditioning frame; on a
        tracked frame the prompt is a correction decoded with the frame's memory and earlier mask.
        clear_old_points=False adds the clicks to the frame's earlier ones (not with a box)."""
        frame_idx = self._check_frame(frame_idx)
        coords, point_labels = self._prompt_to_model_space(points, labels, box)
        obj = self._object(obj_id, create=True)
        if box is not None and not clear_old_points:
            raise InputError("A box replaces the earlier prompts of a frame: add it with clear_old_points=True.")
        if not clear_old_points and frame_idx in obj.points:
            old_coords, old_labels = obj.points[frame_idx]
            coords = torch.cat([old_coords, coords], dim=1)
            point_labels = torch.cat([old_labels, point_labels], dim=1)
        obj.points[frame_idx] = (coords, point_labels)

        is_init = frame_idx not in obj.tracked
        reverse = False if is_init else obj.tracked[frame_idx]
        temp = obj.temp_cond if is_init else obj.temp_non_cond
        prev = temp.get(frame_idx) or obj.output_on(frame_idx)
        prev_logits = None if prev is None else torch.clamp(prev.pred_masks.to(self.device), -32.0, 32.0)

        features = self._frame_features(frame_idx)
        with self.model.autocast():
            pix = self._conditioned_features(obj, features, frame_idx, is_init, reverse)
            image = self._decoder_image(frame_idx, pix) if is_init and prev_logits is None else None
            multimask = self._use_multimask(point_labels.shape[1])
            out = self.model.decode(pix, features.high_res, coords, point_labels, mask_input=prev_logits,
                                    multimask_output=multimask, image=image)
        temp[frame_idx] = self._compact(out, 0)
        return self._consolidated_result(frame_idx, is_cond=is_init)

    @torch.no_grad()
    def add_mask(self, frame_idx: int, obj_id: int, mask) -> FrameResult:
        """Prompt one object with a whole mask (H, W) at the frames' original size, nonzero = object (Meta's
        `add_new_mask`): the mask itself becomes the output; returns that frame's result for every object."""
        frame_idx = self._check_frame(frame_idx)
        mask = mask_prompt_to_model_space(mask, self.video_hw, self.model.image_size, self.device)
        obj = self._object(obj_id, create=True)
        obj.points.pop(frame_idx, None)
        is_init = frame_idx not in obj.tracked
        temp = obj.temp_cond if is_init else obj.temp_non_cond
        features = self._frame_features(frame_idx)
        with self.model.autocast():
            out = self.model.decode_mask_prompt(features.vision, features.high_res, mask)
        temp[frame_idx] = self._compact(out, 0)
        return self._consolidated_result(frame_idx, is_cond=is_init)

    # ---- history-free prompts and propagation ------------------------------------------------
    @torch.no_grad()
    def set_prompt(self, frame_idx: int, obj_id: int, points=None, labels=None, box=None, mask=None) -> FrameResult:
        """Make `frame_idx` a conditioning frame of `obj_id` with exactly these clicks, box and/or mask,
        decoded from them alone: no memory and no earlier mask, as Meta's predictor decodes the
        first prompt on a frame it never tracked. The mask depends only on the frame and the
        prompts. points (N, 2) as (x, y) and box (x0, y0, x1, y1) in original-size pixels; labels
        1 = positive, 0 = negative; mask (H, W) at the frames' original size, nonzero = object.
        A mask alone is taken as the output as is (Meta's `add_new_mask`); with clicks or a box too, the clicks
        are decoded with the mask's logits as the decoder's mask input (Meta's `add_new_points_or_box` after
        `add_new_mask` on that frame). Returns that frame's result for this object alone. What the
        object tracked before stays until the next `propagate_from_prompts` (or `repropagate`)."""
        frame_idx = self._check_frame(frame_idx)
        has_clicks = points is not None and len(points) > 0 or box is not None
        if mask is not None:
            mask = mask_prompt_to_model_space(mask, self.video_hw, self.model.image_size, self.device)
        if has_clicks or mask is None:
            coords, point_labels = self._prompt_to_model_space(points, labels, box)
        obj = self._object(obj_id, create=True)
        obj.temp_non_cond.pop(frame_idx, None)
        features = self._frame_features(frame_idx)
        mask_logits = None
        with self.model.autocast():
            if mask is not None:
                out = self.model.decode_mask_prompt(features.vision, features.high_res, mask)
                # The clicks' mask input is the mask's output as stored (hole-filled), as Meta takes it.
                mask_logits = torch.clamp(self._compact(out, 0).pred_masks.to(self.device), -32.0, 32.0)
            if has_clicks or mask is None:
                pix = self.model.features_without_memory(features)
                image = self._decoder_image(frame_idx, pix) if mask_logits is None else None
                out = self.model.decode(pix, features.high_res, coords, point_labels, mask_input=mask_logits,
                                        multimask_output=self._use_multimask(point_labels.shape[1]), image=image)
        if has_clicks or mask is None:
            obj.points[frame_idx] = (coords, point_labels)
        else:
            obj.points.pop(frame_idx, None)
        out = obj.temp_cond[frame_idx] = self._compact(out, 0)
        return self._result(frame_idx, [obj.obj_id], [out])

    def result_on(self, frame_idx: int, obj_ids: Optional[Iterable[int]] = None) -> FrameResult:
        """The latest output of each object of `obj_ids` (default: all) on a frame, as they stand
        (prompted, corrected or tracked); NO_OBJ_SCORE logits where an object has none. Computes
        nothing."""
        frame_idx = self._check_frame(frame_idx)
        objects = self._selected(obj_ids)
        outs = [obj.latest_output_on(frame_idx) for obj in objects]
        return self._result(frame_idx, [obj.obj_id for obj in objects], outs)

    def clear_prompt(self, frame_idx: int, obj_id: int) -> None:
        """Forget `obj_id`'s prompts on `frame_idx` and its mask there; an object left without
        any prompt is removed."""
        frame_idx = self._check_frame(frame_idx)
        obj = self._object(obj_id)
        for kept in (obj.points, obj.cond, obj.temp_cond, obj.temp_non_cond):
            kept.pop(frame_idx, None)
        obj.non_cond.pop(frame_idx)
        obj.history = None
        if not obj.prompted_frames():
            self.remove_object(obj.obj_id)

    def clear_tracking(self, obj_ids: Optional[Iterable[int]] = None) -> None:
        """Forget what these objects (default: all) tracked: every non-conditioning output and
        correction not yet propagated. Their prompts stay."""
        for obj in self._selected(obj_ids):
            obj.non_cond.clear()
            obj.temp_non_cond.clear()
            obj.tracked.clear()
            obj.history = ""

    def end_track(self, obj_id: int, last_frame: int) -> None:
        """Forget what `obj_id` tracked after `last_frame` (a cell that divided, whose daughters are tracked as
        objects of their own from the next frame): its tracked outputs on later frames are dropped, so it no longer
        claims pixels there. InputError if it has a prompt after `last_frame`."""
        last_frame = self._check_frame(last_frame)
        obj = self._object(obj_id)
        later = [t for t in obj.prompted_frames() if t > last_frame]
        if later:
            raise InputError(f"Object {obj_id} has prompts on frame(s) {later}, after frame {last_frame}.")
        for frame_idx in [t for t in obj.non_cond.frames() if t > last_frame]:
            obj.non_cond.pop(frame_idx)
        for frame_idx in [t for t in obj.tracked if t > last_frame]:
            del obj.tracked[frame_idx]
        for frame_idx in [t for t in obj.temp_non_cond if t > last_frame]:
            del obj.temp_non_cond[frame_idx]
        obj.history = None

    def propagate_from_prompts(self, direction: str = "both", first_frame: Optional[int] = None,
                               last_frame: Optional[int] = None,
                               obj_ids: Optional[Iterable[int]] = None) -> Iterator[FrameResult]:
        """Track objects (default: all) outward from their own prompted frames, after forgetting
        what they tracked before: the same prompts always give the same masks.

        direction: "forward", each object from its first prompted frame to `last_frame`;
        "backward", from its last prompted frame back to `first_frame`; "both", forward from its
        first prompted frame, then backward from that frame (Meta's forward pass followed by a
        reverse pass from the same start). first_frame / last_frame (default: the whole stack)
        bound the frames visited; an object with no prompt between them is not tracked.

        Objects never wait for or start from another object's frames (an object first prompted
        on frame 30 is tracked from frame 30), yet run batched: each sweep visits a frame once for
        all objects that reach it. A frame's result holds those objects and every other object's
        output of this run on that frame; so in "both", a frame between two objects' starts is
        yielded twice, the second time with all of them."""
        if direction not in ("both", "forward", "backward"):
            raise InputError(f"direction must be 'both', 'forward' or 'backward'; got {direction!r}.")
        first = 0 if first_frame is None else self._check_frame(first_frame)
        last = self.num_frames - 1 if last_frame is None else self._check_frame(last_frame)
        if first > last:
            raise InputError(f"The first frame ({first}) comes after the last ({last}).")
        self._consolidate_prompts()
        prompted = {obj.obj_id: [t for t in obj.cond if first <= t <= last] for obj in self._selected(obj_ids)}
        objects = [obj for obj in self._selected(obj_ids) if prompted[obj.obj_id]]
        if not objects:
            raise InputError(f"No prompt lies within frames {first} to {last}: add one there, or widen the range.")
        self.clear_tracking([obj.obj_id for obj in objects])
        sweeps = []
        if direction != "backward":
            sweeps.append((False, {obj.obj_id: min(prompted[obj.obj_id]) for obj in objects}))
        if direction != "forward":
            start = min if direction == "both" else max
            sweeps.append((True, {obj.obj_id: start(prompted[obj.obj_id]) for obj in objects}))
        for reverse, starts in sweeps:
            if reverse:
                order = range(max(starts.values()), first - 1, -1)
            else:
                order = range(min(starts.values()), last + 1)
            steps = [(frame_idx, [obj for obj in objects
                                  if (starts[obj.obj_id] >= frame_idx if reverse else starts[obj.obj_id] <= frame_idx)])
                     for frame_idx in order]
            yield from self._pass(steps, reverse, with_others=True)

    # ---- Meta's propagation calls -----------------------------------------------------------
    def propagate(self, start_frame_idx: Optional[int] = None, max_frame_num_to_track: Optional[int] = None,
                  reverse: bool = False) -> Iterator[FrameResult]:
        """Track every object frame by frame (Meta's `propagate_in_video`), yielding each frame's result as it is
        ready; prompts added since the last pass are consolidated first (InputError if an object has none).

        Default start: the earliest conditioning frame of any object; default length: to the
        end (or the start) of the stack. Conditioning frames are yielded, not recomputed."""
        self._consolidate_prompts()
        order = self._processing_order(start_frame_idx, max_frame_num_to_track, reverse)
        objects = list(self._objects.values())
        yield from self._pass([(frame_idx, objects) for frame_idx in order], reverse)

    def propagate_both(self, start_frame_idx: Optional[int] = None,
                       max_frame_num_to_track: Optional[int] = None) -> Iterator[FrameResult]:
        """Forward from the first prompted frame to the end, then backward from it to the start."""
        self._consolidate_prompts()
        start = self._default_start() if start_frame_idx is None else self._check_frame(start_frame_idx)
        yield from self.propagate(start, max_frame_num_to_track, reverse=False)
        yield from self.propagate(start, max_frame_num_to_track, reverse=True)

    def repropagate(self, frame_idx: Optional[int | Iterable[int]] = None, obj_ids: Optional[Iterable[int]] = None,
                    stop_iou: Optional[float] = 0.97, patience: int = 3) -> Iterator[FrameResult]:
        """Make corrections stick: on each frame of `frame_idx` (one frame, several, or None for
        every frame with a prompt or correction not yet propagated), every object corrected or
        prompted there since the last pass (or each object of `obj_ids` with a prompt there)
        gets that frame as a conditioning frame and is re-tracked outward from it in both
        directions, frame after frame in order.

        A direction stops early for an object once its new mask agrees with the mask it had
        before (IoU >= stop_iou) on `patience` consecutive frames; stop_iou=None never stops.
        Yields results for the re-tracked objects only."""
        pending = {t for obj in self._objects.values() for t in (*obj.temp_cond, *obj.temp_non_cond)}
        if frame_idx is None:
            frames = sorted(pending)
        else:
            frames = sorted({self._check_frame(t) for t in np.atleast_1d(np.asarray(frame_idx, dtype=object))})
        wanted = None if obj_ids is None else {self._object(i).obj_id for i in np.atleast_1d(obj_ids).tolist()}
        plan = []
        for t in frames:
            targets = []
            for obj in self._objects.values():
                if wanted is not None and obj.obj_id not in wanted:
                    continue
                out = obj.temp_non_cond.pop(t, None)
                if out is not None:
                    obj.temp_cond[t] = out
                if t in obj.temp_cond or (wanted is not None and t in obj.cond):
                    targets.append(obj)
            if targets:
                plan.append((t, targets))
            elif frame_idx is not None:
                raise InputError(f"Nothing to re-propagate from frame {t}: add a correction there first.")
        if not plan:
            raise InputError("Nothing to re-propagate: add a correction on a tracked frame first.")
        self._consolidate_prompts()
        for t, targets in plan:
            yield from self._retrack_outward(t, targets, stop_iou, patience)

    def _retrack_outward(self, frame_idx, targets, stop_iou, patience) -> Iterator[FrameResult]:
        for obj in targets:
            obj.history = None  # partly re-tracked: a mix no pass key describes
        for reverse in (False, True):
            active = list(targets)
            streak = {obj.obj_id: 0 for obj in targets}
            end = -1 if reverse else self.num_frames
            for t in range(frame_idx, end, -1 if reverse else 1):
                before = {obj.obj_id: obj.output_on(t) for obj in active}
                result = self._propagate_frame(t, active, reverse)
                yield result
                if stop_iou is None or t == frame_idx:
                    continue
                for obj, new_logits in zip(list(active), result.low_res_logits):
                    old = before[obj.obj_id]
                    if old is not None and _iou(old.pred_masks[0, 0] > 0, new_logits > 0) >= stop_iou:
                        streak[obj.obj_id] += 1
                    else:
                        streak[obj.obj_id] = 0
                    if streak[obj.obj_id] >= patience:
                        active.remove(obj)
                if not active:
                    break

    # ---- one pass ------------------------------------------------------------------------
    def _pass(self, steps, reverse: bool, with_others: bool = False) -> Iterator[FrameResult]:
        """Track each step's objects on its frame, steps = [(frame_idx, objects)] in order: one pass per object.
        An object whose pass the track cache holds is replayed from it; a pass computed here is kept there."""
        frames_of: dict = {}  # obj_id -> the frames it is tracked on (not its conditioning frames), in order
        objects = {}
        for frame_idx, active in steps:
            for obj in active:
                objects[obj.obj_id] = obj
                if frame_idx not in obj.cond:
                    frames_of.setdefault(obj.obj_id, []).append(frame_idx)
        cache = self.track_cache
        prefixes, replays = {}, {}
        if cache is not None:
            for obj_id, frames in frames_of.items():
                obj = objects[obj_id]
                if obj.history is None:
                    continue
                prefixes[obj_id] = pass_prefix(self.track_settings, obj.history, obj.cond, reverse)
                if not cache.is_empty():  # an empty cache needs no frame keys yet (reading frames to hash them costs)
                    entry = cache.get(pass_key(prefixes[obj_id], [self._frame_key(t) for t in frames]))
                    if entry is not None:
                        replays[obj_id] = unpack(entry)
        finished = False
        try:
            for frame_idx, active in steps:
                yield self._propagate_frame(frame_idx, active, reverse, with_others, replays)
            finished = True
        finally:
            for obj_id, frames in frames_of.items():
                obj = objects[obj_id]
                if not finished or obj_id not in prefixes:
                    obj.history = None
                    continue
                key = pass_key(prefixes[obj_id], [self._frame_key(t) for t in frames])
                if obj_id not in replays and cache.fits(len(frames) * nbytes(_tensors(obj.non_cond.get(frames[-1])))):
                    cache.put(key, pack(frames, [obj.non_cond.get(t) for t in frames]))
                obj.history = key

    # ---- one frame -----------------------------------------------------------------------
    @torch.no_grad()
    def _propagate_frame(self, frame_idx, objects, reverse, with_others=False, replays=None) -> FrameResult:
        """Track `objects` on one frame (conditioning frames are kept as they are; an object of `replays`,
        obj_id -> frame -> ObjectOutput, takes its output from there); the result holds them and, with
        `with_others`, every other object that has an output on the frame."""
        to_track = [obj for obj in objects if frame_idx not in obj.cond]
        replays = replays or {}
        outputs = {obj.obj_id: self._replayed(replays[obj.obj_id][frame_idx])
                   for obj in to_track if obj.obj_id in replays}
        computed = [obj for obj in to_track if obj.obj_id not in outputs]
        if computed:
            outputs.update(self._track(frame_idx, computed, reverse))
        for obj in objects:
            if obj.obj_id in outputs:
                obj.non_cond.put(frame_idx, outputs[obj.obj_id])
            obj.tracked[frame_idx] = reverse
        ids = {obj.obj_id for obj in objects}
        shown = [obj for obj in self._objects.values() if obj.obj_id in ids or (
            with_others and (frame_idx in obj.cond or frame_idx in obj.non_cond))]
        outs = [outputs.get(obj.obj_id) or obj.output_on(frame_idx) for obj in shown]
        result = self._result(frame_idx, [obj.obj_id for obj in shown], outs)
        release_freed_host_memory()  # with host_memory.tune_host_memory: flat resident memory
        return result

    def _track(self, frame_idx, objects, reverse) -> dict:
        """Track objects on a frame from their memories, batched by memory layout."""
        features = self._frame_features(frame_idx)
        memories = {obj.obj_id: self._memory(obj, frame_idx, reverse) for obj in objects}
        groups: dict = {}
        for obj in objects:
            key = memories[obj.obj_id].layout if self.batch_objects else obj.obj_id
            groups.setdefault(key, []).append(obj)
        outputs = {}
        first = None
        if len(objects) > 1:  # the frame-only part of the attention, done once for all objects (batched or not)
            with self.model.autocast():
                first = self.model.first_self_attention(features)
        for group in groups.values():
            mems = [memories[obj.obj_id] for obj in group]
            batch = features.expand(len(group))
            with self.model.autocast():
                memory, memory_pos = torch.cat([m.tokens for m in mems]), torch.cat([m.pos for m in mems])
                pix = self.model.condition_on_memory(batch, memory, memory_pos, mems[0].num_ptr_tokens, first=first)
                out = self.model.decode(pix, batch.high_res, multimask_output=self._use_multimask(0))
                maskmem, pos = self.model.encode_memory(batch, out.high_res, out.object_score_logits, binarize=False)
            self._remember_pos(pos)
            filled = fill_holes(out.low_res.float(), self.fill_hole_area)  # the whole group at once
            for i, obj in enumerate(group):
                compact = self._compact(out, i, filled)
                compact.maskmem = self._store(maskmem[i : i + 1].to(torch.bfloat16))
                outputs[obj.obj_id] = compact
        return outputs

    def _conditioned_features(self, obj, features: FrameFeatures, frame_idx, is_init, reverse):
        if is_init:
            return self.model.features_without_memory(features)
        mem = self._memory(obj, frame_idx, reverse)
        return self.model.condition_on_memory(features, mem.tokens, mem.pos, mem.num_ptr_tokens)

    def _memory(self, obj: ObjectState, frame_idx, reverse) -> AttendedMemory:
        """The memory bank one object attends to on one frame (Meta's rule: memory_bank.gather_memory)."""
        return gather_memory(self.model, obj, frame_idx, reverse, self.num_frames, self._maskmem_pos, self.device)

    def _use_multimask(self, num_points: int) -> bool:
        # Meta also multimasks on tracked frames (multimask_output_for_tracking): only the click count matters
        cfg = self.model.config
        return cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num

    # ---- prompts -> memory ---------------------------------------------------------------
    @torch.no_grad()
    def _consolidate_prompts(self):
        """Encode the memories of freshly prompted frames and move them into the memory bank."""
        if not self._objects:
            raise InputError("No prompts yet: add points or a box for at least one object before propagating.")
        for obj in self._objects.values():
            for is_cond in (False, True):
                temp = obj.temp_cond if is_cond else obj.temp_non_cond
                if temp and not is_cond:
                    obj.history = None  # corrections: a mix no pass key describes
                for frame_idx, out in temp.items():
                    if out.maskmem is None:
                        out.maskmem = self._encode_prompted_memory(frame_idx, out)
                    if is_cond:
                        obj.cond[frame_idx] = out
                    else:
                        obj.non_cond.put(frame_idx, out)
                temp.clear()
            if not obj.cond:
                raise InputError(f"Object {obj.obj_id} has no prompt on any frame: add points or a box for it.")
            for frame_idx in obj.cond:
                obj.non_cond.pop(frame_idx)

    def _encode_prompted_memory(self, frame_idx, out: ObjectOutput) -> torch.Tensor:
        features = self._frame_features(frame_idx)
        size = self.model.image_size
        high_res = F.interpolate(out.pred_masks.to(self.device), size=(size, size), mode="bilinear", align_corners=False)
        with self.model.autocast():
            maskmem, pos = self.model.encode_memory(features, high_res, out.object_score_logits.to(self.device),
                                                    binarize=self.model.config.binarize_mask_from_pts_for_mem_enc)
        self._remember_pos(pos)
        return self._store(maskmem.to(torch.bfloat16))

    def _remember_pos(self, pos):
        # the memory position encoding is the same for every frame: keep one copy
        if self._maskmem_pos is None:
            self._maskmem_pos = pos[:1].float().clone()

    # ---- results -------------------------------------------------------------------------
    def _compact(self, out: DecoderOutput, i: int, filled: Optional[torch.Tensor] = None) -> ObjectOutput:
        """Row i of a decoder output as kept for memory; `filled`: the batch's low-res logits already hole-filled."""
        if filled is None:
            pred = fill_holes(out.low_res[i : i + 1].float(), self.fill_hole_area)
        else:
            pred = filled[i : i + 1].clone()
        return ObjectOutput(self._store(pred), self._store(out.obj_ptr[i : i + 1].float()),
                            self._store(out.object_score_logits[i : i + 1].float()))

    def _replayed(self, out: ObjectOutput) -> ObjectOutput:
        """An output from the track cache, where the tracker keeps its own."""
        return ObjectOutput(*(self._store(t) for t in _tensors(out)))

    def _consolidated_result(self, frame_idx, is_cond) -> FrameResult:
        """Every object's latest output on a frame (Meta's consolidation), empty where it has none."""
        outs = []
        for obj in self._objects.values():
            temp = obj.temp_cond if is_cond else obj.temp_non_cond
            outs.append(temp.get(frame_idx) or obj.output_on(frame_idx))
        return self._result(frame_idx, self.obj_ids, outs)

    def _result(self, frame_idx, obj_ids, outs) -> FrameResult:
        return frame_result(frame_idx, obj_ids, outs, low_res_hw=self._low_res_hw(), ptr_dim=self.model.config.d_model,
                            video_hw=self.video_hw, device=self.device, non_overlap_masks=self.non_overlap_masks)

    def _low_res_hw(self):
        size = self.model.sam_prompt_encoder.mask_input_size
        return size[0], size[1]

    # ---- helpers -------------------------------------------------------------------------
    def _store(self, t: torch.Tensor) -> torch.Tensor:
        # kept across frames: on CPU a large tensor gets a mapping of its own (see host_memory)
        return outside_heap(t.detach().to(self.storage_device))

    def _frame_features(self, frame_idx) -> FrameFeatures:
        """Image features of a frame: the last two frames' are kept (prompts and memory encoding revisit the frame
        just seen); then the feature cache is asked (a frame whose key is known is not even read); then the image
        encoder runs."""
        if frame_idx in self._features:
            self._features.move_to_end(frame_idx)
            return self._features[frame_idx]
        cache, key = self.feature_cache, self.feature_keys.get(frame_idx)
        entry = None if key is None or cache is None else cache.get(key)
        if entry is not None:
            features = self.model.features_from(entry)
        else:
            image = self._model_input(frame_idx)
            if key is None and (cache is not None or self.track_cache is not None):
                key = self.feature_keys[frame_idx] = feature_key(self.model, image)
            features = encode_image(self.model, image, cache, key)
        self._features[frame_idx] = features
        while len(self._features) > 2:
            self._decoder_images.pop(self._features.popitem(last=False)[0], None)
        return features

    def _decoder_image(self, frame_idx, pix) -> dict:
        """The decoder's prompt-free part on a frame's memory-free features `pix` (Sam2Model.decoder_image_side),
        kept as long as the frame's features: the next click there skips it."""
        image = self._decoder_images.get(frame_idx)
        if image is None:
            image = self._decoder_images[frame_idx] = self.model.decoder_image_side(pix)
        return image

    def _frame_key(self, frame_idx) -> str:
        """A frame's feature key (engine.feature_cache.feature_key), reading the frame if it was never read."""
        key = self.feature_keys.get(frame_idx)
        if key is None:
            key = self.feature_keys[frame_idx] = feature_key(self.model, self._model_input(frame_idx))
        return key

    def _model_input(self, frame_idx) -> torch.Tensor:
        image = self.frames[frame_idx]
        if not isinstance(image, torch.Tensor):
            image = torch.as_tensor(np.asarray(image))
        size = self.model.image_size
        if tuple(image.shape) != (3, size, size):
            raise InputError(f"frames[{frame_idx}] has shape {tuple(image.shape)}; the model needs (3, {size}, {size}).")
        return image

    def _object(self, obj_id, create=False) -> ObjectState:
        obj_id = check_obj_id(obj_id)
        if obj_id not in self._objects:
            if not create:
                raise InputError(f"There is no object {obj_id}.")
            self._objects[obj_id] = ObjectState(obj_id, self._spill)
            self._resize_store()
        return self._objects[obj_id]

    def _selected(self, obj_ids) -> list:
        """The objects of `obj_ids` (default: all), in the tracker's order."""
        if obj_ids is None:
            return list(self._objects.values())
        wanted = {self._object(obj_id).obj_id for obj_id in obj_ids}
        return [obj for obj in self._objects.values() if obj.obj_id in wanted]

    def _resize_store(self) -> None:
        # keep_frames per object stay in memory
        if self.keep_frames is not None:
            self._spill.capacity = self.keep_frames * max(1, len(self._objects))

    def _check_frame(self, frame_idx) -> int:
        return check_frame_index(frame_idx, self.num_frames)

    def _prompt_to_model_space(self, points, labels, box):
        coords, point_labels = prompt_to_model_space(points, labels, box, self.video_hw, self.model.image_size)
        return coords.to(self.device), point_labels.to(self.device)

    def _default_start(self):
        return min(t for obj in self._objects.values() for t in obj.cond)

    def _processing_order(self, start, max_frames, reverse):
        start = self._default_start() if start is None else self._check_frame(start)
        max_frames = self.num_frames if max_frames is None else int(max_frames)
        if reverse:
            end = max(start - max_frames, 0)
            return range(start, end - 1, -1) if start > 0 else range(0)
        end = min(start + max_frames, self.num_frames - 1)
        return range(start, end + 1)


def _tensors(out: ObjectOutput) -> tuple:
    return out.pred_masks, out.obj_ptr, out.object_score_logits, out.maskmem


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union
