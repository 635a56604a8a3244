"""Runs a golden video scenario's calls through Tracker and collects the arrays the reference stores; makes the
frames of the extra golden scenarios (tests/data/golden_extra) and of benchmarks/reference_scenarios.py."""

import hashlib
from pathlib import Path

import numpy as np
import torch

from napari_sam2.engine.preprocess import model_input


class GoldenFrames:
    """The reference's frames (already at model size), normalised as the reference does."""

    def __init__(self, frames_u8, video_hw):
        self.frames_u8 = frames_u8
        self.original_size = tuple(video_hw)

    def __len__(self):
        return len(self.frames_u8)

    def __getitem__(self, i):
        x = torch.from_numpy(self.frames_u8[i]).permute(2, 0, 1).float() / 255.0
        return model_input(x, x.shape[-1])  # already at model size: normalised only


def pack_masks(mask_logits):
    """(n, H, W) logits -> the reference's packed `> 0` bits."""
    return np.packbits(mask_logits.numpy() > 0, axis=-1)


def mask_from_spec(spec: dict, video_hw) -> np.ndarray:
    """A mask prompt (H, W) bool from a scenario call's spec: {"ellipse": [row, col, radius_rows, radius_cols]}."""
    row, col, r_rows, r_cols = spec["ellipse"]
    rows, cols = np.ogrid[: video_hw[0], : video_hw[1]]
    return ((rows - row) / r_rows) ** 2 + ((cols - col) / r_cols) ** 2 <= 1.0


def run_calls(tracker, calls, on_call=None):
    out = {}
    for i, call in enumerate(calls):
        if on_call:
            on_call(i)
        if call["op"] in ("add", "mask"):
            if call["op"] == "mask":
                res = tracker.add_mask(call["frame_idx"], call["obj_id"], mask_from_spec(call["mask"], tracker.video_hw))
            else:
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


class TensorFrames:
    """Frames already turned into model inputs (T, 3, S, S), with the video's original size."""

    def __init__(self, images, video_hw):
        self.images, self.original_size = images, tuple(video_hw)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def golden_video_frames_u8(golden_dir) -> np.ndarray:
    """The 16 frames of the two golden videos (uint8 (16, 1024, 1024, 3) RGB): video_sam2.1_t's 8, then video_sam2_t's."""
    return np.concatenate([np.load(Path(golden_dir) / f"{name}.npz")["frames_u8"] for name in ("video_sam2.1_t", "video_sam2_t")])


def cell_timelapse_u8(n_frames, hw, seed, n_cells=6) -> np.ndarray:
    """n_frames of the sample time-lapse (napari_sam2.io.sample_data.make_cell_timelapse: cells wandering, one of them
    dividing halfway) at hw = (H, W): scaled to uint8 by the stack's maximum, grey repeated as RGB (T, H, W, 3).
    Any length, deterministic for a seed, no data files needed."""
    from napari_sam2.io.sample_data import make_cell_timelapse

    image, _ = make_cell_timelapse(shape=(int(n_frames), int(hw[0]), int(hw[1])), n_cells=n_cells, seed=seed)
    grey = np.round(image / image.max() * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def frames_from_spec(spec: dict, golden_dir=None) -> np.ndarray:
    """uint8 RGB frames (T, H, W, 3) from a scenario's frame spec: {"source": "golden_videos", "first", "last"} (frames
    first..last-1 of golden_video_frames_u8) or {"source": "cell_timelapse", "n_frames", "hw", "seed", "n_cells"}."""
    if spec["source"] == "golden_videos":
        if golden_dir is None:
            raise ValueError("frames of the golden videos need the golden folder")
        return golden_video_frames_u8(golden_dir)[spec["first"] : spec["last"]]
    if spec["source"] == "cell_timelapse":
        return cell_timelapse_u8(spec["n_frames"], spec["hw"], spec["seed"], spec.get("n_cells", 6))
    raise ValueError(f"unknown frame source {spec['source']!r}")


def frames_sha256(frames_u8: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames_u8).tobytes()).hexdigest()


def model_inputs(frames_u8: np.ndarray, image_size: int) -> torch.Tensor:
    """(T, 3, S, S) float32 model inputs: napari_sam2.core.frames.model_input_from_rgb(frame / 255.0, S) per frame."""
    from napari_sam2.core.frames import model_input_from_rgb

    return torch.stack([model_input_from_rgb(f / 255.0, image_size) for f in frames_u8])
