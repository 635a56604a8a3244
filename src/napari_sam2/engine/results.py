"""What the tracker hands out: one FrameResult per frame, every listed object at the frames' original size."""

from __future__ import annotations

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
    `(frame_idx, obj_ids, video_res_masks)`, plus what a caller may want besides the masks). All tensors are CPU
    float32. An object with no output on the frame, or judged absent, has logits NO_OBJ_SCORE (-1024) everywhere.

    frame_idx: the frame (slice) index in the stack.
    obj_ids: the object ids, in the tracker's order (the order they were first prompted).
    mask_logits: (n_obj, H, W) logits at the frames' original size (H, W) in pixels; mask = logits > 0.
    low_res_logits: (n_obj, h, w) the model's logits at 1/4 of its input size (256 x 256 for a 1024 model),
        after hole filling, before resizing.
    object_score_logits: (n_obj,) > 0: the object is present on this frame.
    obj_ptrs: (n_obj, d_model) the object pointers (for diagnostics and tests); zeros where an object has none.
    """

    frame_idx: int
    obj_ids: list
    mask_logits: torch.Tensor
    low_res_logits: torch.Tensor
    object_score_logits: torch.Tensor
    obj_ptrs: torch.Tensor

    def masks(self) -> np.ndarray:
        """Boolean masks (n_obj, H, W), numpy."""
        return (self.mask_logits > 0).numpy()


def frame_result(frame_idx: int, obj_ids: Sequence[int], outs: Sequence[Optional[ObjectOutput]], *,
                 low_res_hw: tuple[int, int], ptr_dim: int, video_hw: tuple[int, int], device: torch.device,
                 non_overlap_masks: bool) -> FrameResult:
    """Gather the objects' outputs (None where an object has none) into a FrameResult: low-res logits resized
    bilinearly to video_hw (H, W) on `device`, then, with non_overlap_masks, each pixel kept by the object with the
    highest logit (Meta's `_apply_non_overlapping_constraints`)."""
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
    video = F.interpolate(low_res, size=video_hw, mode="bilinear", align_corners=False)
    if non_overlap_masks:
        video = non_overlapping(video)
    # the caller holds a result while the next frame is computed: keep it out of that frame's heap
    return FrameResult(frame_idx, list(obj_ids), outside_heap(video[:, 0].cpu()), outside_heap(low_res[:, 0].cpu()),
                       scores.cpu(), ptrs.cpu())
