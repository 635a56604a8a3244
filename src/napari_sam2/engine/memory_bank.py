"""Meta's memory-bank rule: which memories and object pointers one object attends to on one frame.

This is the one place to read (or change) the rule of SAM2's video model (`SAM2Base._prepare_memory_conditioned_
features` with `select_closest_cond_frames`, memory_temporal_stride_for_eval = 1, only_obj_ptrs_in_the_past_for_eval):

- spatial memories: the conditioning (prompted) frames, all of them or the `max_cond_frames_in_attn` closest, at
  temporal position 0; then the `num_maskmem - 1` frames just before `frame_idx` in the tracking direction (just
  after it when tracking in reverse), frame `frame_idx -/+ k` at temporal position `num_maskmem - k`, where the
  object has an output (a conditioning frame left out of the selection counts too);
- object pointers: those of the selected conditioning frames not after `frame_idx` in the tracking direction, at
  their temporal distance (signed for SAM2.1), then those of up to `max_obj_ptrs_in_encoder - 1` frames just before
  `frame_idx` in the tracking direction, at distances 1, 2, ..., stopping at either end of the stack (and at most
  num_frames - 1 of them); their temporal encoding is scaled by min(num_frames, max_obj_ptrs_in_encoder) - 1.

Exact: nothing is dropped that Meta's predictor would attend to (the tracker keeps every output, see SpillStore).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..errors import InputError
from .model import Sam2Model
from .object_state import ObjectOutput, ObjectState


def select_closest_cond_frames(frame_idx: int, cond: "OrderedDict[int, ObjectOutput]",
                               max_cond_frames: int) -> tuple["OrderedDict[int, ObjectOutput]", dict]:
    """(selected, unselected) conditioning frames: all of them when max_cond_frames is -1 or not exceeded; else the
    closest before frame_idx, the closest at or after it, and the rest by temporal distance, max_cond_frames (>= 2)
    in all (Meta's `select_closest_cond_frames`)."""
    if max_cond_frames == -1 or len(cond) <= max_cond_frames:
        return cond, {}
    selected = OrderedDict()
    before = max((t for t in cond if t < frame_idx), default=None)
    if before is not None:
        selected[before] = cond[before]
    after = min((t for t in cond if t >= frame_idx), default=None)
    if after is not None:
        selected[after] = cond[after]
    rest = sorted((t for t in cond if t not in selected), key=lambda t: abs(t - frame_idx))
    for t in rest[: max_cond_frames - len(selected)]:
        selected[t] = cond[t]
    return selected, {t: v for t, v in cond.items() if t not in selected}


@dataclass
class AttendedMemory:
    """The memory one object attends to on one frame, as memory attention takes it (float32, on the model's device).

    tokens: (1, M, mem_dim) the spatial memories (64 x 64 = 4096 tokens per frame for a 1024 model), then the object
        pointers (each split into d_model / mem_dim tokens).
    pos: (1, M, mem_dim) their position encodings (spatial + temporal).
    num_ptr_tokens: how many of the last tokens are object pointers (they get no RoPE).
    """

    tokens: torch.Tensor
    pos: torch.Tensor
    num_ptr_tokens: int

    @property
    def layout(self) -> tuple[int, int]:
        """(M, num_ptr_tokens): objects with the same layout can run memory attention in one batch."""
        return (self.tokens.shape[1], self.num_ptr_tokens)


def gather_memory(model: Sam2Model, obj: ObjectState, frame_idx: int, reverse: bool, num_frames: int,
                  maskmem_pos: torch.Tensor, device: torch.device) -> AttendedMemory:
    """The memory bank `obj` attends to on `frame_idx` when tracking forward (or in `reverse`) through a stack of
    `num_frames` frames (see the module's docstring for the rule), on `device`.

    maskmem_pos: (1, mem_dim, h, w) the spatial position encoding of a memory (the same for every frame).
    Raises InputError when the object has no conditioning frame yet."""
    cfg = model.config
    if not obj.cond:
        raise InputError(f"Object {obj.obj_id} has no prompt yet: add points or a box for it first.")
    selected, unselected = select_closest_cond_frames(frame_idx, obj.cond, cfg.max_cond_frames_in_attn)
    entries = [(0, out) for out in selected.values()]
    for t_pos in range(1, cfg.num_maskmem):
        t_rel = cfg.num_maskmem - t_pos
        prev = frame_idx + t_rel if reverse else frame_idx - t_rel
        entries.append((t_pos, obj.non_cond.get(prev) or unselected.get(prev)))
    tokens, pos = [], []
    for t_pos, out in entries:
        if out is None:
            continue
        tokens.append(out.maskmem.to(device).float().flatten(2).transpose(1, 2))
        pos.append(model.memory_frame_pos(maskmem_pos, t_pos))

    max_ptrs = min(num_frames, cfg.max_obj_ptrs_in_encoder)
    sign = -1 if reverse else 1
    ptr_cond = {t: out for t, out in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
    t_diffs, ptrs = [], []
    for t, out in ptr_cond.items():
        t_diffs.append((frame_idx - t) * sign if cfg.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t))
        ptrs.append(out.obj_ptr)
    for t_diff in range(1, max_ptrs):
        t = frame_idx + t_diff if reverse else frame_idx - t_diff
        if t < 0 or t >= num_frames:
            break
        ptr = obj.non_cond.pointer(t)
        if ptr is None and t in unselected:
            ptr = unselected[t].obj_ptr
        if ptr is not None:
            t_diffs.append(t_diff)
            ptrs.append(ptr)
    num_ptr_tokens = 0
    if ptrs:
        ptr_tokens, ptr_pos = model.pointer_tokens(torch.stack([p.to(device) for p in ptrs]), t_diffs, max_ptrs)
        tokens.append(ptr_tokens)
        pos.append(ptr_pos)
        num_ptr_tokens = ptr_tokens.shape[1]
    return AttendedMemory(torch.cat(tokens, dim=1), torch.cat(pos, dim=1), num_ptr_tokens)
