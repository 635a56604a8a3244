"""Tracked outputs kept per propagation pass, so that the same pass is never computed twice.

A pass is one object tracked frame after frame in one direction (its share of Meta's `propagate_in_video`). What it
gives depends only on:
- the model and how it computes: its signature, the device type and the precision, all carried by the frames'
  feature keys, and the tracker's settings (`Tracker.track_settings`);
- the object's conditioning outputs, which are decoded from its prompts: their exact tensors are hashed;
- what the object had tracked before the pass: the key of its previous pass, or "" for nothing
  (`ObjectState.history`);
- the direction, and the frames the pass visits, in order, by their feature keys (a hash of each frame's model
  input).

`pass_key` hashes exactly those. After a pass, the object's outputs on its frames are kept under that key: low-res
logits, object pointer, object score and memory, about 0.75 MiB per frame at 1024 px. A later pass with the same
key replays them instead of computing. That happens in a second run on the same stack with the same prompts, in
another tracker or session, or for the unchanged objects when another object is added and everything is propagated
again. The replay gives the same tensors, so the same masks, and the same memories for later corrections, bit for
bit.

On a GPU, objects that share a memory layout are tracked as one batch, and a batch of a different size rounds
differently. A replay there gives what the same pass computed before, within rounding of a fresh pass in another
batch.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
import xxhash

from .object_state import ObjectOutput
from .tensor_cache import TensorCache, TensorStore

DEFAULT_MAX_BYTES = 1 << 30  # about 1400 object-frames at 1024 px


class TrackCache(TensorCache):
    """A TensorCache of passes: entries are `pack`ed outputs under `pass_key`s, in host memory and, with a `store`
    (e.g. napari_sam2.core.tensor_store.ZarrTensorStore), also there: every pass kept is written to it, and a pass
    memory lacks is looked up there."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, store: Optional[TensorStore] = None):
        super().__init__(max_bytes, store, write_store=True)


def pass_prefix(settings: str, history: str, cond: Mapping[int, ObjectOutput], reverse: bool) -> str:
    """The part of a pass's key known before it starts: the tracker's `settings`, the object's `history` (the key of
    its previous pass, "" for none), its conditioning outputs `cond` (frame -> ObjectOutput, memories encoded) and
    the direction."""
    digest = xxhash.xxh3_128(f"{settings}|{history}|{bool(reverse)}".encode())
    for frame_idx in sorted(cond):
        out = cond[frame_idx]
        digest.update(f"|{frame_idx}".encode())
        for tensor in (out.pred_masks, out.obj_ptr, out.object_score_logits, out.maskmem):
            _update(digest, tensor)
    return digest.hexdigest()


def pass_key(prefix: str, frame_keys: Sequence[str]) -> str:
    """A pass's key: its `pass_prefix` and the feature keys of the frames it tracks, in the order it tracks them."""
    digest = xxhash.xxh3_128(prefix.encode())
    for key in frame_keys:
        digest.update(f"|{key}".encode())
    return digest.hexdigest()


def pack(frames: Sequence[int], outputs: Sequence[ObjectOutput]) -> tuple:
    """One object's outputs on `frames` as a cache entry: (frames (N,) int64, low-res logits (N, 1, h, w),
    pointers (N, d), object scores (N, 1), memories (N, C, h', w')), CPU tensors in the outputs' dtypes."""
    def rows(name):
        return torch.cat([getattr(out, name).detach().cpu() for out in outputs])

    return (torch.tensor(list(frames), dtype=torch.int64), rows("pred_masks"), rows("obj_ptr"),
            rows("object_score_logits"), rows("maskmem"))


def unpack(entry: tuple) -> dict:
    """A `pack`ed entry back as frame -> ObjectOutput (rows of the entry's tensors, not copies)."""
    frames, pred_masks, ptrs, scores, maskmem = entry
    return {int(t): ObjectOutput(pred_masks[i : i + 1], ptrs[i : i + 1], scores[i : i + 1], maskmem[i : i + 1])
            for i, t in enumerate(frames.tolist())}


def _update(digest, tensor: Optional[torch.Tensor]) -> None:
    if tensor is None:
        digest.update(b"|none")
        return
    data = tensor.detach().cpu().contiguous()
    digest.update(f"|{str(data.dtype)}{tuple(data.shape)}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
