"""Mask prompts and seeding from a label image (issue 15, part 1): Prompt(mask=...), segment_stack(seed_labels=...),
TrackingSession with masks; on the fast model (random weights, 256 px): the masks are checked against the engine's
own mask-prompt path, which the golden scenario video_sam2.1_t_mask_prompts proves against Meta's add_new_mask."""

import numpy as np
import pytest
import torch

from napari_sam2.api import Prompt, TrackingSession, segment_image, segment_stack
from napari_sam2.core.frames import StackFrames
from napari_sam2.core.seeding import seed_prompts
from napari_sam2.engine import Tracker
from napari_sam2.errors import InputError

SEED_FRAME = 1


def assert_like(ours, mask):
    """A mask prompt's output is the mask itself, seen at the model's resolution (256 px here, so a rectangle's
    corner pixels may round away): Meta's add_new_mask."""
    assert (ours & mask).sum() / (ours | mask).sum() > 0.98


@pytest.fixture(scope="module")
def stack(small_stack):
    return small_stack


@pytest.fixture(scope="module")
def seeds(small_stack):
    """Labels 3 and 9 on SEED_FRAME: two rectangles, as a Cellpose result would give (int32)."""
    labels = np.zeros(small_stack.shape[1:], np.int32)
    labels[20:44, 30:60] = 3
    labels[60:80, 80:110] = 9
    labels.flags.writeable = False  # the user's labels are never changed (numpy would raise on a write)
    return labels


def test_a_seed_label_on_its_frame_is_the_mask_itself(stack, fast_model, seeds):
    labels = segment_stack(stack, model=fast_model, seed_labels=seeds, seed_frame=SEED_FRAME)
    assert labels.shape == stack.shape and labels.dtype == np.int32
    # Meta's add_new_mask: the mask itself is the output, seen at the model's resolution (256 px here, so a
    # rectangle's corner pixels may round away)
    for value in (3, 9):
        assert_like(labels[SEED_FRAME] == value, seeds == value)
    assert set(np.unique(labels)) <= {0, 3, 9}


def test_seeds_from_a_whole_label_stack_take_the_seed_frame(stack, fast_model, seeds):
    label_stack = np.zeros(stack.shape, np.uint16)
    label_stack[SEED_FRAME] = seeds
    label_stack[0, :5, :5] = 4  # another frame's labels are not seeds
    from_stack = segment_stack(stack, model=fast_model, seed_labels=label_stack, seed_frame=SEED_FRAME)
    from_frame = segment_stack(stack, model=fast_model, seed_labels=seeds, seed_frame=SEED_FRAME)
    np.testing.assert_array_equal(from_stack, from_frame)
    assert 4 not in from_stack


def test_the_session_decodes_a_mask_prompt_as_the_tracker_does(stack, fast_model, seeds):
    mask = seeds == 3
    with TrackingSession(stack, model=fast_model, feature_cache=None) as session:
        (given,) = session.add_prompts([Prompt(SEED_FRAME, 3, mask=mask)])
        assert_like(given.mask(3), mask)
        labels = {r.frame: r.labels for r in session.propagate()}
    with StackFrames(stack, image_size=fast_model.image_size, prefetch=0) as frames:
        tracker = Tracker(fast_model, frames)
        tracker.set_prompt(SEED_FRAME, 3, mask=mask)
        expected = {r.frame_idx: (r.mask_logits[0] > 0).numpy() for r in tracker.propagate_from_prompts("both")}
    assert set(labels) == set(range(len(stack)))
    for frame, labelled in labels.items():
        np.testing.assert_array_equal(labelled == 3, expected[frame])


def test_clicks_on_a_seed_refine_it_and_results_depend_on_the_prompts_only(stack, fast_model, seeds):
    mask = seeds == 9
    click = Prompt(SEED_FRAME, 9, points=[(70, 95)])
    with TrackingSession(stack, model=fast_model, feature_cache=None) as session:
        session.set_prompts([Prompt(SEED_FRAME, 9, mask=mask), click])
        refined = session.frame_labels(SEED_FRAME).mask(9)
        session.set_prompts([Prompt(SEED_FRAME, 9, mask=mask)])  # the click removed: back to the mask
        assert_like(session.frame_labels(SEED_FRAME).mask(9), mask)
        session.set_prompts([click, Prompt(SEED_FRAME, 9, mask=mask)])  # the same prompts, another order
        np.testing.assert_array_equal(session.frame_labels(SEED_FRAME).mask(9), refined)
    with StackFrames(stack, image_size=fast_model.image_size, prefetch=0) as frames:
        tracker = Tracker(fast_model, frames)
        tracker.add_mask(SEED_FRAME, 9, mask)
        meta = tracker.add_prompt(SEED_FRAME, 9, points=[[95.0, 70.0]], labels=[1])  # Meta: clicks after the mask
    np.testing.assert_array_equal(refined, (meta.mask_logits[0] > 0).numpy())


def test_a_changed_mask_is_a_changed_prompt(stack, fast_model, seeds):
    with TrackingSession(stack, model=fast_model, feature_cache=None) as session:
        session.set_prompts([Prompt(SEED_FRAME, 3, mask=seeds == 3)])
        smaller = (seeds == 3) & (np.arange(seeds.shape[1]) < 45)
        (changed,) = session.set_prompts([Prompt(SEED_FRAME, 3, mask=smaller)])
        assert_like(changed.mask(3), smaller)
        assert session.set_prompts([Prompt(SEED_FRAME, 3, mask=smaller.copy())]) == []  # equal masks: no change


def test_mask_prompts_on_a_padded_model_frame(fast_model, seeds):
    """micro-sam's preprocessing pads the frame to a square: the mask is padded alike, and comes back cropped."""
    stack = np.random.default_rng(0).integers(0, 1000, (3, 96, 128), dtype=np.uint16)
    mask = seeds == 3
    with TrackingSession(stack, model=fast_model, feature_cache=None, preprocessing="micro_sam") as session:
        (given,) = session.add_prompts([Prompt(0, 3, mask=mask)])
    assert given.masks.shape == (1, 96, 128)
    assert (given.mask(3) == mask).mean() > 0.99


def test_seed_prompts_one_per_label_value():
    labels = np.zeros((6, 8), np.float32)
    labels[1:3, 1:3] = 2.0
    labels[4:6, 5:8] = 7.0
    prompts = seed_prompts(labels, 0, n_frames=5, frame_size=(6, 8))
    assert [(p.frame, p.obj_id) for p in prompts] == [(0, 2), (0, 7)]
    np.testing.assert_array_equal(prompts[1].mask, labels == 7)
    assert not prompts[0].mask.flags.writeable


@pytest.mark.parametrize("labels, frame, message", [
    (np.zeros((6, 8), np.int32), 0, "no object on frame 0"),
    (np.full((6, 8), -1, np.int32), 0, "0 \\(background\\) or positive"),
    (np.full((6, 8), 1.5), 0, "whole numbers"),
    (np.ones((5, 6), np.int32), 0, "give one frame's labels \\(6, 8\\)"),
    (np.ones((6, 8), np.int32), 5, "seed_frame must be a frame number from 0 to 4"),
    (np.full((6, 8), 2**31, np.int64), 0, "too large"),
    (np.array([["a"] * 8] * 6), 0, "must be integers"),
])
def test_bad_seed_labels(labels, frame, message):
    with pytest.raises(InputError, match=message):
        seed_prompts(labels, frame, n_frames=5, frame_size=(6, 8))


@pytest.mark.parametrize("kwargs, message", [
    (dict(mask=np.zeros((4, 4))), "is empty"),
    (dict(mask=np.ones((2, 4, 4))), "2D"),
    (dict(mask=np.full((4, 4), np.nan)), "NaN"),
    (dict(), "no points, box or mask"),
])
def test_bad_mask_prompts(kwargs, message):
    with pytest.raises(InputError, match=message):
        Prompt(0, 1, **kwargs)


def test_mask_prompts_are_checked_against_the_stack_before_any_model(stack, seeds):
    with pytest.raises(InputError, match="has shape \\(10, 10\\), but a frame is 96 x 128"):
        segment_stack(stack, [Prompt(0, 1, mask=np.ones((10, 10)))], model="no such model")
    with pytest.raises(InputError, match="two masks"):
        segment_stack(stack, [Prompt(SEED_FRAME, 3, mask=seeds == 3)], model="no such model", seed_labels=seeds,
                      seed_frame=SEED_FRAME)
    with pytest.raises(InputError, match="No prompts given"):
        segment_stack(stack, model="no such model")
    with pytest.raises(InputError, match="Mask prompts seed objects in a stack"):
        segment_image(stack[0], [Prompt(0, 1, mask=seeds == 3)], model="no such model")


def test_prompts_compare_by_their_masks():
    mask = np.eye(4, dtype=bool)
    assert Prompt(0, 1, mask=mask) == Prompt(0, 1, mask=mask.astype(np.uint8) * 5)
    assert Prompt(0, 1, mask=mask) != Prompt(0, 1, mask=~mask)
    assert Prompt(0, 1, points=[(1, 1)]) != Prompt(0, 1, points=[(1, 1)], mask=mask)
    assert len({Prompt(0, 1, mask=mask), Prompt(0, 1, mask=mask)}) == 1
    assert torch.equal(torch.as_tensor(Prompt(0, 1, mask=mask).mask), torch.as_tensor(mask))
