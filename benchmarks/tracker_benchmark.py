"""Tracker benchmark: seconds per frame for 1 and 8 objects, and peak host memory for a short
and a long propagation (each measured in a fresh process, so peaks do not mix). Prints JSON.

    python benchmarks/tracker_benchmark.py                       # sam2.1_hiera_t at 1024, CPU
    python benchmarks/tracker_benchmark.py --image-size 256      # quick plumbing run
    python benchmarks/tracker_benchmark.py --reference           # also Meta's `sam2` package, same weights and frames

Meta's package is optional and never vendored: `pip install --no-deps --target DIR sam2==1.1.0 hydra-core==1.3.2
omegaconf antlr4-python3-runtime==4.9.3 iopath portalocker tqdm` (SAM2_BUILD_CUDA=0), then run with PYTHONPATH=DIR.

The checkpoint is the deterministic synthetic one (napari_sam2.engine.synthetic_checkpoints), so no download is
needed; speed and memory do not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_sam2.core.frames import model_input_from_rgb
from napari_sam2.engine import Tracker, get_config, load_model
from napari_sam2.engine.host_memory import tune_host_memory
from napari_sam2.engine.synthetic_checkpoints import write_synthetic_checkpoint

HW = (480, 640)


class SyntheticFrames:
    """Frames made on request (nothing is held): drifting bright blobs on a noisy background."""

    def __init__(self, n, image_size, hw=HW, seed=0):
        self.n, self.image_size, self.original_size = n, image_size, hw
        rng = np.random.default_rng(seed)
        self.centres = rng.uniform(0.2, 0.8, size=(8, 2)) * np.array(hw)
        self.velocity = rng.normal(0, 1.5, size=(8, 2))

    def __len__(self):
        return self.n

    def rgb(self, i):
        yy, xx = np.mgrid[: self.original_size[0], : self.original_size[1]]
        img = np.random.default_rng(i).normal(0.1, 0.02, self.original_size)
        for c, v in zip(self.centres, self.velocity):
            cy, cx = c + i * v
            img += 0.8 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 18.0**2))
        return np.repeat(np.clip(img, 0, 1)[..., None], 3, axis=2).astype(np.float32)

    def __getitem__(self, i):
        return model_input_from_rgb(self.rgb(i), self.image_size)

    def prompts(self, n_objects):
        return [(k + 1, [[float(c[1]), float(c[0])]]) for k, c in enumerate(self.centres[:n_objects])]


def checkpoint(variant, cache):
    return write_synthetic_checkpoint(variant, 0, Path(cache) / f"{variant}_seed0.pt")


def time_ours(args, n_objects):
    model = load_model(checkpoint(args.variant, args.cache), device=args.device,
                       config=get_config(args.variant).with_(image_size=args.image_size))
    frames = SyntheticFrames(args.frames, args.image_size)
    tracker = Tracker(model, frames)
    for obj_id, points in frames.prompts(n_objects):
        tracker.add_prompt(0, obj_id, points=points, labels=[1])
    start = time.perf_counter()
    n = sum(1 for _ in tracker.propagate())
    return (time.perf_counter() - start) / n


def time_reference(args, n_objects):
    """Meta's SAM2VideoPredictor on the same checkpoint and frames (needs `pip install sam2 hydra-core iopath`)."""
    from sam2.build_sam import build_sam2_video_predictor  # optional oracle, never vendored

    config = ("configs/sam2.1/" if args.variant.startswith("sam2.1") else "configs/sam2/") + args.variant + ".yaml"
    predictor = build_sam2_video_predictor(config, str(checkpoint(args.variant, args.cache)), device=args.device)
    frames = SyntheticFrames(args.frames, args.image_size)
    images = torch.stack([frames[i] for i in range(len(frames))])
    import sam2.sam2_video_predictor as svp

    svp.load_video_frames = lambda *a, **k: (images, frames.original_size[0], frames.original_size[1])
    state = predictor.init_state(video_path="synthetic")
    for obj_id, points in frames.prompts(n_objects):
        predictor.add_new_points_or_box(state, 0, obj_id, points=np.array(points, np.float32), labels=np.array([1], np.int32))
    start = time.perf_counter()
    n = sum(1 for _ in predictor.propagate_in_video(state))
    return (time.perf_counter() - start) / n


def child_peak_memory(args, n_frames, reference=False):
    """Peak resident memory (MiB) of a fresh process that propagates n_frames."""
    cmd = [sys.executable, __file__, "--child-memory", str(n_frames), "--variant", args.variant,
           "--image-size", str(args.image_size), "--device", args.device, "--cache", args.cache]
    if reference:
        cmd.append("--reference")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]


def peak_rss_mib():
    """Peak resident memory of this process since it started its program.

    Linux: VmHWM of /proc/self/status. Not ru_maxrss: that carries over through fork and exec, so a child would
    report at least its parent's resident size at the fork.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB elsewhere


def run_child_memory(args):
    args.frames = args.child_memory
    (time_reference if args.reference else time_ours)(args, 1)
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="sam2.1_hiera_t")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=8, help="frames per timing run")
    ap.add_argument("--short", type=int, default=16)
    ap.add_argument("--long", type=int, default=64)
    ap.add_argument("--reference", action="store_true", help="also run Meta's sam2 package")
    ap.add_argument("--repeats", type=int, default=2, help="timing runs of each (the fastest counts)")
    ap.add_argument("--cache", default=os.environ.get("NAPARI_SAM2_TEST_CACHE", str(Path(tempfile.gettempdir()) / "napari-sam2-bench")))
    ap.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    tune_host_memory()  # as the command line does: flat resident memory (engine/host_memory.py)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.child_memory:
        return run_child_memory(args)

    report = {"variant": args.variant, "image_size": args.image_size, "device": args.device,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats, "ours": {}}
    ours = report["ours"]
    ref = {} if args.reference else None
    if ref is not None:
        report["reference"] = ref
    # Ours and the reference take turns, and each figure is the fastest of its repeats: the first run in a
    # process pays for warming up the allocator and thread pool, and these machines are noisy.
    for n_obj in (1, 8):
        key = f"seconds_per_frame_{n_obj}_obj"
        times = {"ours": [], "reference": []}
        for _ in range(args.repeats):
            times["ours"].append(time_ours(args, n_obj))
            if ref is not None:
                times["reference"].append(time_reference(args, n_obj))
        ours[key] = min(times["ours"])
        if ref is not None:
            ref[key] = min(times["reference"])
    short, long = child_peak_memory(args, args.short), child_peak_memory(args, args.long)
    ours.update({f"peak_rss_mib_{args.short}_frames": short, f"peak_rss_mib_{args.long}_frames": long,
                 "peak_rss_growth_mib_per_frame": (long - short) / (args.long - args.short)})
    if ref is not None:
        short, long = child_peak_memory(args, args.short, True), child_peak_memory(args, args.long, True)
        ref.update({f"peak_rss_mib_{args.short}_frames": short, f"peak_rss_mib_{args.long}_frames": long,
                    "peak_rss_growth_mib_per_frame": (long - short) / (args.long - args.short)})
        report["speedup"] = {k: ref[k] / ours[k] for k in ref if k.startswith("seconds")}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
