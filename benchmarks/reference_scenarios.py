"""Random video scenarios run through Meta's SAM2VideoPredictor and through our Tracker, compared array by
array with the reference tolerances (`../shared/reference/compare.py`). Prints JSON, one line per scenario, and a
summary; exits 1 if any scenario is out of tolerance.

    PYTHONPATH=/path/to/sam2-target python benchmarks/reference_scenarios.py --seeds 0-9 --image-size 512

Each seed draws a variant, a checkpoint seed, frames (the golden videos' frames, resized to the model size), an
original frame size, and a call sequence: clicks and boxes for up to 3 objects on any frame, objects added after
tracking started, corrections on tracked frames, clicks added to earlier ones (`clear_old_points=False`),
forward and reverse passes from any start and of any length (reverse first too), object removal and reset.
The arrays compared are those of the golden video scenarios (shared/reference/README.md).

Status per scenario: "ok" (every array within tolerance, or both implementations refuse the call sequence),
"noise" (out of tolerance, but no more than twice as far as Meta's code is from itself when re-run with other
threads and a plain softmax attention, as the reference README measured its noise floor: some random-weight
scenarios amplify float rounding beyond the tolerances), or "FAIL".

Long scenarios (`--long`): 48-80 frames, which the golden videos (16 frames) cannot give, so the frames come from
the sample time-lapse instead (`napari_sam2.io.sample_data.make_cell_timelapse` at the drawn original size: cells
wandering, one dividing halfway; scaled to uint8 by the stack's maximum, grey as RGB; see tests/video_golden.py,
`cell_timelapse_u8`), deterministic for the drawn frame seed. 2-3 objects prompted anywhere, a forward pass to the
end, then corrections at least 20 frames behind the latest tracked frame followed by a pass, reverse passes from
prompted frames in the middle, passes from any start and of any length, objects added late, clicks added to
earlier ones:

    PYTHONPATH=/path/to/sam2-target python benchmarks/reference_scenarios.py --long --seeds 0-3 --image-size 256

`--keep-frames N` hands our Tracker keep_frames=N (to compare its memory settings).

`--write-golden DIR` instead writes the fixed scenarios of FIXED_SCENARIOS (the extra golden data of
tests/test_engine_golden_extra.py, at a 256-px model input) as DIR/<name>.json + DIR/<name>.npz in the reference's
golden format, from Meta's predictor; each sidecar also records how far our Tracker and Meta's code re-run
(1 thread, plain softmax attention) are from the golden arrays.

Meta's package is an optional oracle, installed beside (never vendored): see tracker_benchmark.py. Its hole
filling needs its CUDA extension and is silently skipped without it; the golden data emulate the GPU behaviour,
and so does this script, by handing Meta's predictor our `fill_holes`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.engine import Tracker, get_config, load_model
from napari_sam2.engine.postprocess import fill_holes
from napari_sam2.engine.synthetic_checkpoints import write_synthetic_checkpoint

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "reference" / "golden"
sys.path.insert(0, str(ROOT / "tests"))
from video_golden import (  # noqa: E402  (the golden tests' own call runner and frames)
    TensorFrames,
    frames_from_spec,
    frames_sha256,
    golden_video_frames_u8,
    mask_from_spec,
    model_inputs,
    pack_masks,
    run_calls,
)

VARIANTS = ["sam2.1_hiera_t", "sam2_hiera_t", "sam2.1_hiera_s", "sam2_hiera_s"]


def load_compare():
    spec = importlib.util.spec_from_file_location("reference_compare", GOLDEN.parent / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden_frames_u8():
    """The 16 frames of the two golden videos (uint8, 1024 x 1024 RGB)."""
    return golden_video_frames_u8(GOLDEN)


def _random_point(rng, hw):
    """(x, y) anywhere in an (H, W) frame, to 0.1 px."""
    return [round(float(rng.uniform(0, hw[1] - 1)), 1), round(float(rng.uniform(0, hw[0] - 1)), 1)]


def _random_box(rng, hw, max_side):
    """(x0, y0, x1, y1): a random corner and sides of 20 to max_side px, clipped to the frame."""
    x0, y0 = _random_point(rng, hw)
    return [x0, y0, round(min(x0 + rng.uniform(20, max_side), hw[1] - 1), 1),
            round(min(y0 + rng.uniform(20, max_side), hw[0] - 1), 1)]


def draw_scenario(seed, n_golden_frames=16):
    """A scenario like the golden sidecars' (variant, checkpoint seed, frames, video_hw, calls), drawn from seed."""
    rng = np.random.default_rng(seed)
    n_frames = int(rng.integers(4, 10))
    first = int(rng.integers(0, n_golden_frames - n_frames + 1))
    hw = [int(rng.integers(300, 900)), int(rng.integers(300, 900))]
    scenario = {"seed": seed, "variant": VARIANTS[seed % len(VARIANTS)], "checkpoint_seed": int(rng.integers(1000, 2000)),
                "frames": {"source": "golden_videos", "first": first, "last": first + n_frames}, "video_hw": hw,
                "calls": []}
    calls, objects, prompted = scenario["calls"], [], False

    def add(frame_idx, obj_id):
        call = {"op": "add", "frame_idx": frame_idx, "obj_id": obj_id}
        if rng.random() < 0.3:
            call["box"] = _random_box(rng, hw, 200)
        if "box" not in call or rng.random() < 0.5:
            n = int(rng.integers(1, 4))
            call["points"] = [_random_point(rng, hw) for _ in range(n)]
            call["labels"] = [int(v) for v in rng.integers(0, 2, n)]
            call["labels"][0] = 1
            if "box" not in call and rng.random() < 0.25:
                call["clear_old_points"] = False
        calls.append(call)

    for _ in range(int(rng.integers(3, 8))):
        r = rng.random()
        if not prompted or r < 0.45:
            new = not objects or (len(objects) < 3 and rng.random() < 0.4)
            obj_id = int(rng.integers(1, 100)) if new else int(rng.choice(objects))
            while new and obj_id in objects:
                obj_id += 1
            if new:
                objects.append(obj_id)
            add(int(rng.integers(0, n_frames)), obj_id)
            prompted = True
        elif r < 0.9:
            start = None if rng.random() < 0.5 else int(rng.integers(0, n_frames))
            length = None if rng.random() < 0.6 else int(rng.integers(0, n_frames))
            calls.append({"op": "propagate", "start_frame_idx": start, "max_frame_num_to_track": length,
                          "reverse": bool(rng.random() < 0.4)})
        elif r < 0.97:
            if len(objects) < 2:
                continue
            obj_id = int(rng.choice(objects))
            objects.remove(obj_id)
            calls.append({"op": "remove", "obj_id": obj_id})
        else:
            calls.append({"op": "reset"})
            objects, prompted = [], False
    if prompted:
        calls.append({"op": "propagate", "start_frame_idx": None, "max_frame_num_to_track": None, "reverse": False})
    return scenario


def draw_long_scenario(seed):
    """A long scenario (48-80 frames of the sample time-lapse, module docstring), drawn from seed: 2-3 objects
    prompted anywhere, a forward pass to the end, then 3-6 of: a correction >= 20 frames behind the latest tracked
    frame followed by a pass from the corrected frame, the next one or anywhere; a reverse pass from a prompted
    frame; a pass from any start, of any length, either way; a new object; clicks added to a prompted frame
    (clear_old_points=False). A forward pass from the default start ends it."""
    rng = np.random.default_rng([seed, 48])
    n = int(rng.integers(48, 81))
    hw = [int(rng.integers(160, 481)), int(rng.integers(160, 481))]
    scenario = {"seed": seed, "variant": VARIANTS[seed % len(VARIANTS)], "checkpoint_seed": int(rng.integers(1000, 2000)),
                "frames": {"source": "cell_timelapse", "n_frames": n, "hw": hw, "seed": int(rng.integers(0, 1000)),
                           "n_cells": 6},
                "video_hw": hw, "calls": []}
    calls = scenario["calls"]
    tracked, prompted, latest = {}, {}, [0]  # obj -> frames tracked / prompted as conditioning frames

    def add(frame_idx, obj_id, keep_old=False):
        call = {"op": "add", "frame_idx": frame_idx, "obj_id": obj_id}
        if not keep_old and rng.random() < 0.3:
            call["box"] = _random_box(rng, hw, 120)
        if "box" not in call or rng.random() < 0.5:
            k = int(rng.integers(1, 3))
            call["points"] = [_random_point(rng, hw) for _ in range(k)]
            call["labels"] = [int(v) for v in rng.integers(0, 2, k)]
            if frame_idx not in tracked.get(obj_id, ()):
                call["labels"][0] = 1  # a new conditioning frame starts with a positive click
        if keep_old:
            call["clear_old_points"] = False
        if frame_idx not in tracked.setdefault(obj_id, set()):
            prompted.setdefault(obj_id, []).append(frame_idx)
        calls.append(call)

    def propagate(start, length, reverse):
        calls.append({"op": "propagate", "start_frame_idx": start, "max_frame_num_to_track": length, "reverse": reverse})
        s = min(t for frames in prompted.values() for t in frames) if start is None else start
        m = n if length is None else length
        if reverse:
            order = list(range(s, max(s - m, 0) - 1, -1)) if s > 0 else []
        else:
            order = list(range(s, min(s + m, n - 1) + 1))
        for frames in tracked.values():
            frames.update(order)
        if order:
            latest[0] = order[-1]

    for obj_id in range(1, int(rng.integers(2, 4)) + 1):
        add(int(rng.integers(0, n)), obj_id)
    propagate(None, None, False)
    for _ in range(int(rng.integers(3, 7))):
        r = rng.random()
        if r < 0.35:
            obj_id = int(rng.choice(sorted(tracked)))
            far = [t for t in sorted(tracked[obj_id]) if abs(t - latest[0]) >= 20]
            if not far:
                continue
            t = int(rng.choice(far))
            add(t, obj_id)
            start = [t, min(t + 1, n - 1), int(rng.integers(0, n))][int(rng.integers(0, 3))]
            propagate(start, None if rng.random() < 0.5 else int(rng.integers(1, 30)), bool(rng.random() < 0.3))
        elif r < 0.6:
            start = int(rng.choice([t for frames in prompted.values() for t in frames]))
            propagate(start, None if rng.random() < 0.6 else int(rng.integers(5, 40)), True)
        elif r < 0.8:
            propagate(int(rng.integers(0, n)), None if rng.random() < 0.5 else int(rng.integers(1, 40)),
                      bool(rng.random() < 0.5))
        elif r < 0.9 and len(tracked) < 3:
            add(int(rng.integers(0, n)), max(tracked) + 1)
        else:
            obj_id = int(rng.choice(sorted(prompted)))
            add(int(rng.choice(prompted[obj_id])), obj_id, keep_old=True)
    propagate(None, None, False)
    return scenario


# The extra golden scenarios of tests/test_engine_golden_extra.py (--write-golden). "omit": arrays not stored (the
# test compares what is stored), to keep the files small.
_LONG_FRAMES = {"source": "cell_timelapse", "n_frames": 56, "hw": [192, 256], "seed": 7, "n_cells": 6}
FIXED_SCENARIOS: dict = {
    "video_sam2.1_t_long": {
        "description": (
            "SAM2.1 tiny at a 256-px model input, 56 frames of the sample time-lapse (192 x 256; cell 1 divides at "
            "frame 28), 3 objects. obj 1: a click on cell 1, frame 4; obj 2: a box around cell 5, frame 10; obj 3: a "
            "positive click on cell 6 and a negative one on cell 3, frame 30; forward from the default start (4) to "
            "the end; a negative click for obj 1 on frame 20 (35 frames behind the latest tracked frame); forward "
            "from 21 for 7 more frames; reverse from frame 30 (obj 3's prompted frame) for 9 frames; a click for "
            "obj 2 on frame 24 (tracked in reverse); reverse from 24 for 3 frames. The logits of the first forward "
            "pass are not stored (size); its object scores, pointers and masks are."),
        "variant": "sam2.1_hiera_t", "checkpoint_seed": 1011, "image_size": 256,
        "frames": _LONG_FRAMES, "video_hw": _LONG_FRAMES["hw"],
        "calls": [
            {"op": "add", "frame_idx": 4, "obj_id": 1, "points": [[64.0, 48.0]], "labels": [1]},
            {"op": "add", "frame_idx": 10, "obj_id": 2, "box": [80.0, 143.0, 123.0, 185.0]},
            {"op": "add", "frame_idx": 30, "obj_id": 3, "points": [[166.2, 121.0], [212.9, 23.3]], "labels": [1, 0]},
            {"op": "propagate", "start_frame_idx": None, "max_frame_num_to_track": None, "reverse": False},
            {"op": "add", "frame_idx": 20, "obj_id": 1, "points": [[40.0, 119.0]], "labels": [0]},
            {"op": "propagate", "start_frame_idx": 21, "max_frame_num_to_track": 7, "reverse": False},
            {"op": "propagate", "start_frame_idx": 30, "max_frame_num_to_track": 9, "reverse": True},
            {"op": "add", "frame_idx": 24, "obj_id": 2, "points": [[104.0, 146.0]], "labels": [1]},
            {"op": "propagate", "start_frame_idx": 24, "max_frame_num_to_track": 3, "reverse": True},
        ],
        "omit": ["c3_low_res_logits"],
        "omit_reason": "not stored, to keep the file small (the pass is still checked by its object scores, "
                       "pointers and masks)",
    },
    "video_sam2.1_t_mask_prompts": {
        "description": (
            "SAM2.1 tiny at a 256-px model input, the first 10 golden video frames as a 540 x 960 video: mask prompts "
            "(Meta's add_new_mask). obj 1: a mask (ellipse) on frame 2; obj 2: a positive click on frame 2; obj 3: a "
            "mask on frame 5, then a positive and a negative click on frame 5 (clicks after a mask on one frame: "
            "the mask's logits are the decoder's mask input); forward from the default start (2); a mask for obj 1 "
            "on frame 7 (a tracked frame: a correction by mask); reverse from frame 7."),
        "variant": "sam2.1_hiera_t", "checkpoint_seed": 1203, "image_size": 256,
        "frames": {"source": "golden_videos", "first": 0, "last": 10}, "video_hw": [540, 960],
        "calls": [
            {"op": "mask", "frame_idx": 2, "obj_id": 1, "mask": {"ellipse": [270.0, 480.0, 90.0, 140.0]}},
            {"op": "add", "frame_idx": 2, "obj_id": 2, "points": [[200.5, 120.0]], "labels": [1]},
            {"op": "mask", "frame_idx": 5, "obj_id": 3, "mask": {"ellipse": [380.0, 760.0, 60.0, 80.0]}},
            {"op": "add", "frame_idx": 5, "obj_id": 3, "points": [[770.0, 390.0], [900.0, 500.0]], "labels": [1, 0]},
            {"op": "propagate", "start_frame_idx": None, "max_frame_num_to_track": None, "reverse": False},
            {"op": "mask", "frame_idx": 7, "obj_id": 1, "mask": {"ellipse": [300.0, 500.0, 70.0, 120.0]}},
            {"op": "propagate", "start_frame_idx": 7, "max_frame_num_to_track": None, "reverse": True},
        ],
    },
    "video_sam2_t_correction_after_reverse": {
        "description": (
            "SAM2 (v2.0) tiny at a 256-px model input, the first 12 golden video frames as a 540 x 960 video (the "
            "kind of scenario of issue 16). obj 1: a positive click on frame 2, a second one added to it "
            "(clear_old_points=False); reverse from the default start (2); forward from the default start; a negative "
            "click for obj 1 on frame 8 (a frame the forward pass tracked: a correction with the previous mask as "
            "mask input and memories of frames 3-7); forward from frame 9."),
        "variant": "sam2_hiera_t", "checkpoint_seed": 1104, "image_size": 256,
        "frames": {"source": "golden_videos", "first": 0, "last": 12}, "video_hw": [540, 960],
        "calls": [
            {"op": "add", "frame_idx": 2, "obj_id": 1, "points": [[400.5, 260.0]], "labels": [1]},
            {"op": "add", "frame_idx": 2, "obj_id": 1, "points": [[520.0, 300.5]], "labels": [1],
             "clear_old_points": False},
            {"op": "propagate", "start_frame_idx": None, "max_frame_num_to_track": None, "reverse": True},
            {"op": "propagate", "start_frame_idx": None, "max_frame_num_to_track": None, "reverse": False},
            {"op": "add", "frame_idx": 8, "obj_id": 1, "points": [[610.0, 330.0]], "labels": [0]},
            {"op": "propagate", "start_frame_idx": 9, "max_frame_num_to_track": None, "reverse": False},
        ],
    },
}


def write_golden(name, scenario, out_dir, args, compare):
    """Meta's arrays for a fixed scenario, in the reference's golden format (shared/reference/README.md), plus how far
    our Tracker (default settings) and Meta's code re-run with 1 thread and a plain attention are from them."""
    variant, ckpt_seed, size = scenario["variant"], scenario["checkpoint_seed"], scenario["image_size"]
    checkpoint = write_synthetic_checkpoint(variant, ckpt_seed, Path(args.cache) / f"{variant}_seed{ckpt_seed}.pt")
    frames = frames_from_spec(scenario["frames"], GOLDEN)
    images = model_inputs(frames, size)
    hw, calls = scenario["video_hw"], scenario["calls"]
    start = time.perf_counter()
    reference = run_meta(*meta_predictor(variant, checkpoint, size), images, hw, calls)
    seconds = time.perf_counter() - start
    stored = {k: v for k, v in reference.items() if k not in scenario.get("omit", ())}
    import sam2

    side = {
        "name": name, "description": scenario["description"], "type": "video", "config": variant,
        "image_size": size, "model_config_overrides": {"image_size": size},
        "checkpoint": {"generator": "napari_sam2.engine.synthetic_checkpoints.write_synthetic_checkpoint (the algorithm of "
                                    "shared/reference/make_checkpoint.py)", "seed": ckpt_seed},
        "builder": f"sam2.build_sam.build_sam2_video_predictor(config, ckpt, device='cpu', "
                   f"hydra_overrides_extra=['++model.image_size={size}'])",
        "runtime": {"device": "cpu", "dtype": "float32 (no autocast)", "torch_num_threads": torch.get_num_threads(),
                    "torch_version": torch.__version__, "numpy_version": np.__version__,
                    "sam2_version": getattr(sam2, "__version__", "1.1.0"),
                    "fill_holes": "napari_sam2.engine.postprocess.fill_holes (the GPU behaviour, as the golden data)",
                    "memory_attention": "memory handed over as float32 (as the golden harness)",
                    "seconds": round(seconds, 1)},
        "frames": dict(scenario["frames"], sha256_u8=frames_sha256(frames), shape_u8=list(frames.shape),
                       model_input="napari_sam2.core.frames.model_input_from_rgb(frame_u8 / 255.0, image_size) per frame "
                                   "(tests/video_golden.py: frames_from_spec, model_inputs)"),
        "video_hw": hw, "calls": calls,
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in stored.items()},
        "omitted": {k: scenario["omit_reason"] for k in reference if k not in stored},
        "aliases": {},
        "how_called": "benchmarks/reference_scenarios.py run_meta: the arrays of the golden video scenarios "
                      "(shared/reference/README.md, 'Video scenarios')",
    }
    side["info"] = {"calls": [_call_info(i, call, reference) for i, call in enumerate(calls)]}
    model = load_model(checkpoint, device="cpu", config=get_config(variant).with_(image_size=size))
    ours = run_ours(model, images, hw, calls)
    with plain_attention(1 if args.threads > 1 else 2):
        again = run_meta(*meta_predictor(variant, checkpoint, size), images, hw, calls)
    side["checks"] = {"ours_default_tracker": _rows_summary(compare.compare_one(side, stored, ours)),
                      "meta_vs_itself_other_threads_plain_attention": _rows_summary(compare.compare_one(side, stored, again))}
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / f"{name}.npz", **stored)
    (out_dir / f"{name}.json").write_text(json.dumps(side, indent=1) + "\n")
    size_mb = (out_dir / f"{name}.npz").stat().st_size / 2**20
    return {"name": name, "npz_MiB": round(size_mb, 2), "seconds": round(seconds, 1),
            "ours_bad": [k for k, v in side["checks"]["ours_default_tracker"].items() if v[-1] != "ok"],
            "itself_bad": [k for k, v in side["checks"]["meta_vs_itself_other_threads_plain_attention"].items()
                           if v[-1] != "ok"]}


def _call_info(i, call, arrays):
    info = {"op": call["op"]}
    scores, logits = arrays.get(f"c{i}_object_score_logits"), arrays.get(f"c{i}_low_res_logits")
    if call["op"] == "propagate":
        info["frames"] = arrays[f"c{i}_frame_idx"].tolist()
    if scores is not None:
        info["object_scores_min_max"] = [round(float(scores.min()), 5), round(float(scores.max()), 5)]
        info["min_abs_object_score"] = round(float(np.abs(scores).min()), 5)
        info["low_res_pos_frac"] = round(float((logits > 0).mean()), 4)
    return info


def _rows_summary(rows):
    """array -> [max_abs, frac_over_atol, status] (or [bit agreement, status])."""
    out = {}
    for r in rows:
        if "agreement" in r:
            out[r["array"]] = [r["agreement"], r["status"]]
        elif "max_abs" in r:
            out[r["array"]] = [float(f"{r['max_abs']:.3g}"), float(f"{r.get('frac_over_atol', 0.0):.3g}"), r["status"]]
        else:
            out[r["array"]] = [r["status"]]
    return out


def meta_predictor(variant, checkpoint, image_size):
    import sam2.sam2_video_predictor as svp
    from sam2.build_sam import build_sam2_video_predictor  # optional oracle, never vendored

    svp.fill_holes_in_mask_scores = fill_holes  # the GPU behaviour, as in the golden data
    config = ("configs/sam2.1/" if variant.startswith("sam2.1") else "configs/sam2/") + variant + ".yaml"
    predictor = build_sam2_video_predictor(config, str(checkpoint), device="cpu",
                                           hydra_overrides_extra=[f"++model.image_size={image_size}"])
    # On CPU without autocast Meta's code crashes when a memory holds no object pointer (bfloat16 memories meet
    # float32 weights); like the golden harness, hand the memory attention float32, as torch.cat does otherwise.
    attend = predictor.memory_attention.forward

    def attend_float32(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        return attend(curr, memory.float(), curr_pos, memory_pos.float(), num_obj_ptr_tokens)

    predictor.memory_attention.forward = attend_float32
    return predictor, svp


def run_meta(predictor, svp, images, video_hw, calls):
    """The arrays the golden scenarios store, from Meta's predictor (README of shared/reference)."""
    svp.load_video_frames = lambda *a, **k: (images, video_hw[0], video_hw[1])
    state = predictor.init_state(video_path="in-memory")
    out = {}

    def entry(obj_idx, frame_idx, temp=False):
        store = state["temp_output_dict_per_obj" if temp else "output_dict_per_obj"][obj_idx]
        return store["cond_frame_outputs"].get(frame_idx) or store["non_cond_frame_outputs"].get(frame_idx)

    for i, call in enumerate(calls):
        op = call["op"]
        if op == "mask":
            _, _, masks = predictor.add_new_mask(state, call["frame_idx"], call["obj_id"],
                                                 mask_from_spec(call["mask"], video_hw))
        if op == "add":
            kwargs = {k: np.array(call[k], np.float32) for k in ("points", "box") if k in call}
            if "labels" in call:
                kwargs["labels"] = np.array(call["labels"], np.int32)
            _, _, masks = predictor.add_new_points_or_box(state, call["frame_idx"], call["obj_id"],
                                                          clear_old_points=call.get("clear_old_points", True), **kwargs)
        if op in ("add", "mask"):
            e = entry(predictor._obj_id_to_idx(state, call["obj_id"]), call["frame_idx"], temp=True)
            out[f"c{i}_low_res_logits"] = e["pred_masks"][0, 0].numpy()
            out[f"c{i}_object_score_logits"] = e["object_score_logits"][0].numpy()
            out[f"c{i}_obj_ptr"] = e["obj_ptr"][0].numpy()
            out[f"c{i}_video_res_masks_packed"] = pack_masks(masks[:, 0])
        elif op == "propagate":
            frames, low, scores, ptrs, packed = [], [], [], [], []
            for frame_idx, obj_ids, masks in predictor.propagate_in_video(
                    state, call["start_frame_idx"], call["max_frame_num_to_track"], call["reverse"]):
                entries = [entry(predictor._obj_id_to_idx(state, o), frame_idx) for o in obj_ids]
                frames.append(frame_idx)
                low.append(np.stack([e["pred_masks"][0, 0].numpy() for e in entries]))
                scores.append(np.stack([e["object_score_logits"][0, 0].numpy() for e in entries]))
                ptrs.append(np.stack([e["obj_ptr"][0].numpy() for e in entries]))
                packed.append(pack_masks(masks[:, 0]))
            out[f"c{i}_frame_idx"] = np.array(frames, dtype=np.int32)
            if not frames:  # e.g. reverse from frame 0
                continue
            out[f"c{i}_low_res_logits"] = np.stack(low)
            out[f"c{i}_object_score_logits"] = np.stack(scores)
            out[f"c{i}_obj_ptr"] = np.stack(ptrs)
            out[f"c{i}_video_res_masks_packed"] = np.stack(packed)
        elif op == "remove":
            predictor.remove_object(state, call["obj_id"])
        else:
            predictor.reset_state(state)
    return out


def run_ours(model, images, video_hw, calls, **tracker_kwargs):
    return run_calls(Tracker(model, TensorFrames(images, video_hw), **tracker_kwargs), calls)


def parse_seeds(text):
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


@contextlib.contextmanager
def plain_attention(threads):
    """Run with other threads and a softmax(QK^T/sqrt(d))V attention instead of torch's fused kernel: how the
    reference README measured the noise floor of Meta's code against itself."""
    sdpa, before = F.scaled_dot_product_attention, torch.get_num_threads()

    def attention(q, k, v, dropout_p=0.0, **_):
        return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v

    F.scaled_dot_product_attention = attention
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        F.scaled_dot_product_attention = sdpa
        torch.set_num_threads(before)


def run_scenario(scenario, images, checkpoint, args, compare):
    """One scenario: Meta's outputs, ours, and (when ours are out of tolerance) Meta's against itself."""
    variant, hw, calls = scenario["variant"], scenario["video_hw"], scenario["calls"]
    report = {k: scenario[k] for k in ("seed", "variant", "checkpoint_seed", "video_hw")}
    report.update(n_frames=len(images), calls=[c["op"] + ("-rev" if c.get("reverse") else "") for c in calls])
    start = time.perf_counter()
    try:
        reference = run_meta(*meta_predictor(variant, checkpoint, args.image_size), images, hw, calls)
    except Exception as error:  # Meta refuses the sequence: ours must refuse it too
        reference = f"{type(error).__name__}: {error}"
    model = load_model(checkpoint, device="cpu", config=get_config(variant).with_(image_size=args.image_size))
    kwargs = {} if args.keep_frames is None else {"keep_frames": args.keep_frames}
    try:
        ours = run_ours(model, images, hw, calls, **kwargs)
    except Exception as error:
        ours = f"{type(error).__name__}: {error}"
    report["seconds"] = round(time.perf_counter() - start, 1)
    if isinstance(reference, str) or isinstance(ours, str):
        report.update(reference_error=reference if isinstance(reference, str) else None,
                      our_error=ours if isinstance(ours, str) else None)
        report["status"] = "ok" if isinstance(reference, str) and isinstance(ours, str) else "FAIL"
        return report, None
    side = {"name": f"random_{scenario['seed']}", "type": "video", "video_hw": hw}
    bad = [r for r in compare.compare_one(side, reference, ours) if r["status"] != "ok"]
    masks = [np.unpackbits(a).mean() for k, a in reference.items() if k.endswith("_packed")]
    report.update(bad=bad, status="FAIL" if bad else "ok", positive_fraction=round(float(np.mean(masks or [0])), 3))
    if bad and args.noise_floor:
        # Out of tolerance: is Meta's code as far from itself with other threads and a plain attention?
        with plain_attention(1 if args.threads > 1 else 2):
            again = run_meta(*meta_predictor(variant, checkpoint, args.image_size), images, hw, calls)
        itself = {r["array"]: r for r in compare.compare_one(side, reference, again)}
        for row in bad:
            row["reference_vs_itself"] = {k: itself[row["array"]].get(k) for k in ("max_abs", "frac_over_atol", "agreement")}
        within = all(_no_further(row, itself[row["array"]]) for row in bad)
        report["status"] = "noise" if within else "FAIL"
    return report, (reference, ours)


def _no_further(ours, itself):
    """Ours is out of tolerance by no more than twice as far as Meta's code is from itself."""
    if "agreement" in ours:
        return 1 - ours["agreement"] <= 2 * (1 - itself["agreement"])
    return ours["max_abs"] <= 2 * itself["max_abs"] or ours.get("frac_over_atol", 1) <= 2 * itself.get("frac_over_atol", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-3", help="e.g. 0-9 or 1,4,7")
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-noise-floor", dest="noise_floor", action="store_false",
                    help="do not re-run Meta's code against itself where ours is out of tolerance")
    ap.add_argument("--save", help="folder for the arrays of scenarios out of tolerance (reference_N.npz, ours_N.npz)")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "napari-sam2-bench"))
    ap.add_argument("--long", action="store_true", help="long scenarios (48-80 frames of the sample time-lapse)")
    ap.add_argument("--keep-frames", type=int, default=None, help="keep_frames for our Tracker (default: its own)")
    ap.add_argument("--write-golden", metavar="DIR", help="write the FIXED_SCENARIOS golden data to DIR and exit")
    ap.add_argument("--only", default=None, help="with --write-golden: comma-separated scenario names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    compare = load_compare()
    if args.write_golden:
        names = args.only.split(",") if args.only else list(FIXED_SCENARIOS)
        for name in names:
            print(json.dumps(write_golden(name, FIXED_SCENARIOS[name], Path(args.write_golden), args, compare)), flush=True)
        return 0
    golden_frames = None if args.long else golden_frames_u8()
    counts = {"ok": 0, "noise": 0, "FAIL": 0}
    for seed in parse_seeds(args.seeds):
        scenario = draw_long_scenario(seed) if args.long else draw_scenario(seed)
        if scenario["variant"] not in args.variants.split(","):
            continue
        variant, ckpt_seed = scenario["variant"], scenario["checkpoint_seed"]
        checkpoint = write_synthetic_checkpoint(variant, ckpt_seed, Path(args.cache) / f"{variant}_seed{ckpt_seed}.pt")
        spec = scenario["frames"]
        if spec["source"] == "golden_videos":
            frames = golden_frames[spec["first"] : spec["last"]]
        else:
            frames = frames_from_spec(spec)
        images = model_inputs(frames, args.image_size)
        report, arrays = run_scenario(scenario, images, checkpoint, args, compare)
        counts[report["status"]] += 1
        if args.save and arrays is not None and report["status"] != "ok":
            Path(args.save).mkdir(parents=True, exist_ok=True)
            for name, produced in zip(("reference", "ours"), arrays):
                np.savez_compressed(Path(args.save) / f"{name}_{seed}.npz", **produced)
        print(json.dumps(report), flush=True)
    print(json.dumps({"image_size": args.image_size, "scenarios": counts}))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
