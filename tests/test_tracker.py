"""Tracker behaviour beyond the golden scenarios: batching, flat memory, corrections that stick,
bidirectional propagation, mask prompts, non-overlap, bad input. Uses the fast 256-px model."""

import os
import platform
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_sam2 import InputError
from napari_sam2.core.frame_labels import highest_logit_wins
from napari_sam2.core.frames import StackFrames
from napari_sam2.engine import Tracker, host_memory
from napari_sam2.engine.results import pixel_owner
from napari_sam2.io.sample_data import make_nuclei_stack

N_FRAMES = 8


@pytest.fixture(scope="module")
def stack():
    image, labels = make_nuclei_stack(shape=(N_FRAMES, 96, 128), n_nuclei=4, seed=3)
    return image, labels


@pytest.fixture
def frames(stack, fast_model):
    with StackFrames(stack[0], axis=0, image_size=fast_model.image_size, prefetch=0) as f:
        yield f


def centroid_xy(labels, value):
    rows, cols = np.nonzero(labels == value)
    return [float(cols.mean()), float(rows.mean())]


def prompt_objects(tracker, stack, frame=3):
    labels = stack[1][frame]
    ids = [v for v in np.unique(labels) if v][:3]
    for obj_id in ids:
        tracker.add_prompt(frame, int(obj_id), points=[centroid_xy(labels, obj_id)], labels=[1])
    return [int(i) for i in ids]


def run(tracker, **kwargs):
    return {r.frame_idx: r for r in tracker.propagate(**kwargs)}


def test_batched_objects_equal_one_at_a_time(fast_model, frames, stack):
    batched = Tracker(fast_model, frames, batch_objects=True)  # the default on a GPU
    single = Tracker(fast_model, frames)  # one at a time, the default on CPU
    assert not single.batch_objects
    ids = prompt_objects(batched, stack)
    prompt_objects(single, stack)
    assert len(ids) == 3
    a, b = run(batched), run(single)
    assert sorted(a) == sorted(b) == list(range(3, N_FRAMES))
    for t in a:
        assert a[t].obj_ids == b[t].obj_ids == ids
        # batched BLAS sums in another order: compare with the reference's video tolerances
        torch.testing.assert_close(a[t].low_res_logits, b[t].low_res_logits, atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(a[t].obj_ptrs, b[t].obj_ptrs, atol=5e-4, rtol=5e-4)
        # so a pixel may flip only where its logit is that close to zero in both
        flipped = torch.from_numpy(a[t].masks() != b[t].masks())
        near_zero = torch.maximum(a[t].mask_logits.abs(), b[t].mask_logits.abs())[flipped]
        assert flipped.float().mean() < 1e-3 and bool((near_zero <= 1e-3).all()), near_zero


def test_memory_in_ram_is_bounded_and_the_rest_spills_exactly(fast_model, stack, tmp_path):
    # every tracked frame's memory is kept (a later pass may attend to any), but only keep_frames per object in
    # memory: the others live in a temporary file and come back bit for bit
    long_stack = np.concatenate([stack[0]] * 4)  # 32 frames
    click = centroid_xy(stack[1][0], stack[1][0].max())
    with StackFrames(long_stack, image_size=fast_model.image_size, prefetch=0) as frames:
        runs = {}
        for keep in (6, None):
            tracker = Tracker(fast_model, frames, keep_frames=keep, memory_folder=str(tmp_path))
            tracker.add_prompt(10, 1, points=[click], labels=[1])
            results = []
            for result in tracker.propagate():
                results.append(result)
                assert len(tracker._features) <= 2  # image features: the last two frames only
                if keep is not None:
                    assert tracker._spill.in_memory <= 6  # masks and memories in RAM: bounded
            # a reverse pass from the prompt attends to memories the forward pass wrote long ago
            results += list(tracker.propagate(10, reverse=True))
            # a correction 20 frames behind the latest tracked frame, then a pass from there
            results.append(tracker.add_prompt(25, 1, points=[click], labels=[0]))
            results += list(tracker.propagate(25))
            assert tracker.tracked_frames(1) == [t for t in range(32) if t != 10]
            runs[keep] = results
            tracker.close()
        assert len(runs[6]) == len(runs[None]) == 22 + 11 + 1 + 7
        for spilled, in_memory in zip(runs[6], runs[None]):
            assert spilled.frame_idx == in_memory.frame_idx
            assert torch.equal(spilled.low_res_logits, in_memory.low_res_logits)
            assert torch.equal(spilled.obj_ptrs, in_memory.obj_ptrs)
    assert list(tmp_path.iterdir()) == []  # the temporary file has no name and is gone


def _in_heap(t):
    """Whether a tensor's data lies in the process's [heap] (brk) segment (Linux)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith("[heap]"):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                if lo <= t.data_ptr() < hi:
                    return True
    return False


def test_kept_tensors_are_kept_outside_the_heap(fast_model, frames, stack):
    # glibc: what the tracker keeps across frames must not pin the heap between the frames' transient buffers
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert (host_memory._libc is not None) == on_glibc
    large, small = torch.randn(1, 64, 64, 64), torch.randn(1, 256)
    kept = host_memory.outside_heap(large)
    assert torch.equal(kept, large) and host_memory.outside_heap(small) is small
    if not on_glibc:
        assert kept is large
        return
    assert kept.data_ptr() != large.data_ptr() and not _in_heap(kept)
    tracker = Tracker(fast_model, frames)
    prompt_objects(tracker, stack)
    run(tracker)
    features = next(iter(tracker._features.values()))
    assert not any(_in_heap(x) for x in (features.vision, features.vision_pos, *features.high_res))
    host_memory.release_freed_host_memory()


_FRESH_HEAP_PROBE = """
import sys, torch
from napari_sam2.engine import host_memory
# made and freed at once: freeing a mapped 30 MiB block raises glibc's own threshold past 20 MiB
torch.empty(30 << 20, dtype=torch.uint8)
was_set = host_memory.map_large_buffers() if sys.argv[1] == "fix" else False
buffer = torch.empty(20 << 20, dtype=torch.uint8)
heap = [l.split()[0].split("-") for l in open("/proc/self/maps") if l.rstrip().endswith("[heap]")]
in_heap = any(int(lo, 16) <= buffer.data_ptr() < int(hi, 16) for lo, hi in heap)
print(was_set, in_heap)
"""


def test_large_buffers_bypass_the_heap(fast_model, frames, monkeypatch):
    # glibc: a frame's biggest transient buffers get mappings of their own instead of fragmenting the heap;
    # checked in fresh processes, whose heaps hold no free gaps that large
    if host_memory._libc is None:
        assert host_memory.map_large_buffers() is False
        return
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}

    def probe(mode):  # -> [threshold set?, 20 MiB buffer in the heap?]
        command = [sys.executable, "-c", _FRESH_HEAP_PROBE, mode]
        return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout.split()

    assert probe("keep") == ["False", "True"]  # glibc's default: the buffer comes from the heap
    assert probe("fix") == ["True", "False"]
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # the user's own choice is left alone
    assert host_memory.map_large_buffers() is False
    # opt-in for the whole process: a tracker (e.g. in napari's process) leaves the allocator alone, the command line
    # tunes its own
    calls = []
    monkeypatch.setattr(host_memory, "map_large_buffers", lambda: calls.append(1))
    Tracker(fast_model, frames)
    assert calls == []
    from napari_sam2.cli import commands as cli

    monkeypatch.setattr(cli, "_load_model", lambda *args: fast_model)
    cli._model_for(SimpleNamespace(model="m", device="cpu", quiet=True, fast=False, compile=False))
    assert calls == [1]


def test_results_have_the_documented_shapes(fast_model, frames, stack):
    tracker = Tracker(fast_model, frames)
    first = tracker.add_prompt(2, 5, points=[centroid_xy(stack[1][2], stack[1][2].max())], labels=[1])
    assert first.frame_idx == 2 and first.obj_ids == [5]
    assert first.mask_logits.shape == (1, 96, 128) and first.mask_logits.dtype == torch.float32
    assert first.low_res_logits.shape == (1, 64, 64) and first.object_score_logits.shape == (1,)
    results = list(tracker.propagate())
    assert [r.frame_idx for r in results] == list(range(2, N_FRAMES))
    assert torch.equal(results[0].low_res_logits, first.low_res_logits)  # the prompted frame is not recomputed


def test_reverse_and_both_directions(fast_model, frames, stack):
    tracker = Tracker(fast_model, frames)
    prompt_objects(tracker, stack, frame=4)
    assert [r.frame_idx for r in tracker.propagate(reverse=True)] == [4, 3, 2, 1, 0]
    tracker.reset()
    prompt_objects(tracker, stack, frame=4)
    order = [r.frame_idx for r in tracker.propagate_both()]
    assert order == [4, 5, 6, 7, 4, 3, 2, 1, 0]
    assert list(tracker.propagate(start_frame_idx=0, reverse=True)) == []  # Meta: nothing before frame 0


def test_object_added_after_tracking(fast_model, frames, stack):
    tracker = Tracker(fast_model, frames)
    labels = stack[1]
    tracker.add_prompt(0, 1, points=[centroid_xy(labels[0], labels[0].max())], labels=[1])
    list(tracker.propagate())
    value = [v for v in np.unique(labels[5]) if v][0]
    added = tracker.add_prompt(5, 2, points=[centroid_xy(labels[5], value)], labels=[1])
    assert added.obj_ids == [1, 2]
    results = list(tracker.propagate())
    assert [r.frame_idx for r in results] == list(range(N_FRAMES))
    assert all(r.obj_ids == [1, 2] for r in results)


def test_correction_is_overwritten_by_default_but_sticks_with_repropagate(fast_model, frames, stack):
    labels = stack[1]
    click = centroid_xy(labels[0], labels[0].max())

    def tracked():
        tracker = Tracker(fast_model, frames)
        tracker.add_prompt(0, 1, points=[click], labels=[1])
        list(tracker.propagate())
        return tracker

    plain = tracked()
    corrected = plain.add_prompt(5, 1, points=[[5.0, 5.0]], labels=[0]).low_res_logits
    again = {r.frame_idx: r for r in plain.propagate()}
    assert not torch.equal(again[5].low_res_logits, corrected)  # Meta's default: the click is lost

    sticky = tracked()
    corrected = sticky.add_prompt(5, 1, points=[[5.0, 5.0]], labels=[0]).low_res_logits
    rerun = list(sticky.repropagate(5, stop_iou=None))
    assert [r.frame_idx for r in rerun] == [5, 6, 7, 5, 4, 3, 2, 1, 0]
    assert torch.equal(rerun[0].low_res_logits, corrected)
    after = {r.frame_idx: r for r in sticky.propagate()}
    assert torch.equal(after[5].low_res_logits, corrected)  # now a conditioning frame: kept


def test_corrections_on_several_frames_all_stick(fast_model, frames, stack):
    # Meta-style corrections on two frames, then one repropagate() for all of them: both become conditioning
    # frames (before, the first call swallowed the other correction and every later call failed)
    tracker = Tracker(fast_model, frames)
    click = centroid_xy(stack[1][3], stack[1][3].max())
    tracker.add_prompt(3, 1, points=[click], labels=[1])
    list(tracker.propagate())
    list(tracker.propagate(3, reverse=True))
    first = tracker.add_prompt(1, 1, points=[[5.0, 5.0]], labels=[0]).low_res_logits
    second = tracker.add_prompt(6, 1, points=[[7.0, 9.0]], labels=[0]).low_res_logits
    rerun = list(tracker.repropagate(stop_iou=None))
    assert [r.frame_idx for r in rerun] == [1, 2, 3, 4, 5, 6, 7, 1, 0, 6, 7, 6, 5, 4, 3, 2, 1, 0]
    assert tracker.prompted_frames(1) == [1, 3, 6]
    assert torch.equal(rerun[0].low_res_logits, first) and torch.equal(rerun[9].low_res_logits, second)
    with pytest.raises(InputError, match="Nothing to re-propagate"):
        list(tracker.repropagate())
    assert len(list(tracker.propagate())) == 7  # still usable: from the first conditioning frame (1) on


def test_set_prompt_depends_on_the_prompts_alone(fast_model, frames, stack):
    labels = stack[1]
    click = centroid_xy(labels[0], labels[0].max())
    tracker = Tracker(fast_model, frames)
    first = tracker.set_prompt(0, 1, points=[click], labels=[1])
    assert first.obj_ids == [1] and (first.low_res_logits > 0).any()
    list(tracker.propagate_from_prompts())
    # on a tracked frame, with memory around it and a mask there: still decoded from the prompts alone
    again = tracker.set_prompt(0, 1, points=[click], labels=[1])
    assert torch.equal(again.low_res_logits, first.low_res_logits)
    assert torch.equal(tracker.result_on(0).low_res_logits, first.low_res_logits)
    other = tracker.set_prompt(5, 1, points=[click], labels=[1])
    fresh = Tracker(fast_model, frames)
    assert torch.equal(fresh.set_prompt(5, 1, points=[click], labels=[1]).low_res_logits, other.low_res_logits)
    tracker.clear_prompt(5, 1)
    assert tracker.prompted_frames(1) == [0]
    tracker.clear_prompt(0, 1)  # its last prompt: the object is gone
    assert tracker.obj_ids == []
    with pytest.raises(InputError, match="direction"):
        next(fresh.propagate_from_prompts("sideways"))
    with pytest.raises(InputError, match="No prompt lies within"):
        next(fresh.propagate_from_prompts("both", 0, 3))


def test_repropagate_stops_once_masks_agree(fast_model, frames, stack):
    tracker = Tracker(fast_model, frames)
    tracker.add_prompt(0, 1, points=[centroid_xy(stack[1][0], stack[1][0].max())], labels=[1])
    list(tracker.propagate())
    tracker.add_prompt(4, 1, points=[[3.0, 3.0]], labels=[0])
    order = [r.frame_idx for r in tracker.repropagate(4, stop_iou=0.0, patience=2)]
    assert order == [4, 5, 6, 4, 3, 2]  # each direction stops after 2 agreeing frames
    with pytest.raises(InputError, match="Nothing to re-propagate"):
        list(tracker.repropagate(1))


def test_mask_prompt(fast_model, frames, stack):
    tracker = Tracker(fast_model, frames)
    mask = stack[1][3] == stack[1][3].max()
    res = tracker.add_mask(3, 7, mask)
    assert res.object_score_logits[0] > 0
    assert ((res.mask_logits[0] > 0).numpy() == mask).mean() > 0.97  # a mask prompt is taken as the output
    assert [r.frame_idx for r in tracker.propagate()] == list(range(3, N_FRAMES))


def test_non_overlapping_masks(fast_model, frames, stack):
    tracker = Tracker(fast_model, frames, non_overlap_masks=True)
    prompt_objects(tracker, stack)
    for result in tracker.propagate():
        assert (result.masks().sum(axis=0) <= 1).all()


@pytest.mark.parametrize("non_overlap_masks", [False, True])
def test_each_pixel_is_handed_out_to_the_object_with_the_highest_logit_and_float_logits_only_on_request(
        fast_model, frames, stack, non_overlap_masks):
    tracker = Tracker(fast_model, frames, non_overlap_masks=non_overlap_masks)
    prompt_objects(tracker, stack)
    owned = 0
    for result in tracker.propagate():
        assert "mask_logits" not in vars(result)  # not made until asked for
        assert result.owner.dtype == torch.uint8 and tuple(result.owner.shape) == tracker.video_hw
        expected = highest_logit_wins(result.mask_logits.numpy())  # computed now, on the host
        owner = result.owner.numpy()
        assert np.array_equal(owner[None] == np.arange(1, len(result.obj_ids) + 1)[:, None, None], expected)
        owned += int((owner > 0).sum())
    assert owned > 0


def test_pixel_owner_takes_the_highest_logit_above_zero_and_the_first_of_equals():
    logits = torch.tensor([[[1.0, -1.0, 2.0, 0.0]], [[0.5, -2.0, 2.0, 0.0]], [[3.0, -0.5, 1.0, 0.0]]])
    assert pixel_owner(logits).tolist() == [[3, 0, 1, 0]]
    assert pixel_owner(torch.zeros(0, 2, 3)).tolist() == [[0, 0, 0], [0, 0, 0]]
    assert pixel_owner(torch.ones(300, 1, 1)).dtype == torch.int32  # more objects than uint8 holds


def test_bad_input(fast_model, frames, stack):
    tracker = Tracker(fast_model, frames)
    with pytest.raises(InputError, match="No prompts yet"):
        list(tracker.propagate())
    with pytest.raises(InputError, match="outside the stack"):
        tracker.add_prompt(N_FRAMES, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(InputError, match="outside the 128 x 96"):
        tracker.add_prompt(0, 1, points=[[200, 10]], labels=[1])
    with pytest.raises(InputError, match="1 \\(positive\\) or 0"):
        tracker.add_prompt(0, 1, points=[[10, 10]], labels=[2])
    with pytest.raises(InputError, match="one label per point"):
        tracker.add_prompt(0, 1, points=[[10, 10], [20, 20]], labels=[1])
    with pytest.raises(InputError, match="points \\(with labels\\) or a box"):
        tracker.add_prompt(0, 1)
    with pytest.raises(InputError, match="integers"):
        tracker.add_prompt(0, "cell", points=[[10, 10]], labels=[1])
    with pytest.raises(InputError, match="no object 3"):
        tracker.remove_object(3)
    with pytest.raises(InputError, match="mask prompt has shape"):
        tracker.add_mask(0, 1, np.ones((10, 10), bool))
    assert tracker.obj_ids == []  # nothing half-added by the failures


def test_set_prompt_with_a_mask_is_metas_add_new_mask_and_clicks_after_it(fast_model, frames, stack):
    """A mask alone is Meta's add_new_mask; a mask with clicks is add_new_mask followed by add_new_points_or_box on
    that frame (the golden scenario video_sam2.1_t_mask_prompts proves add_mask / add_prompt against Meta)."""
    mask = stack[1][3] > 0
    click = dict(points=[[40.0, 30.0]], labels=[1])
    meta = Tracker(fast_model, frames)
    alone = meta.add_mask(3, 7, mask)
    with_clicks = meta.add_prompt(3, 7, **click)
    ours = Tracker(fast_model, frames)
    assert torch.equal(ours.set_prompt(3, 7, mask=mask).low_res_logits, alone.low_res_logits)
    combined = ours.set_prompt(3, 7, mask=mask, **click)
    assert torch.equal(combined.low_res_logits, with_clicks.low_res_logits)
    assert torch.equal(combined.obj_ptrs, with_clicks.obj_ptrs)
    without_mask = Tracker(fast_model, frames).set_prompt(3, 7, **click)
    assert not torch.equal(combined.object_score_logits, without_mask.object_score_logits)  # the mask input counts
    assert ours.prompted_frames(7) == [3]
    with pytest.raises(InputError, match="mask prompt has shape"):
        ours.set_prompt(3, 7, mask=mask[:-1])
