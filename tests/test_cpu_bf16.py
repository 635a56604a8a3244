"""bfloat16 on the CPU (Sam2Model.precision; fast mode on CPUs that compute it natively, AVX512-BF16 or AMX): the
model's matrix products really run in bfloat16, its outputs stay close to float32's and to Meta's, come out in the
documented dtypes, and are cached apart from float32 results. Speed and deviation on the golden video scenarios are
measured by benchmarks/fast_mode_deviation.py (README, "Fast mode"), not here. Without native bfloat16 the CPU
emulates it (slower, same kind of rounding), so these tests run on any CPU."""

import numpy as np
import pytest
import torch
from conftest import build_mini_model, load_golden
from image_golden import run_image_scenario

from napari_sam2.core.frames import StackFrames
from napari_sam2.engine import Tracker, load_model
from napari_sam2.engine.auto_masks import AutomaticMaskGenerator
from napari_sam2.engine.checkpoints import at_image_size
from napari_sam2.engine.feature_cache import feature_key
from napari_sam2.io.sample_data import make_nuclei_stack

N_FRAMES = 6


@pytest.fixture(scope="module")
def models():
    """The miniature model in float32 and the same weights in bfloat16."""
    exact = build_mini_model()
    return exact, at_image_size(exact, exact.image_size, precision=torch.bfloat16)


@pytest.fixture(scope="module")
def frames():
    stack = make_nuclei_stack(shape=(N_FRAMES, 96, 128), n_nuclei=3, seed=5)[0]
    with StackFrames(stack, axis=0, image_size=128, prefetch=0) as made:
        yield made


def test_a_bfloat16_model_has_the_same_weights_and_keys_its_results_apart(models, frames):
    exact, half = models
    assert half is not exact and at_image_size(exact, exact.image_size) is exact
    assert (exact.precision, half.precision) == (None, torch.bfloat16)
    assert (exact.autocast_dtype, half.autocast_dtype) == (torch.float32, torch.bfloat16)
    assert (exact.numerics, half.numerics) == ("cpu-float32", "cpu-bfloat16")
    a, b = exact.state_dict(), half.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert half.signature == exact.signature  # the same weights; the numerics tell the results apart
    assert feature_key(half, frames[0]) != feature_key(exact, frames[0])
    assert Tracker(half, frames).track_settings != Tracker(exact, frames).track_settings
    assert at_image_size(half, 64).precision is torch.bfloat16  # a resized model keeps its precision
    with half.autocast():
        assert torch.is_autocast_enabled("cpu") and (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with exact.autocast():
        assert not torch.is_autocast_enabled("cpu")


def run(model, frames):
    """Low-res logits and results of a click, a propagation, a correction and its re-propagation."""
    tracker = Tracker(model, frames)
    results = [tracker.set_prompt(1, 1, points=[(30.0, 20.0)], labels=[1])]
    results += list(tracker.propagate())
    tracker.add_prompt(3, 1, points=[(32.0, 22.0), (60.0, 60.0)], labels=[1, 0])
    results += list(tracker.repropagate(stop_iou=None))
    return results


def test_tracking_in_bfloat16_hands_out_float32_results_close_to_float32(models, frames):
    exact, half = models
    expected, produced = run(exact, frames), run(half, frames)
    assert len(produced) == len(expected) >= 1 + 2 * N_FRAMES
    logit_diff, mask_pixels, differing = [], 0, 0
    for want, got in zip(expected, produced):
        assert got.low_res_logits.dtype == got.object_score_logits.dtype == got.obj_ptrs.dtype == torch.float32
        assert got.owner.dtype == torch.uint8 and got.mask_logits.dtype == torch.float32
        logit_diff.append(float((got.low_res_logits - want.low_res_logits).abs().mean()))
        mask_pixels += int((want.owner > 0).sum())
        differing += int((got.owner != want.owner).sum())
    assert max(logit_diff) > 0  # it computed in bfloat16 indeed
    assert np.mean(logit_diff) < 0.05  # seen: 0.009
    assert mask_pixels > 1000 and differing <= 0.02 * mask_pixels  # seen: 0.2 %


def test_automatic_masks_in_bfloat16_are_float32_s_masks(models):
    exact, half = models
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:96, :128]
    image = 0.1 + 0.05 * rng.random((96, 128))
    for cy, cx, r in ((30, 40, 15), (60, 90, 12), (70, 30, 9)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 0.8
    image = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    # every filter off (the random weights' candidates sit near any threshold): every point's mask is compared
    unfiltered = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    want = AutomaticMaskGenerator(exact, **unfiltered).generate(image)
    got = AutomaticMaskGenerator(half, **unfiltered).generate(image)

    def by_point(masks):
        found = {}
        for m in masks:
            found.setdefault((m.point, m.crop_box), []).append(m)
        return found

    want_at, got_at = by_point(want), by_point(got)
    assert len(want) >= 16 and want_at.keys() == got_at.keys()
    assert all(len(got_at[k]) == len(want_at[k]) for k in want_at)
    ious, iou_diffs = [], []
    for key, masks in got_at.items():
        for b in masks:  # each of a point's masks (one per multimask output) against float32's most like it
            overlap = [(a.mask & b.mask).sum() / max((a.mask | b.mask).sum(), 1) for a in want_at[key]]
            a = want_at[key][int(np.argmax(overlap))]
            assert b.mask.dtype == bool
            ious.append(max(overlap))
            iou_diffs.append(abs(b.predicted_iou - a.predicted_iou))
    # seen, natively and with oneDNN held to AVX2 (emulated bfloat16): predicted IoUs 0.014-0.016 apart at most,
    # mask IoU 0.90 on average (the lowest, 0.15-0.24, for a mask of a few pixels)
    assert 0 < max(iou_diffs) <= 0.05 and np.mean(ious) >= 0.8


@pytest.mark.golden
def test_bfloat16_on_the_cpu_stays_near_meta_s_float32_outputs(golden_dir, synthetic_checkpoint):
    """The golden image scenario of sam2.1_hiera_t in bfloat16: the single-mask answers keep Meta's masks (IoU >= 0.98;
    seen 0.994-0.999) and their logits move by a few percent of their size (mean |difference| / mean |logit| <= 0.1;
    seen 0.01-0.07)."""
    torch.set_num_threads(2)
    side, gold = load_golden(golden_dir, "image_sam2.1_t")
    model = load_model(synthetic_checkpoint(side["config"], side["checkpoint"]["seed"]), device="cpu")
    half = at_image_size(model, model.image_size, precision=torch.bfloat16)
    produced = run_image_scenario(half, side, gold)
    single = [i for i, prompt in enumerate(side["prompts"]) if not prompt["multimask_output"]]
    assert len(single) >= 3
    for i in single:
        ours = np.unpackbits(produced[f"p{i}_masks_packed"], axis=-1).astype(bool)
        meta = np.unpackbits(gold[f"p{i}_masks_packed"], axis=-1).astype(bool)
        assert (ours & meta).sum() / (ours | meta).sum() >= 0.98
        diff = np.abs(produced[f"p{i}_low_res_logits"] - gold[f"p{i}_low_res_logits"]).mean()
        assert 0 < diff <= 0.1 * np.abs(gold[f"p{i}_low_res_logits"]).mean()
        assert np.abs(produced[f"p{i}_ious"] - gold[f"p{i}_ious"]).max() <= 0.05
