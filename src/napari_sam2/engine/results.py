"""What the tracker hands out: one FrameResult per frame, every listed object at the frames' original size."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .host_memory import outside_heap
from .model import NO_OBJ_SCORE
from .object_state import ObjectOutput
from .postprocess import non_overlapping


@dataclass
class FrameResult:
    """One frame's outputs for the objects `obj_ids`, row i for obj_ids[i] (as Meta's predictor yields
    `(frame_idx, obj_ids, video_res_masks)`, plus what a caller may want besides the masks). All tensors are on the
    CPU. An object with no output on the frame, or judged absent, has logits NO_OBJ_SCORE (-1024) everywhere.

    frame_idx: the frame (slice) index in the stack.
    obj_ids: the object ids, in the tracker's order (the order they were first prompted).
    owner: (H, W) uint8 (int32 beyond 255 objects) at the frames' original size (H, W) in pixels: 1 + the row of the
        object that owns each pixel, 0 for none. A pixel is owned by the object with the highest logit there, if that
        logit is above 0 (core.frame_labels.highest_logit_wins). Computed on the tracker's device and handed over
        compact: 1 byte a pixel, whatever the number of objects.
    low_res_logits: (n_obj, h, w) float32, the model's logits at 1/4 of its input size (256 x 256 for a 1024 model),
        after hole filling, before resizing.
    object_score_logits: (n_obj,) float32, > 0: the object is present on this frame.
    obj_ptrs: (n_obj, d_model) float32, the object pointers (for diagnostics and tests); zeros where an object has
        none.
    video_hw: (H, W). non_overlap_masks: Meta's option, applied to `mask_logits` (and so to `owner`).

    `mask_logits` (n_obj, H, W) float32, the logits at (H, W) (mask = logits > 0), are computed on request, on the
    host, from low_res_logits, as the tracker's device computes `owner` (the same bits on a CPU)."""

    frame_idx: int
    obj_ids: list
    owner: torch.Tensor
    low_res_logits: torch.Tensor
    object_score_logits: torch.Tensor
    obj_ptrs: torch.Tensor
    video_hw: tuple
    non_overlap_masks: bool = False

    @functools.cached_property
    def mask_logits(self) -> torch.Tensor:
        """(n_obj, H, W) float32 logits at the frames' original size, computed once on request."""
        return outside_heap(video_logits(self.low_res_logits[:, None], self.video_hw, self.non_overlap_masks)[:, 0])

    def masks(self) -> np.ndarray:
        """Boolean masks (n_obj, H, W), numpy; objects may overlap (`owner` gives each pixel to one)."""
        return (self.mask_logits > 0).numpy()


def video_logits(low_res: torch.Tensor, video_hw: tuple[int, int], non_overlap_masks: bool) -> torch.Tensor:
    """Low-res logits (n, 1, h, w) resized bilinearly to video_hw (H, W) (Meta's `_get_orig_video_res_output`), then,
    with non_overlap_masks, each pixel kept by the object with the highest logit (`_apply_non_overlapping_constraints`)."""
    video = F.interpolate(low_res, size=video_hw, mode="bilinear", align_corners=False)
    return non_overlapping(video) if non_overlap_masks else video


def pixel_owner(logits: torch.Tensor) -> torch.Tensor:
    """(n, H, W) logits -> (H, W): 1 + the index of the object with the highest logit where it is above 0, else 0
    (the first object among equals), in uint8 up to 255 objects, else int32."""
    n = logits.shape[0]
    if n <= 1:  # one object, or none: no comparison among objects
        owned = logits[0] > 0 if n else torch.zeros(logits.shape[1:], dtype=torch.bool, device=logits.device)
        return owned.view(torch.uint8)
    best, index = logits.max(dim=0)
    owner = index.to(torch.uint8 if n < 256 else torch.int32).add_(1)
    return owner.masked_fill_(best <= 0, 0)


def frame_result(frame_idx: int, obj_ids: Sequence[int], outs: Sequence[Optional[ObjectOutput]], *,
                 low_res_hw: tuple[int, int], ptr_dim: int, video_hw: tuple[int, int], device: torch.device,
                 non_overlap_masks: bool) -> FrameResult:
    """Gather the objects' outputs (None where an object has none) into a FrameResult: the low-res logits resized to
    video_hw (H, W) on `device` (`video_logits`) and reduced there to each pixel's owner, the only full-size array
    copied to the host."""
    h, w = low_res_hw
    n = len(outs)
    low_res = torch.full((n, 1, h, w), NO_OBJ_SCORE, dtype=torch.float32, device=device)
    scores = torch.full((n,), NO_OBJ_SCORE, dtype=torch.float32, device=device)
    ptrs = torch.zeros((n, ptr_dim), dtype=torch.float32, device=device)
    present = [i for i, out in enumerate(outs) if out is not None]
    if present:  # gathered on the device: one copy to the host per array, not one per object
        rows = torch.tensor(present, device=device)
        low_res[rows] = torch.cat([outs[i].pred_masks.to(device, non_blocking=True) for i in present]).float()
        scores[rows] = torch.cat([outs[i].object_score_logits.to(device).reshape(1) for i in present]).float()
        ptrs[rows] = torch.cat([outs[i].obj_ptr.to(device) for i in present]).float()
    owner = pixel_owner(video_logits(low_res, video_hw, non_overlap_masks)[:, 0])
    # the caller holds a result while the next frame is computed: keep it out of that frame's heap
    return FrameResult(frame_idx, list(obj_ids), outside_heap(owner.cpu()), outside_heap(low_res[:, 0].cpu()),
                       scores.cpu(), ptrs.cpu(), tuple(video_hw), non_overlap_masks)
