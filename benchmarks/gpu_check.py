"""The checks a CUDA machine must pass, in one run that prints JSON (and writes it to --out):

1. golden: every golden image and video scenario (Meta's outputs, ../shared/reference/golden or --golden-dir) run on
   the device in float32 (NAPARI_SAM2_PRECISION=float32: must be within the reference tolerances) and in the
   device's default precision (bfloat16 on Ampere and later: the deviation is reported, per scenario the arrays out
   of tolerance and the worst ratio of error to tolerance);
2. fps: frames per second of a propagation for each variant (tiny, small, base+, large) with 1 and 8 objects;
3. memory: peak device memory over a long propagation (--long-frames, 500 by default) with tiny and one object;
4. reference (when Meta's `sam2` package imports, e.g. carried as wheels): the same propagation in Meta's eager
   predictor, and the speed-up;
5. compile: `Sam2Model.compile` (torch.compile, --compile-backend / --compile-mode) with tiny: the first click's wait
   (the compilation), whether any later number of clicks or a box compiles again (it must not), the propagation's
   FPS compiled and eager with 1 and 8 objects, and the golden video scenarios run compiled in float32 (the
   deviation compilation alone brings).

    PYTHONPATH=src python benchmarks/gpu_check.py --out results.json                 # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --quick --golden-dir tests/data/golden_extra   # plumbing, on a CPU

--quick: only sam2.1_hiera_t, a 256-px input, 4 frames, an 8-frame long run. The golden folder must hold the
reference's compare.py beside its scenarios' parent (as ../shared/reference does) or --compare gives it; a folder of
the extra golden scenarios (tests/data/golden_extra, 256 px) works too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compiled_clicks import varied_clicks  # noqa: E402
from image_golden import run_image_scenario  # noqa: E402  (the golden tests' own runners)
from video_golden import GoldenFrames, TensorFrames, frames_from_spec, model_inputs, run_calls  # noqa: E402

from napari_sam2.engine import Tracker, get_config, load_model  # noqa: E402
from napari_sam2.engine.devices import autocast_dtype, resolve_device  # noqa: E402
from napari_sam2.engine.synthetic_checkpoints import write_synthetic_checkpoint  # noqa: E402

FULL_VARIANTS = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l")


def checkpoint(variant, seed, cache):
    return write_synthetic_checkpoint(variant, seed, Path(cache) / f"{variant}_seed{seed}.pt")


def load_compare(path):
    spec = importlib.util.spec_from_file_location("reference_compare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden_scenarios(folder: Path, names=None):
    """(name, sidecar, arrays) of every golden scenario in `folder` (or of those named)."""
    for path in sorted(folder.glob("*.json")):
        if names and path.stem not in names:
            continue
        side = json.loads(path.read_text())
        if "calls" not in side and "prompts" not in side:
            continue
        with np.load(path.with_suffix(".npz")) as z:
            yield path.stem, side, {k: z[k] for k in z.files}


def run_golden(name, side, gold, device, args, compiled=False):
    """Our outputs of one golden scenario on `device`, in the current precision (with `compiled`, by the model
    compiled as --compile-backend / --compile-mode say)."""
    size = side.get("image_size")
    config = get_config(side["config"]) if size is None else get_config(side["config"]).with_(image_size=size)
    model = load_model(checkpoint(side["config"], side["checkpoint"]["seed"], args.cache), device=device, config=config)
    if compiled:
        model.compile(backend=args.compile_backend, mode=args.compile_mode)
    if "prompts" in side:
        return run_image_scenario(model, side, gold)
    if "frames_u8" in gold:
        frames = GoldenFrames(gold["frames_u8"], side["video_hw"])
    else:  # the extra scenarios: frames made from their spec
        frames = TensorFrames(model_inputs(frames_from_spec(side["frames"], args.frames_dir), size), side["video_hw"])
    return run_calls(Tracker(model, frames), side["calls"])


def summarise(rows):
    """Rows of compare_one -> how many arrays are out of tolerance, the largest relative error and the lowest mask
    agreement; the debug arrays (captured inside the golden tests only) are left out."""
    rows = [r for r in rows if not r["array"].startswith("debug_")]
    bad = [r for r in rows if r["status"] != "ok"]
    rel = [r["max_rel"] for r in rows if "max_rel" in r]
    agreement = [r["agreement"] for r in rows if "agreement" in r]
    return {"arrays": len(rows), "out_of_tolerance": len(bad), "worst_max_rel": max(rel, default=None),
            "lowest_mask_agreement": min(agreement, default=None), "first_out": [r["array"] for r in bad[:5]]}


def golden_results(device, args, compiled=False, kind=""):
    """Each golden scenario (of `kind`, "image" or "video", or all) run and compared with Meta's outputs."""
    compare = load_compare(args.compare)
    results = {}
    for name, side, gold in golden_scenarios(args.golden_dir, args.scenarios):
        if not name.startswith(kind):
            continue
        start = time.perf_counter()
        produced = run_golden(name, side, gold, device, args, compiled)
        results[name] = {"seconds": round(time.perf_counter() - start, 1),
                         **summarise(compare.compare_one(side, gold, produced))}
    return results


def check_golden(device, args):
    report = {}
    for precision in ("float32", "auto"):
        os.environ["NAPARI_SAM2_PRECISION"] = precision
        label = str(autocast_dtype(device) or torch.float32).removeprefix("torch.")
        if label in report:  # the device's default is float32 (a CPU): nothing more to run
            continue
        report[label] = golden_results(device, args)
    os.environ.pop("NAPARI_SAM2_PRECISION", None)
    report["float32_all_within_tolerance"] = all(r["out_of_tolerance"] == 0 for r in report["float32"].values())
    return report


class DeviceFrames:
    """Synthetic frames (drifting blobs, tracker_benchmark.SyntheticFrames) made once per index on request."""

    def __init__(self, n, image_size):
        from tracker_benchmark import SyntheticFrames

        self.made = SyntheticFrames(min(n, 64), image_size)
        self.n, self.original_size = n, self.made.original_size
        self._memo = {}

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        j = i % len(self.made)  # a long stack repeats its first 64 frames (the tracker does not know)
        if j not in self._memo:
            self._memo[j] = self.made[j]
        return self._memo[j]

    def prompts(self, n):
        return self.made.prompts(n)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def propagate_fps(model, frames, n_obj, device):
    tracker = Tracker(model, frames)
    for obj_id, points in frames.prompts(n_obj):
        tracker.add_prompt(0, obj_id, points=points, labels=[1])
    for _ in tracker.propagate(max_frame_num_to_track=2):  # warm-up: two tracked frames (kernels, compilation, allocator)
        pass
    tracker.clear_tracking()
    sync(device)
    start = time.perf_counter()
    n = sum(1 for _ in tracker.propagate())
    sync(device)
    tracker.close()
    return n / (time.perf_counter() - start)


def benchmark_model(variant, device, args):
    return load_model(checkpoint(variant, 0, args.cache), device=device,
                      config=get_config(variant).with_(image_size=args.image_size))


def check_fps(device, args):
    out = {}
    for variant in args.variants:
        model = benchmark_model(variant, device, args)
        frames = DeviceFrames(args.frames, args.image_size)
        out[variant] = {f"{n}_obj": round(propagate_fps(model, frames, n, device), 2) for n in (1, 8)}
        del model
    return out


def check_compile(device, args):
    import torch._dynamo

    variant = args.variants[0]
    model = benchmark_model(variant, device, args).compile(backend=args.compile_backend, mode=args.compile_mode)
    frames = DeviceFrames(args.frames, args.image_size)
    tracker = Tracker(model, frames)
    (obj_id, points), = frames.prompts(1)
    start = time.perf_counter()
    tracker.set_prompt(0, obj_id, points=points, labels=[1])
    sync(device)
    out = {"variant": variant, "backend": args.compile_backend, "mode": args.compile_mode,
           "first_click_s": round(time.perf_counter() - start, 1)}
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            out["later_prompts"] = len(varied_clicks(tracker, obj_id, points))
        out["recompiled_for_clicks"] = False
    except Exception as error:  # torch._dynamo's RecompileError, raised through the tracker
        out["recompiled_for_clicks"] = f"{type(error).__name__}: {str(error)[:300]}"
    tracker.close()
    eager = benchmark_model(variant, device, args)
    for n in (1, 8):
        compiled_fps, eager_fps = propagate_fps(model, frames, n, device), propagate_fps(eager, frames, n, device)
        out[f"{n}_obj"] = {"compiled_fps": round(compiled_fps, 2), "eager_fps": round(eager_fps, 2),
                           "speedup": round(compiled_fps / eager_fps, 3)}
    os.environ["NAPARI_SAM2_PRECISION"] = "float32"
    out["golden_float32"] = golden_results(device, args, compiled=True, kind="video")
    os.environ.pop("NAPARI_SAM2_PRECISION", None)
    return out


def check_memory(device, args):
    variant = args.variants[0]
    model = benchmark_model(variant, device, args)
    frames = DeviceFrames(args.long_frames, args.image_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fps = propagate_fps(model, frames, 1, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"variant": variant, "frames": args.long_frames, "fps": round(fps, 2),
            "peak_device_mib": None if peak is None else round(peak, 1)}


def check_reference(device, args):
    if importlib.util.find_spec("sam2") is None:  # Meta's package: optional, carried as wheels
        return {"status": "sam2 package not importable: not measured"}
    from speed_benchmark import Meta, Ours, PreparedFrames

    frames = PreparedFrames(args.frames, args.image_size)
    bench = argparse.Namespace(device=str(device), variant=args.variants[0], image_size=args.image_size,
                               cache=args.cache, cache_mb=4096)
    ours, meta = Ours(bench, frames), Meta(bench, frames)
    out = {}
    for n in (1, 8):
        mine, theirs = ours.first_and_correction(n)[0], meta.first_and_correction(n)[0]
        out[f"{n}_obj"] = {"ours_s_per_frame": mine, "meta_eager_s_per_frame": theirs, "speedup": theirs / mine}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--golden-dir", type=Path, default=ROOT.parent / "shared" / "reference" / "golden")
    ap.add_argument("--compare", type=Path, help="the reference's compare.py (default: beside the golden folder, or "
                                                  "../shared/reference/compare.py)")
    ap.add_argument("--frames-dir", type=Path, default=ROOT.parent / "shared" / "reference" / "golden",
                    help="the golden folder whose videos the extra scenarios take their frames from")
    ap.add_argument("--scenarios", type=lambda text: set(text.split(",")), help="only these golden scenarios")
    ap.add_argument("--quick", action="store_true", help="tiny only, 256 px, few frames: to check the plumbing")
    ap.add_argument("--skip", default="",
                    help="comma-separated parts to leave out: golden, fps, memory, reference, compile")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile's backend for the compile part")
    ap.add_argument("--compile-mode", help="torch.compile's mode for the compile part (default: its default)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "test-checkpoints"))
    args = ap.parse_args()
    if args.compare is None:
        beside = args.golden_dir.parent / "compare.py"
        args.compare = beside if beside.is_file() else ROOT.parent / "shared" / "reference" / "compare.py"
    args.variants = FULL_VARIANTS[:1] if args.quick else FULL_VARIANTS
    args.image_size = 256 if args.quick else 1024
    args.frames = 4 if args.quick else 64
    args.long_frames = 8 if args.quick else 500
    skip = {part for part in args.skip.split(",") if part}
    device = resolve_device(args.device)
    report = {"device": str(device), "torch": torch.__version__,
              "default_precision": str(autocast_dtype(device) or torch.float32).removeprefix("torch.")}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    checks = {"golden": check_golden, "fps": check_fps, "memory": check_memory, "reference": check_reference,
              "compile": check_compile}
    for name, check in checks.items():
        if name in skip:
            continue
        start = time.perf_counter()
        report[name] = check(device, args)
        report[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
        if args.out:  # what is done so far survives a run cut short
            args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
