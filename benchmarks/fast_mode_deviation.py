"""How far fast mode (the model at a 512-px input, models.loaded.fast_variant) is from exact SAM2: the golden video
scenarios (Meta's outputs at 1024 px, ../shared/reference/golden) run through our Tracker at 1024 (exact) and at the
fast input, every final mask compared with Meta's. Prints JSON: per scenario, the mask IoU with Meta's (mean and
lowest over every (call, frame, object) mask that either side has non-empty), the share of object-present decisions
(score > 0) that agree, and the seconds each run took.

    python benchmarks/fast_mode_deviation.py [--golden-dir ../shared/reference/golden] [--size 512]

The golden checkpoints are random (synthetic) weights, whose masks are blobs with ragged edges: the IoU measures how
much the coarser input moves the masks, and would be higher for the smooth masks of trained weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from video_golden import GoldenFrames, run_calls  # noqa: E402  (the golden tests' own call runner and frames)

from napari_sam2.engine import Tracker, load_model  # noqa: E402
from napari_sam2.engine.checkpoints import at_image_size  # noqa: E402
from napari_sam2.engine.devices import cpu_native_bf16  # noqa: E402
from napari_sam2.engine.preprocess import model_input  # noqa: E402
from napari_sam2.engine.synthetic_checkpoints import write_synthetic_checkpoint  # noqa: E402

SCENARIOS = ("video_sam2.1_t", "video_sam2_t")


class ResizedFrames(GoldenFrames):
    """The golden frames (1024 px) resized to another model input, as StackFrames would give them."""

    def __init__(self, frames_u8, video_hw, size):
        super().__init__(frames_u8, video_hw)
        self.size = size

    def __getitem__(self, i):
        x = torch.from_numpy(self.frames_u8[i]).permute(2, 0, 1).float() / 255.0
        return model_input(x, self.size)


def masks_by_call(side, arrays):
    """(call, row) -> boolean video-res mask, and -> object score, from golden-format arrays."""
    masks, scores = {}, {}
    for i, _ in enumerate(side["calls"]):
        packed = arrays.get(f"c{i}_video_res_masks_packed")
        if packed is None:
            continue
        width = side["video_hw"][1]
        unpacked = np.unpackbits(packed, axis=-1)[..., :width].astype(bool)
        score = arrays[f"c{i}_object_score_logits"]
        for index in np.ndindex(unpacked.shape[:-2]):
            masks[(i, *index)] = unpacked[index]
        for index in np.ndindex(score.shape):
            scores[(i, *index)] = score[index] > 0
    return masks, scores


def compare(side, gold, produced):
    gold_masks, gold_scores = masks_by_call(side, gold)
    ours_masks, ours_scores = masks_by_call(side, produced)
    ious = []
    for key, mask in gold_masks.items():
        other = ours_masks[key]
        union = (mask | other).sum()
        if union:
            ious.append((mask & other).sum() / union)
    agree = np.mean([gold_scores[k] == ours_scores[k] for k in gold_scores])
    return {"mask_iou_mean": round(float(np.mean(ious)), 4), "mask_iou_min": round(float(np.min(ious)), 4),
            "masks_compared": len(ious), "presence_agreement": round(float(agree), 4)}


VARIANTS = {  # name -> (input size or None for the exact 1024, autocast dtype or None for float32)
    "exact": (None, None),
    "input": ("size", None),
    "bf16": (None, torch.bfloat16),
    "input+bf16": ("size", torch.bfloat16),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--golden-dir", default=str(ROOT.parent / "shared" / "reference" / "golden"))
    ap.add_argument("--size", type=int, default=512, help="the fast input size (pixels)")
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "test-checkpoints"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"a comma-separated choice of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report = {"fast_image_size": args.size, "threads": args.threads, "cpu_native_bf16": cpu_native_bf16(),
              "torch": torch.__version__, "scenarios": {}}
    for name in SCENARIOS:
        golden = Path(args.golden_dir)
        side = json.loads((golden / f"{name}.json").read_text())
        with np.load(golden / f"{name}.npz") as z:
            gold = {k: z[k] for k in z.files}
        seed = side["checkpoint"]["seed"]
        path = write_synthetic_checkpoint(side["config"], seed, Path(args.cache) / f"{side['config']}_seed{seed}.pt")
        exact = load_model(path, device="cpu")
        row = {}
        for label in args.variants.split(","):
            size, dtype = VARIANTS[label]
            model = at_image_size(exact, args.size if size else exact.image_size, precision=dtype)
            frames = (ResizedFrames(gold["frames_u8"], side["video_hw"], args.size) if size
                      else GoldenFrames(gold["frames_u8"], side["video_hw"]))
            start = time.perf_counter()
            produced = run_calls(Tracker(model, frames), side["calls"])
            row[label] = {"seconds": round(time.perf_counter() - start, 1), **compare(side, gold, produced)}
        if "exact" in row:
            row["speedup"] = {label: round(row["exact"]["seconds"] / r["seconds"], 2)
                              for label, r in row.items() if label != "exact"}
        report["scenarios"][name] = row
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
