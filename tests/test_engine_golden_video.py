"""The tracker reproduces Meta's SAM2VideoPredictor on the golden video scenarios, call by call."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import assert_matches_golden, load_golden
from video_golden import GoldenFrames, run_calls

from napari_sam2.core.tensor_store import ZarrTensorStore
from napari_sam2.engine import Tracker, load_model
from napari_sam2.engine.feature_cache import FeatureCache
from napari_sam2.engine.track_cache import TrackCache

pytestmark = pytest.mark.golden

# what the reference captured (shared/reference/README.md): (call, frame, obj_idx) of the
# memory-conditioned features, and (obj_idx, frame) of a stored memory
CAPTURE_MEMCOND = {"video_sam2.1_t": (2, 1, 0)}
CAPTURE_MASKMEM = {"video_sam2.1_t": (0, 0), "video_sam2_t": (1, 0)}

# The golden outputs were made with AVX2 float32 kernels. On a CPU with AVX512, oneDNN's kernels round differently, and
# Meta's own code then leaves the tolerance on video_sam2_t exactly as far as ours does (call 3's logits: 0.015 % of
# them off by more than 1e-3, where 0.01 % is allowed; ours and Meta's the same bits on that machine). So on such a CPU
# these scenarios run in a child process whose oneDNN kernels are held to AVX2, the golden data's instruction set.
REFERENCE_KERNELS = {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def _beyond_reference_kernels() -> bool:
    """Whether this process's float32 kernels may differ from the golden data's (a CPU beyond AVX2, not held to it)."""
    held = all(os.environ.get(k) == v for k, v in REFERENCE_KERNELS.items())
    return torch.backends.cpu.get_cpu_capability() not in ("DEFAULT", "AVX2") and not held


def _run_in_reference_kernels(scenario, golden_dir):
    """This module's test of `scenario` in a child pytest with REFERENCE_KERNELS; its failure is this test's."""
    test = f"{__file__}::test_video_scenario_matches_reference[{scenario}]"
    child = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-q", "-p", "no:cacheprovider", "--golden-dir", str(golden_dir.resolve())],
        env={**os.environ, **REFERENCE_KERNELS}, capture_output=True, text=True, timeout=1800,
    )
    assert child.returncode == 0, f"with {REFERENCE_KERNELS}:\n{child.stdout[-6000:]}\n{child.stderr[-2000:]}"
    assert "1 passed" in child.stdout


def _debug_capture(tracker, scenario):
    """Record the memory-conditioned features of (call, frame, obj_idx) = CAPTURE_MEMCOND."""
    capture = CAPTURE_MEMCOND.get(scenario)
    state = {"call": None, "frame": None, "pix": None}
    if capture is None:
        return state, None
    model = tracker.model
    orig_condition, orig_track = model.condition_on_memory, tracker._track

    def track(frame_idx, objects, reverse):
        state["frame"] = frame_idx
        return orig_track(frame_idx, objects, reverse)

    def condition(features, *args, **kwargs):
        pix = orig_condition(features, *args, **kwargs)
        if [state["call"], state["frame"]] == list(capture[:2]) and state["pix"] is None:
            state["pix"] = pix[capture[2] : capture[2] + 1].clone()
        return pix

    tracker._track = track
    model.condition_on_memory = condition
    return state, capture


def run_scenario(model, side, gold, scenario, **tracker_kwargs) -> dict:
    """The scenario's calls on a new Tracker, with the debug arrays the golden data hold."""
    tracker = Tracker(model, GoldenFrames(gold["frames_u8"], side["video_hw"]), **tracker_kwargs)
    state, capture = _debug_capture(tracker, scenario)
    try:
        produced = run_calls(tracker, side["calls"], on_call=lambda i: state.update(call=i))
    finally:
        model.__dict__.pop("condition_on_memory", None)  # _debug_capture's wrapper
    obj_idx, frame = CAPTURE_MASKMEM[scenario]
    obj = list(tracker._objects.values())[obj_idx]
    mem = obj.cond.get(frame) or obj.non_cond.get(frame)
    produced["debug_maskmem_features_bf16bits"] = mem.maskmem.view(torch.int16).numpy().astype(np.uint16)
    produced["debug_maskmem_pos_enc"] = tracker._maskmem_pos.numpy().astype(np.float16)
    if capture is not None:
        assert state["pix"] is not None, "the captured frame was never tracked"
        produced["debug_pix_feat_with_mem"] = state["pix"].numpy().astype(np.float16)
    return produced


@pytest.mark.parametrize("scenario", ["video_sam2.1_t", "video_sam2_t"])
def test_video_scenario_matches_reference(scenario, golden_dir, compare_module, synthetic_checkpoint, tmp_path):
    if _beyond_reference_kernels():
        _run_in_reference_kernels(scenario, golden_dir)
        return
    torch.set_num_threads(2)
    side, gold = load_golden(golden_dir, scenario)
    model = load_model(synthetic_checkpoint(side["config"], side["checkpoint"]["seed"]), device="cpu")
    if scenario != "video_sam2_t":  # no caches
        assert_matches_golden(compare_module, side, gold, run_scenario(model, side, gold, scenario))
        return
    # With a feature cache and a track cache over disk stores, twice: the second tracker, with new caches (as after a
    # restart), takes every frame's features from disk and replays from there every pass not made over a correction.
    # Both match the reference.
    encoded, replayed = [], []
    real_encode = model.encode_image
    model.encode_image = lambda images: (encoded.append(len(images)), real_encode(images))[1]
    try:
        for _ in range(2):
            caches = {"feature_cache": FeatureCache(0, ZarrTensorStore(tmp_path / "features"), write_store=True),
                      "track_cache": TrackCache(store=ZarrTensorStore(tmp_path / "tracks", background=True))}
            encoded.clear()
            assert_matches_golden(compare_module, side, gold, run_scenario(model, side, gold, scenario, **caches))
            caches["track_cache"].store.flush()
            replayed.append(caches["track_cache"].store_hits)
    finally:
        del model.encode_image
    assert not encoded  # the second run encoded nothing
    assert replayed[0] == 0 and replayed[1] >= 3  # object 1's three passes, object 2's first
