"""Per-object inference state of the tracker: prompts and outputs per frame, as Meta's video predictor keeps them
in `output_dict_per_obj` (consolidated) and `temp_output_dict_per_obj` (prompted since the last propagation).

Each output is an ObjectOutput. Conditioning frames (`cond`: frames with prompts) keep theirs in memory; tracked
(non-conditioning) frames' masks and memories go to the tracker's SpillStore (`TrackedOutputs`), so that host memory
stays bounded however long the stack.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch

from .spill_store import SpillStore


@dataclass
class ObjectOutput:
    """One object's output on one frame, as kept for memory (Meta's `current_out`). Model sizes for a 1024 model."""

    pred_masks: torch.Tensor  # (1, 1, h, w) float32 low-res logits (h = w = image_size / 4) after hole filling
    obj_ptr: torch.Tensor  # (1, d_model) float32 object pointer
    object_score_logits: torch.Tensor  # (1, 1) float32; > 0: present
    maskmem: Optional[torch.Tensor] = None  # (1, mem_dim, 64, 64) bfloat16 memory; None until encoded


class TrackedOutputs:
    """One object's outputs on its tracked (non-conditioning) frames, all of them (Meta keeps them all): pointers
    and object scores in memory, masks and memories in the tracker's SpillStore (keyed by (obj_id, frame))."""

    def __init__(self, obj_id: int, store: SpillStore):
        self._obj_id = obj_id
        self._store = store
        self._small: dict = {}  # frame -> (obj_ptr, object_score_logits)

    def __contains__(self, frame_idx) -> bool:
        return frame_idx in self._small

    def __len__(self) -> int:
        return len(self._small)

    def frames(self) -> list:
        """The tracked frames, in order."""
        return sorted(self._small)

    def get(self, frame_idx) -> Optional[ObjectOutput]:
        """The output on a frame (read back from disk if spilled), None if the frame was not tracked."""
        small = self._small.get(frame_idx)
        if small is None:
            return None
        pred_masks, maskmem = self._store.get((self._obj_id, frame_idx))
        return ObjectOutput(pred_masks, small[0], small[1], maskmem)

    def pointer(self, frame_idx) -> Optional[torch.Tensor]:
        """The object pointer on a frame, without touching the store."""
        small = self._small.get(frame_idx)
        return None if small is None else small[0]

    def put(self, frame_idx, out: ObjectOutput) -> None:
        self._small[frame_idx] = (out.obj_ptr, out.object_score_logits)
        self._store.put((self._obj_id, frame_idx), (out.pred_masks, out.maskmem))

    def pop(self, frame_idx) -> None:
        if self._small.pop(frame_idx, None) is not None:
            self._store.pop((self._obj_id, frame_idx))

    def clear(self) -> None:
        for frame_idx in list(self._small):
            self.pop(frame_idx)


class ObjectState:
    """Everything the tracker knows about one object.

    points: frame -> (coords (1, N, 2) float32 (x, y) in model pixels, labels (1, N) int32), the frame's prompts.
    cond: conditioning frames' outputs (Meta's "cond_frame_outputs"), with memories.
    non_cond: tracked frames' outputs ("non_cond_frame_outputs").
    temp_cond / temp_non_cond: outputs prompted or corrected since the last propagation, memories not yet encoded
        (Meta's temp_output_dict_per_obj); `Tracker._consolidate_prompts` moves them into cond / non_cond.
    tracked: frame -> whether it was last tracked in reverse (a prompt there is a correction, not a new
        conditioning frame).
    history: how `non_cond` came to be, for the track cache (engine.track_cache): "" nothing tracked, the key of
        the last pass when passes alone made it, None when anything else changed it (a correction, a pass cut
        short); such an object's passes are neither looked up nor kept.
    """

    def __init__(self, obj_id: int, store: SpillStore):
        self.obj_id = obj_id
        self.points: dict = {}
        self.cond: "OrderedDict[int, ObjectOutput]" = OrderedDict()
        self.non_cond = TrackedOutputs(obj_id, store)
        self.temp_cond: "OrderedDict[int, ObjectOutput]" = OrderedDict()
        self.temp_non_cond: "OrderedDict[int, ObjectOutput]" = OrderedDict()
        self.tracked: dict = {}
        self.history: Optional[str] = ""

    def output_on(self, frame_idx) -> Optional[ObjectOutput]:
        """The consolidated output on a frame (conditioning first), None if there is none."""
        return self.cond.get(frame_idx) or self.non_cond.get(frame_idx)

    def latest_output_on(self, frame_idx) -> Optional[ObjectOutput]:
        """The output on a frame as it stands: a prompt or correction not yet propagated first."""
        return self.temp_cond.get(frame_idx) or self.temp_non_cond.get(frame_idx) or self.output_on(frame_idx)

    def prompted_frames(self) -> list:
        """Frames with a conditioning output, consolidated or not."""
        return sorted(set(self.cond) | set(self.temp_cond))
