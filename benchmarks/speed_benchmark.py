"""Speed benchmark of what a user waits for, ours and (with --reference) Meta's `sam2` package on the same weights,
frames and prompts, in one process, taking turns. Prints JSON.

    python benchmarks/speed_benchmark.py                                   # sam2.1_hiera_t, 1024 px, 64 frames, CPU
    python benchmarks/speed_benchmark.py --frames 8 --objects 1 --reference   # a quick side-by-side
    PYTHONPATH=/path/to/sam2-target python benchmarks/speed_benchmark.py --reference --device cuda

Figures (seconds unless named otherwise; each the fastest of --repeats runs):
- encoder_s_per_frame: the image encoder on one frame.
- click_ms: a click on a frame whose image features are cached, to its mask (ours: `Tracker.set_prompt`, the
  widget's call; Meta: `add_new_points_or_box` on the frame it last encoded, which it caches).
- propagate_s_per_frame_<k>_obj: k objects clicked on frame 0, tracked to the end, first run on the stack.
- repropagate_s_<k>_obj: after that run, one object corrected on the middle frame and the correction propagated
  (ours: `Tracker.repropagate`, outward from the corrected frame, stopping where the masks agree with before, features
  from the cache; Meta: `propagate_in_video`, its way to make a correction stick: the whole stack again).
- repropagated_frames_<k>_obj: the frames that re-propagation went over, the corrected one included (a count, not
  a time: left out of the speed-ups).
- second_run_s_per_frame_<k>_obj: the same prompts tracked again on the same stack in a new tracker / inference state
  (ours: the passes are replayed from the track cache; Meta computes everything again).
- second_run_features_only_s_per_frame_<k>_obj: ours the same way without the track cache, the features from the
  feature cache (what a new process finds with the features on disk). Meta's figure for it is its second run.
- peak_host_mib (VmHWM of the process: both implementations together with --reference) and peak_device_mib.
With --reference, "speedup" holds Meta's figure / ours for each.
With --propagation-only, only propagate_s_per_frame_<k>_obj (the long figure of many objects over many frames).

The checkpoint is the deterministic synthetic one (napari_sam2.engine.synthetic_checkpoints): speed does not depend
on the weights' values. Frames: drifting bright blobs (tracker_benchmark.SyntheticFrames), prepared before timing for
both. Meta's package: see tracker_benchmark.py for its installation (optional, never vendored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracker_benchmark import SyntheticFrames, checkpoint, peak_rss_mib  # noqa: E402

from napari_sam2.engine import Tracker, get_config, load_model  # noqa: E402
from napari_sam2.engine.devices import PRECISIONS, autocast_dtype, resolve_device  # noqa: E402
from napari_sam2.engine.feature_cache import FeatureCache, encode_image  # noqa: E402
from napari_sam2.engine.host_memory import tune_host_memory  # noqa: E402
from napari_sam2.engine.track_cache import TrackCache  # noqa: E402


class PreparedFrames:
    """SyntheticFrames made once and held: neither side pays for making frames inside a timing."""

    def __init__(self, n, image_size):
        made = SyntheticFrames(n, image_size)
        self.original_size = made.original_size
        self.images = torch.stack([made[i] for i in range(n)])
        self.prompts = made.prompts

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def correction_click(frames, obj_id, frame):
    """A click a little off the object's starting point (the correction), on `frame`."""
    (x, y), = dict(frames.prompts(obj_id))[obj_id]
    return [[x + 3.0, y + 2.0]]


class Ours:
    name = "ours"

    def __init__(self, args, frames):
        self.device = resolve_device(args.device)
        self.model = load_model(checkpoint(args.variant, args.cache), device=self.device,
                                config=get_config(args.variant).with_(image_size=args.image_size))
        # an explicit dtype (float32 too: no autocast, even on a GPU); "auto" leaves the device's policy
        self.model.precision = None if args.precision == "auto" else getattr(torch, args.precision)
        self.frames = frames
        self.cache = FeatureCache(args.cache_mb << 20)
        self.tracks = TrackCache(args.cache_mb << 20)

    def encoder(self):
        self.cache.clear()
        image = self.frames[0]
        t, _ = timed(lambda: (encode_image(self.model, image), sync(self.device)))
        return t

    def click(self, repeats):
        tracker = Tracker(self.model, self.frames, feature_cache=self.cache)
        (obj_id, points), = self.frames.prompts(1)
        tracker.set_prompt(0, obj_id, points=points, labels=[1])  # the frame's features are now cached
        times = []
        for _ in range(repeats):
            t, _ = timed(lambda: (tracker.set_prompt(0, obj_id, points=points, labels=[1]), sync(self.device)))
            times.append(t)
        tracker.close()
        return statistics.median(times)

    def _tracker(self, n_obj, tracks=None):
        tracker = Tracker(self.model, self.frames, feature_cache=self.cache, track_cache=tracks)
        for obj_id, points in self.frames.prompts(n_obj):
            tracker.add_prompt(0, obj_id, points=points, labels=[1])
        return tracker

    def first_and_correction(self, n_obj, correct=True):
        self.cache.clear()
        self.tracks.clear()
        tracker = self._tracker(n_obj, self.tracks)
        t_first, n = timed(lambda: sum(1 for _ in tracker.propagate()))
        if not correct:
            tracker.close()
            return t_first / n, None, None
        mid = len(self.frames) // 2
        tracker.add_prompt(mid, 1, points=correction_click(self.frames, 1, mid), labels=[1])
        t_re, frames_re = timed(lambda: len({r.frame_idx for r in tracker.repropagate()}))
        tracker.close()
        return t_first / n, t_re, frames_re

    def _second_run(self, n_obj, tracks):
        # the same prompts, a new tracker: the feature cache holds the features, `tracks` (if any) the passes
        tracker = self._tracker(n_obj, tracks)
        t, n = timed(lambda: sum(1 for _ in tracker.propagate()))
        tracker.close()
        return t / n

    def second_runs(self, n_obj):
        """(replayed, features only) s/frame."""
        return self._second_run(n_obj, self.tracks), self._second_run(n_obj, None)


class Meta:
    name = "reference"

    def __init__(self, args, frames):
        from reference_scenarios import meta_predictor

        self.device = resolve_device(args.device)
        self.predictor, svp = meta_predictor(args.variant, checkpoint(args.variant, args.cache), args.image_size)
        self.predictor.to(self.device)
        self.frames = frames
        hw = frames.original_size
        svp.load_video_frames = lambda *a, **k: (frames.images, hw[0], hw[1])

    def _state(self, n_obj):
        state = self.predictor.init_state(video_path="in-memory")
        for obj_id, points in self.frames.prompts(n_obj):
            self._click(state, 0, obj_id, points)
        return state

    def _click(self, state, frame, obj_id, points):
        with self._autocast():
            self.predictor.add_new_points_or_box(state, frame, obj_id, points=np.array(points, np.float32),
                                                 labels=np.ones(len(points), np.int32))

    def _autocast(self):
        import contextlib

        dtype = autocast_dtype(self.device)
        return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def _propagate(self, state):
        with self._autocast():
            return sum(1 for _ in self.predictor.propagate_in_video(state))

    def encoder(self):
        image = self.frames[0][None].to(self.device)
        with self._autocast():
            t, _ = timed(lambda: (self.predictor.forward_image(image), sync(self.device)))
        return t

    def click(self, repeats):
        state = self._state(1)
        (obj_id, points), = self.frames.prompts(1)
        times = []
        for _ in range(repeats):
            t, _ = timed(lambda: (self._click(state, 0, obj_id, points), sync(self.device)))
            times.append(t)
        return statistics.median(times)

    def first_and_correction(self, n_obj, correct=True):
        state = self._state(n_obj)
        t_first, n = timed(lambda: self._propagate(state))
        if not correct:
            return t_first / n, None, None
        mid = len(self.frames) // 2
        self._click(state, mid, 1, correction_click(self.frames, 1, mid))
        t_re, frames_re = timed(lambda: self._propagate(state))
        return t_first / n, t_re, frames_re

    def second_runs(self, n_obj):
        """Meta keeps neither features nor passes: one second run is its figure for both."""
        state = self._state(n_obj)
        t, n = timed(lambda: self._propagate(state))
        return t / n, t / n


def measure(sides, args):
    """Every figure of every side, the sides taking turns; the fastest of `repeats` runs counts."""
    figures = {side.name: {} for side in sides}

    def record(key, values):
        for side, value in zip(sides, values):
            previous = figures[side.name].get(key)
            figures[side.name][key] = value if previous is None else min(previous, value)

    for _ in range(args.repeats):
        if args.propagation_only:
            for n_obj in args.objects:
                record(f"propagate_s_per_frame_{n_obj}_obj",
                       [side.first_and_correction(n_obj, correct=False)[0] for side in sides])
            continue
        record("encoder_s_per_frame", [side.encoder() for side in sides])
        record("click_ms", [1000 * side.click(args.click_repeats) for side in sides])
        for n_obj in args.objects:
            pairs = [side.first_and_correction(n_obj) for side in sides]
            record(f"propagate_s_per_frame_{n_obj}_obj", [p[0] for p in pairs])
            record(f"repropagate_s_{n_obj}_obj", [p[1] for p in pairs])
            record(f"repropagated_frames_{n_obj}_obj", [p[2] for p in pairs])
            runs = [side.second_runs(n_obj) for side in sides]
            record(f"second_run_s_per_frame_{n_obj}_obj", [r[0] for r in runs])
            record(f"second_run_features_only_s_per_frame_{n_obj}_obj", [r[1] for r in runs])
    return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="sam2.1_hiera_t")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--objects", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8],
                    help="object counts, e.g. 1,8")
    ap.add_argument("--precision", choices=["auto", *PRECISIONS], default="auto",
                    help="our model's autocast precision (Sam2Model.precision; auto: the device's policy, float32 on a "
                         "CPU); e.g. bfloat16 with --image-size 512 on a CPU is fast mode on a CPU with native bf16. "
                         "Meta's side keeps the device's policy")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--click-repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache-mb", type=int, default=4096, help="our feature cache's and track cache's memory (MiB)")
    ap.add_argument("--reference", action="store_true", help="also Meta's sam2 package, and the speed-ups")
    ap.add_argument("--propagation-only", action="store_true",
                    help="only the first propagation of each object count (no encoder, click, correction, second run)")
    ap.add_argument("--cache", default=os.environ.get("NAPARI_SAM2_TEST_CACHE",
                                                      str(Path(tempfile.gettempdir()) / "napari-sam2-bench")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tune_host_memory()  # as the command line does (engine/host_memory.py)
    device = resolve_device(args.device)
    frames = PreparedFrames(args.frames, args.image_size)
    sides = [Ours(args, frames)]
    if args.reference:
        sides.append(Meta(args, frames))
    figures = measure(sides, args)
    report = {
        "variant": args.variant, "image_size": args.image_size, "frames": args.frames, "objects": args.objects,
        "device": str(device), "precision": str(sides[0].model.autocast_dtype).removeprefix("torch."),
        "meta_precision": (str(autocast_dtype(device) or torch.float32).removeprefix("torch.") if args.reference
                           else None),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats, **figures,
        "peak_host_mib": round(peak_rss_mib(), 1),
    }
    if device.type == "cuda":
        report["peak_device_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if args.reference:
        ours, ref = figures["ours"], figures["reference"]
        report["speedup"] = {key: round(ref[key] / ours[key], 3) for key in ours
                             if not key.startswith("repropagated_frames")}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
