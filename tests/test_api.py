"""The scripting API: segment_image, segment_stack, stream_stack, on the fast model (random weights, 256 px)."""

import warnings

import numpy as np
import pytest
from conftest import SMALL_STACK_FRAME

from napari_sam2.api import (
    Prompt,
    clear_model_cache,
    get_model,
    segment_image,
    segment_stack,
    stream_stack,
)
from napari_sam2.core.frames import StackFrames
from napari_sam2.engine import ImagePredictor, Tracker
from napari_sam2.errors import InputError, PromptWarning, SaturationWarning

FRAME = SMALL_STACK_FRAME  # the prompted frame


@pytest.fixture(scope="module")
def stack(small_stack):
    return small_stack


@pytest.fixture(scope="module")
def clicks(small_stack_clicks):
    return small_stack_clicks


@pytest.fixture(scope="module")
def two_prompts(clicks):
    return [Prompt(FRAME, 1, [clicks[0]]), Prompt(FRAME, 2, [clicks[1]])]


@pytest.fixture(scope="module")
def one_object(stack, fast_model, clicks):
    return segment_stack(stack, [Prompt(FRAME, 1, [clicks[0]])], model=fast_model)


@pytest.fixture(scope="module")
def two_objects(stack, fast_model, two_prompts):
    return segment_stack(stack, two_prompts, model=fast_model)


# ---- segment_stack ------------------------------------------------------------------------------


def test_prompted_frame_is_what_the_engine_gives_and_every_frame_is_segmented(stack, fast_model, clicks, one_object):
    assert one_object.shape == stack.shape and one_object.dtype == np.int32
    frames = StackFrames(stack, image_size=fast_model.image_size)
    engine = Tracker(fast_model, frames).add_prompt(FRAME, 1, points=[clicks[0][::-1]], labels=[1])
    expected = engine.mask_logits[0].numpy() > 0
    assert expected.sum() > 100  # a real mask, so the comparison means something
    np.testing.assert_array_equal(one_object[FRAME] == 1, expected)
    assert all((frame == 1).any() for frame in one_object)  # propagated forward and backward
    assert set(np.unique(one_object)) <= {0, 1}


def test_several_objects_never_overlap_and_lose_no_pixels(one_object, two_objects):
    assert set(np.unique(two_objects)) == {0, 1, 2}
    # Each object is tracked on its own; a pixel of object 1 is only ever given to object 2, never to background.
    alone = one_object == 1
    assert np.all(two_objects[alone] > 0)
    assert np.all(alone[two_objects == 1])


@pytest.mark.parametrize("layout", ["float32", "y_z_x", "channel_axis", "4d_fixed"])
def test_same_result_whatever_the_dtype_or_axis_order(stack, fast_model, two_prompts, two_objects, layout):
    kwargs = {}
    if layout == "float32":
        data = stack.astype(np.float32)  # same values: same percentiles, same masks
    elif layout == "y_z_x":
        data, kwargs = np.moveaxis(stack, 0, 1), dict(axis=1)
    elif layout == "channel_axis":
        data, kwargs = stack[:, None], dict(channel_axis=1)
    else:
        data = np.stack([np.zeros_like(stack), stack], axis=1)
        kwargs = dict(axis=0, fixed_indices={1: 1})
    labels = segment_stack(data, two_prompts, model=fast_model, **kwargs)
    np.testing.assert_array_equal(labels, two_objects)


def test_forward_and_backward_leave_the_other_side_empty(stack, fast_model, clicks):
    prompts = [Prompt(1, 1, [clicks[0]]), Prompt(2, 1, [clicks[0]])]
    forward = segment_stack(stack, prompts, model=fast_model, direction="forward")
    assert not forward[0].any()  # before the first prompted frame
    backward = segment_stack(stack, prompts, model=fast_model, direction="backward", frame_range=(1, 3))
    assert not backward[3].any()  # after the last prompted frame


def test_frame_range_limits_the_run_and_progress_is_reported(stack, fast_model, clicks):
    calls = []
    labels = segment_stack(stack, [Prompt(FRAME, 1, [clicks[0]])], model=fast_model, frame_range=(1, 2),
                           progress=lambda done, total: calls.append((done, total)))
    assert not labels[0].any() and not labels[3].any() and labels[FRAME].any()
    assert calls[-1] == (2, 2)


def test_stream_stops_when_the_consumer_stops(stack, fast_model, clicks):
    run = stream_stack(stack, [Prompt(FRAME, 1, [clicks[0]])], model=fast_model, direction="forward")
    assert run.total == 2 and run.n_frames == 4 and run.frame_size == (96, 128)
    first = next(run)
    assert first.frame == FRAME and first.obj_ids == (1,) and first.labels.shape == (96, 128)
    run.close()
    with pytest.raises(StopIteration):
        next(run)


@pytest.mark.parametrize(
    "data, prompts, kwargs, message",
    [
        (np.zeros((96, 128)), [Prompt(0, 1, [(1, 1)])], {}, "single 2D image"),
        (None, [Prompt(4, 1, [(1, 1)])], {}, "frame 4"),
        (None, [Prompt(0, 1, [(96, 5)])], {}, "outside"),
        (None, [Prompt(0, 1, [(5, -2)])], {}, "outside"),
        (None, [], {}, "No prompts"),
        (None, [(0, 1, (5, 5))], {}, "Prompt objects"),
        (None, [Prompt(0, 1, [(1, 1)])], dict(axis=3), "axis=3"),
        (None, [Prompt(0, 1, [(1, 1)])], dict(direction="sideways"), "direction"),
        (None, [Prompt(0, 1, [(1, 1)])], dict(frame_range=(2, 1)), "frame_range"),
        (None, [Prompt(0, 1, [(1, 1)])], dict(frame_range=(1, 2)), "No prompt lies within"),
        (None, [Prompt(0, 1, [(1, 1)])], dict(model="no-such-model"), "Unknown model"),
        (np.zeros((4, 96, 128), complex), [Prompt(0, 1, [(1, 1)])], {}, "complex"),
    ],
)
def test_bad_input_is_an_input_error(stack, fast_model, data, prompts, kwargs, message):
    kwargs = {"model": fast_model, **kwargs}
    with pytest.raises(InputError, match=message):
        segment_stack(stack if data is None else data, prompts, **kwargs)


def test_label_values_are_the_object_ids_exactly_up_to_the_int32_maximum(stack, fast_model, clicks, two_objects):
    largest = 2**31 - 1
    prompts = [Prompt(FRAME, 300, [clicks[0]]), Prompt(FRAME, largest, [clicks[1]])]
    labels = segment_stack(stack, prompts, model=fast_model)
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {0, 300, largest}
    np.testing.assert_array_equal(labels, np.select([two_objects == 1, two_objects == 2], [300, largest], 0))

    image = stack[FRAME]  # two objects on one image: the same ids, the same contested pixels whatever the id values
    small = segment_image(image, [Prompt(0, 1, [clicks[1]]), Prompt(0, 2, [clicks[0]])], model=fast_model)
    large = segment_image(image, [Prompt(0, 256, [clicks[1]]), Prompt(0, largest, [clicks[0]])], model=fast_model)
    assert large.dtype == np.int32 and set(np.unique(small)) == {0, 1, 2}
    np.testing.assert_array_equal(large, np.select([small == 1, small == 2], [256, largest], 0))

    with pytest.raises(InputError, match="too large"):
        Prompt(FRAME, 2**31, [clicks[0]])  # int32 labels cannot hold it: refused before anything is computed


def saturated(stack):
    """The stack with 2 % of its pixels at 65535 (a saturated border, hot pixels): the cells go nearly black."""
    data = stack.copy()
    data.reshape(-1)[::50] = np.iinfo(np.uint16).max
    return data


def test_a_saturated_stack_warns_once_for_the_whole_stack(stack, fast_model, clicks):
    with pytest.warns(SaturationWarning) as caught:
        segment_stack(saturated(stack), [Prompt(FRAME, 1, [clicks[0]])], model=fast_model)
    found = [w for w in caught if issubclass(w.category, SaturationWarning)]
    assert len(found) == 1  # not once per frame
    message = str(found[0].message)
    assert message.startswith("2.0% of the sampled pixels sit at the top of the intensity range (65535")
    assert "intensity_range=(low, high)" in message and "Use the layer's contrast limits" in message

    with pytest.warns(SaturationWarning, match="2.0% of the sampled pixels"):
        segment_image(saturated(stack)[FRAME], [Prompt(0, 1, [clicks[0]])], model=fast_model)


def test_no_saturation_warning_for_a_normal_stack_or_a_range_the_user_gave(stack, fast_model, clicks):
    prompts = [Prompt(FRAME, 1, [clicks[0]])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturationWarning)
        for data, kwargs in ((stack, {}), (saturated(stack), {"intensity_range": (0, 2000)})):
            run = stream_stack(data, prompts, model=fast_model, **kwargs)
            next(run)  # the range is fixed on the first frame
            run.close()


# ---- segment_image ------------------------------------------------------------------------------


def engine_mask(model, image_frames, point_rc):
    """The best of the three masks Meta's image predictor gives for one click."""
    predictor = ImagePredictor(model)
    predictor.set_model_input(image_frames[0], image_frames.original_size)
    logits, scores, _ = predictor.predict(point_coords=[point_rc[::-1]], point_labels=[1], return_logits=True)
    return logits[np.argmax(scores)] > 0


def test_segment_image_is_what_the_image_predictor_gives(stack, fast_model, clicks):
    image = stack[FRAME]
    labels = segment_image(image, [Prompt(0, 1, [clicks[0]])], model=fast_model)
    expected = engine_mask(fast_model, StackFrames(image[None], image_size=fast_model.image_size), clicks[0])
    assert expected.sum() > 100
    np.testing.assert_array_equal(labels == 1, expected)


def as_dtype(image, dtype):
    unit = (image - image.min()) / float(image.max() - image.min())
    if dtype == "uint8":
        return (unit * 255).astype(np.uint8)
    if dtype == "bool":
        return unit > 0.3
    if dtype == "rgb":
        return np.repeat((unit * 255).astype(np.uint8)[..., None], 3, axis=-1)
    if dtype == "two_channels":
        return np.stack([unit, 1 - unit], axis=-1).astype(np.float32)
    return image.astype(dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "bool", "rgb", "two_channels"])
def test_segment_image_takes_any_dtype_and_channels(stack, fast_model, clicks, dtype):
    image = as_dtype(stack[FRAME], dtype)
    labels = segment_image(image, [Prompt(0, 3, [clicks[0]]), Prompt(0, 7, box=(60, 20, 90, 60))], model=fast_model)
    assert labels.shape == (96, 128) and labels.dtype == np.int32
    assert set(np.unique(labels)) <= {0, 3, 7} and (labels == 3).any()


def test_segment_image_takes_prompts_on_the_outermost_pixels(stack, fast_model):
    image = stack[FRAME]
    height, width = image.shape
    prompts = [
        Prompt(0, 1, [(0, 0), (height - 1, width - 1)], [1, 0]),
        Prompt(0, 2, [(-0.5, width - 0.5)]),
        Prompt(0, 3, box=(-0.5, -0.5, height - 0.5, width - 0.5)),
    ]
    labels = segment_image(image, prompts, model=fast_model)
    assert labels.shape == (height, width) and set(np.unique(labels)) <= {0, 1, 2, 3}


def test_segment_image_later_objects_do_not_overwrite_earlier_ones(stack, fast_model, clicks):
    image = stack[FRAME]
    first_alone = segment_image(image, [Prompt(0, 1, [clicks[0]])], model=fast_model) == 1
    labels = segment_image(image, [Prompt(0, 1, [clicks[0]]), Prompt(0, 2, [clicks[0]])], model=fast_model)
    np.testing.assert_array_equal(labels == 1, first_alone)
    assert not (labels == 2).any()  # the same click: every pixel already belongs to object 1


@pytest.mark.parametrize(
    "image, prompts, message",
    [
        (np.zeros((4, 96, 128)), [Prompt(0, 1, [(1, 1)])], "stack"),
        (np.zeros((2, 3, 96, 128)), [Prompt(0, 1, [(1, 1)])], "one 2D image"),
        (np.zeros((96, 128)), [Prompt(1, 1, [(1, 1)])], "frame=0"),
        (np.zeros((96, 128)), [Prompt(0, 1, [(1, 200)])], "outside"),
    ],
)
def test_segment_image_bad_input(fast_model, image, prompts, message):
    with pytest.raises(InputError, match=message):
        segment_image(image, prompts, model=fast_model)


# ---- models ----------------------------------------------------------------------------------------


def test_models_are_loaded_once_per_file_and_device(synthetic_checkpoint):
    path = synthetic_checkpoint("sam2.1_hiera_t", 0)
    clear_model_cache()
    model = get_model(path, device="cpu")
    assert get_model(str(path), device="cpu") is model
    assert get_model(model) is model
    clear_model_cache()
    assert get_model(path, device="cpu") is not model
    clear_model_cache()


# ---- the session the widget keeps -------------------------------------------------------------------


def test_session_retracks_only_from_a_corrected_frame(stack, fast_model, clicks):
    from napari_sam2.api import TrackingSession

    with TrackingSession(stack, model=fast_model) as session:
        first = [Prompt(FRAME, 1, [clicks[0]])]
        assert [r.frame for r in session.set_prompts(first)] == [FRAME]
        assert session.set_prompts(first) == []  # nothing changed: nothing recomputed
        assert len(list(session.propagate())) == 5  # 2, 3, then 2, 1, 0
        corrected = first + [Prompt(0, 1, [clicks[1]], [0])]
        assert [r.frame for r in session.set_prompts(corrected)] == [0]
        assert session.has_propagated and session.pending_frames == (0,)
        frames = [r.frame for r in session.propagate_corrections()]
        assert frames[0] == 0 and set(frames) <= {0, 1, 2, 3}
        assert session.pending_frames == ()
        # the correction deleted: no restart, only that pair is forgotten, and the object is re-tracked whole
        assert [(r.frame, r.masks.any()) for r in session.set_prompts(first)] == [(0, False)]
        assert session.has_propagated and session.prompted_pairs == ((FRAME, 1),)
        assert session.pending_frames == (FRAME,)
        retracked = {r.frame: r.labels for r in session.propagate_corrections()}
        fresh = {r.frame: r.labels for r in session.propagate()}
        assert sorted(retracked) == sorted(fresh) == [0, 1, 2, 3]
        for frame in fresh:
            np.testing.assert_array_equal(retracked[frame], fresh[frame])


def test_an_object_with_only_negative_clicks_on_a_frame_warns_and_is_still_segmented(stack, fast_model, clicks):
    negative = Prompt(FRAME, 1, [clicks[0], (5, 5)], [0, 0])
    with pytest.warns(PromptWarning) as caught:
        labels = segment_stack(stack, [negative, Prompt(FRAME, 2, [clicks[1]])], model=fast_model)
    assert [str(w.message) for w in caught if issubclass(w.category, PromptWarning)] == [
        f"Object 1 has only negative clicks on frame {FRAME}: SAM2 needs a positive click (on the object) or a box "
        "there to find it."
    ]
    assert labels.shape == stack.shape  # the prompts are used as given, as Meta's predictor takes them
    with pytest.warns(PromptWarning, match="Object 3 has only negative clicks on frame 0"):
        segment_image(stack[FRAME], [Prompt(0, 3, [clicks[0]], [0])], model=fast_model)

    # a positive click, a box or a mask on the same frame, in the same or another Prompt: no warning
    box = (0, 0, 20, 20)
    mask = np.zeros(stack.shape[1:], bool)
    mask[:8, :8] = True
    for extra in (Prompt(FRAME, 1, [clicks[0]]), Prompt(FRAME, 1, box=box), Prompt(FRAME, 1, mask=mask)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", PromptWarning)
            segment_stack(stack, [negative, extra], model=fast_model, frame_range=(FRAME, FRAME))
