"""Runs a golden video scenario's calls through Tracker and collects the arrays the reference stores."""

import numpy as np
import torch

from napari_sam2.engine.predictor import IMAGENET_MEAN, IMAGENET_STD

MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None]


class GoldenFrames:
    """The reference's frames (already at model size), normalised as the reference does."""

    def __init__(self, frames_u8, video_hw):
        self.frames_u8 = frames_u8
        self.original_size = tuple(video_hw)

    def __len__(self):
        return len(self.frames_u8)

    def __getitem__(self, i):
        x = torch.from_numpy(self.frames_u8[i]).permute(2, 0, 1).float() / 255.0
        return (x - MEAN) / STD


def pack_masks(mask_logits):
    """(n, H, W) logits -> the reference's packed `> 0` bits."""
    return np.packbits(mask_logits.numpy() > 0, axis=-1)


def run_calls(tracker, calls, on_call=None):
    out = {}
    for i, call in enumerate(calls):
        if on_call:
            on_call(i)
        if call["op"] == "add":
            res = tracker.add_prompt(call["frame_idx"], call["obj_id"], points=call.get("points"),
                                     labels=call.get("labels"), box=call.get("box"),
                                     clear_old_points=call.get("clear_old_points", True))
            j = res.obj_ids.index(call["obj_id"])
            out[f"c{i}_low_res_logits"] = res.low_res_logits[j].numpy()
            out[f"c{i}_object_score_logits"] = res.object_score_logits[j : j + 1].numpy()
            out[f"c{i}_obj_ptr"] = res.obj_ptrs[j].numpy()
            out[f"c{i}_video_res_masks_packed"] = pack_masks(res.mask_logits)
        elif call["op"] == "remove":
            tracker.remove_object(call["obj_id"])
        elif call["op"] == "reset":
            tracker.reset()
        else:
            results = list(tracker.propagate(call["start_frame_idx"], call["max_frame_num_to_track"], call["reverse"]))
            out[f"c{i}_frame_idx"] = np.array([r.frame_idx for r in results], dtype=np.int32)
            if not results:  # e.g. reverse from frame 0
                continue
            out[f"c{i}_low_res_logits"] = np.stack([r.low_res_logits.numpy() for r in results])
            out[f"c{i}_object_score_logits"] = np.stack([r.object_score_logits.numpy() for r in results])
            out[f"c{i}_obj_ptr"] = np.stack([r.obj_ptrs.numpy() for r in results])
            out[f"c{i}_video_res_masks_packed"] = np.stack([pack_masks(r.mask_logits) for r in results])
    return out
