"""StackFrames: the lazy, model-ready view of one axis of an array that the tracker reads."""

import threading
import warnings

import numpy as np
import pytest
import torch

from napari_sam2.core.frames import MAX_PERCENTILE_SAMPLES, StackFrames, model_input_from_rgb
from napari_sam2.core.prefetch import PrefetchCache
from napari_sam2.engine.preprocess import IMAGENET_MEAN, IMAGENET_STD
from napari_sam2.errors import InputError, SaturationWarning

SIZE = 32  # small model size keeps every test fast; the maths does not depend on it


class RecordingArray:
    """An array-like (like dask or zarr) that records every index it is asked for."""

    def __init__(self, array):
        self._array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.reads = []
        self._lock = threading.Lock()

    def __getitem__(self, index):
        with self._lock:
            self.reads.append(index)
        return self._array[index]


def expected_unit(values, low, high):
    """Independent reference for intensity scaling of one channel."""
    values = np.asarray(values, np.float64)
    values = np.where(np.isnan(values), low, values)
    values = np.clip(values, low, high)  # +Inf -> high, -Inf -> low
    if high <= low:
        return np.zeros(values.shape, np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def grey_rgb(unit):
    return np.repeat(unit[..., None], 3, axis=-1)


def assert_frame(frames, index, rgb):
    expected = model_input_from_rgb(rgb, frames.image_size)
    torch.testing.assert_close(frames[index], expected, atol=1e-5, rtol=0)


def random_stack(shape, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, shape).astype(dtype)


# --- model_input_from_rgb ---------------------------------------------------------------------------------------


def test_model_input_from_rgb_resizes_and_normalises():
    rgb = np.zeros((10, 14, 3), np.float32)
    rgb[..., 1] = 1.0
    tensor = model_input_from_rgb(rgb, 16)
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = (torch.tensor([0.0, 1.0, 0.0]) - mean) / std
    torch.testing.assert_close(tensor[:, 5, 7], expected)


def test_model_input_from_rgb_matches_torch_interpolate():
    rgb = np.random.default_rng(1).random((40, 24, 3), dtype=np.float32)
    pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    resized = torch.nn.functional.interpolate(
        pixels, (SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True
    )
    expected = (resized[0] - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(model_input_from_rgb(rgb, SIZE), expected)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 1), (8, 8, 4), (3, 8, 8)])
def test_model_input_from_rgb_rejects_non_rgb(shape):
    with pytest.raises(InputError, match="RGB"):
        model_input_from_rgb(np.zeros(shape, np.float32), SIZE)


# --- dtypes and intensity -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float32, np.float64])
def test_every_numeric_dtype_with_a_user_range(dtype):
    data = (random_stack((4, 12, 10), np.int64) - 200).astype(dtype)
    if np.dtype(dtype).kind == "u":
        data = np.abs(data.astype(np.int64)).astype(dtype)
    frames = StackFrames(data, intensity_range=(10, 500), image_size=SIZE, prefetch=0)
    for i in range(len(frames)):
        assert_frame(frames, i, grey_rgb(expected_unit(data[i], 10, 500)))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
def test_default_range_is_percentiles_of_the_whole_stack(dtype):
    data = random_stack((5, 16, 16), dtype)
    data[2, :4] = 0  # one darker slice must not get its own range
    frames = StackFrames(data, image_size=SIZE, prefetch=0)
    low, high = np.percentile(data, (0.5, 99.5))
    np.testing.assert_allclose(frames.intensity_ranges, [[low, high]])
    for i in range(len(frames)):
        assert_frame(frames, i, grey_rgb(expected_unit(data[i], low, high)))


def test_bool_is_zero_and_one():
    data = np.zeros((3, 8, 9), bool)
    data[1, 2:5, 3:7] = True
    frames = StackFrames(data, image_size=SIZE, prefetch=0)
    np.testing.assert_array_equal(frames.frame_rgb(1)[..., 0], data[1].astype(np.float32))
    assert_frame(frames, 1, grey_rgb(data[1].astype(np.float32)))


def test_nan_and_infinities_do_not_poison_the_frame():
    data = np.linspace(0, 100, 3 * 10 * 10, dtype=np.float32).reshape(3, 10, 10)
    data[0, 0, 0], data[0, 0, 1], data[0, 0, 2] = np.nan, np.inf, -np.inf
    frames = StackFrames(data, image_size=SIZE, prefetch=0)
    finite = data[np.isfinite(data)]
    np.testing.assert_allclose(frames.intensity_ranges, [np.percentile(finite, (0.5, 99.5))])
    rgb = frames.frame_rgb(0)
    assert rgb[0, 0, 0] == 0.0 and rgb[0, 1, 0] == 1.0 and rgb[0, 2, 0] == 0.0
    assert torch.isfinite(frames[0]).all()
    low, high = frames.intensity_ranges[0]
    assert_frame(frames, 0, grey_rgb(expected_unit(data[0], low, high)))


def test_all_nan_stack_gives_finite_frames():
    frames = StackFrames(np.full((2, 6, 6), np.nan), image_size=SIZE, prefetch=0)
    assert torch.isfinite(frames[0]).all()


@pytest.mark.parametrize("intensity_range", [None, (7, 7)])
def test_constant_image_gives_a_zero_frame_not_nan(intensity_range):
    frames = StackFrames(np.full((2, 6, 6), 7, np.uint16), intensity_range=intensity_range, image_size=SIZE)
    assert_frame(frames, 0, np.zeros((6, 6, 3), np.float32))
    assert torch.isfinite(frames[1]).all()


def test_one_range_per_channel_like_napari_contrast_limits():
    data = random_stack((3, 8, 8, 2))
    frames = StackFrames(data, channel_axis=3, intensity_range=[(0, 1000), (100, 300)], image_size=SIZE)
    rgb = np.stack([expected_unit(data[1, ..., 0], 0, 1000), expected_unit(data[1, ..., 1], 100, 300)], -1)
    assert_frame(frames, 1, np.concatenate([rgb, np.zeros_like(rgb[..., :1])], -1))


def test_ranges_per_data_channel_follow_the_chosen_channels():
    data = random_stack((2, 8, 8, 5))
    ranges = [(0, 10 * (c + 1)) for c in range(5)]
    frames = StackFrames(data, channel_axis=3, channels=[4, 1], intensity_range=ranges, image_size=SIZE)
    np.testing.assert_array_equal(frames.intensity_ranges, [ranges[4], ranges[1]])


# --- axes and channels -------------------------------------------------------------------------------------------


def test_two_channels_are_red_and_green():
    data = random_stack((2, 8, 8, 2))
    frames = StackFrames(data, channel_axis=-1, intensity_range=(0, 1000), image_size=SIZE)
    rgb = frames.frame_rgb(0)
    np.testing.assert_allclose(rgb[..., 0], expected_unit(data[0, ..., 0], 0, 1000))
    np.testing.assert_allclose(rgb[..., 1], expected_unit(data[0, ..., 1], 0, 1000))
    assert not rgb[..., 2].any()


def test_three_channels_are_rgb():
    data = random_stack((2, 8, 8, 3))
    frames = StackFrames(data, channel_axis=3, intensity_range=(0, 1000), image_size=SIZE)
    expected = np.stack([expected_unit(data[1, ..., c], 0, 1000) for c in range(3)], -1)
    assert_frame(frames, 1, expected)


@pytest.mark.parametrize(
    "layout, axis, channel_axis",
    [("nhwc", 0, 3), ("nchw", 0, 1), ("cnhw", 1, 0), ("hwnc", 2, 3), ("hcwn", 3, 1)],
)
def test_channel_axis_in_any_position(layout, axis, channel_axis):
    canonical = random_stack((3, 9, 7, 3))  # n, h, w, c
    data = np.einsum(f"nhwc->{layout}", canonical)
    frames = StackFrames(data, axis=axis, channel_axis=channel_axis, image_size=SIZE, prefetch=0)
    reference = StackFrames(canonical, channel_axis=3, image_size=SIZE, prefetch=0)
    assert frames.original_size == (9, 7) and len(frames) == 3
    np.testing.assert_allclose(frames.intensity_ranges, reference.intensity_ranges)
    for i in range(3):
        torch.testing.assert_close(frames[i], reference[i])


def test_height_and_width_keep_their_order_around_the_frame_axis():
    canonical = random_stack((4, 9, 7))
    frames = StackFrames(canonical.transpose(1, 0, 2), axis=1, image_size=SIZE, prefetch=0)
    reference = StackFrames(canonical, image_size=SIZE, prefetch=0)
    assert frames.original_size == (9, 7)
    torch.testing.assert_close(frames[2], reference[2])


def test_more_than_three_channels_need_a_choice():
    data = random_stack((2, 8, 8, 5))
    with pytest.raises(InputError, match=r"5 channels.*channels=\["):
        StackFrames(data, channel_axis=3)
    frames = StackFrames(data, channel_axis=3, channels=[3, 1], image_size=SIZE, prefetch=0)
    reference = StackFrames(data[..., [3, 1]], channel_axis=3, image_size=SIZE, prefetch=0)
    assert frames.channels == (3, 1)
    torch.testing.assert_close(frames[1], reference[1])


def test_a_single_chosen_channel_is_grey():
    data = random_stack((2, 8, 8, 4))
    frames = StackFrames(data, channel_axis=3, channels=[2], intensity_range=(0, 1000), image_size=SIZE)
    assert_frame(frames, 0, grey_rgb(expected_unit(data[0, ..., 2], 0, 1000)))


def test_4d_stack_tracked_along_time_at_one_z():
    data = random_stack((5, 4, 10, 12))  # t, z, y, x
    frames = StackFrames(data, axis=0, fixed_indices={1: 2}, image_size=SIZE, prefetch=0)
    reference = StackFrames(np.ascontiguousarray(data[:, 2]), image_size=SIZE, prefetch=0)
    assert len(frames) == 5 and frames.original_size == (10, 12)
    torch.testing.assert_close(frames[3], reference[3])


def test_4d_stack_tracked_along_z_at_one_time_point():
    data = random_stack((3, 6, 10, 12))  # t, z, y, x
    frames = StackFrames(data, axis=1, fixed_indices={0: -1}, image_size=SIZE, prefetch=0)
    reference = StackFrames(np.ascontiguousarray(data[2]), image_size=SIZE, prefetch=0)
    assert len(frames) == 6
    torch.testing.assert_close(frames[4], reference[4])


# --- laziness -------------------------------------------------------------------------------------------------------


def test_reads_only_the_requested_frame_plus_the_percentile_samples_once():
    data = RecordingArray(random_stack((40, 12, 10)))
    frames = StackFrames(data, image_size=SIZE, prefetch=0)
    assert (len(frames), frames.original_size) == (40, (12, 10))
    assert data.reads == []  # building the view reads nothing

    frames[5]
    assert all(index[1:] == (slice(None), slice(None)) for index in data.reads)
    read_frames = [index[0] for index in data.reads]
    samples = read_frames[:-1]
    assert len(samples) == MAX_PERCENTILE_SAMPLES and samples == sorted(set(samples))
    assert samples[0] == 0 and samples[-1] == 39
    assert read_frames[-1] == 5

    data.reads.clear()
    frames[6]
    frames[7]
    assert [index[0] for index in data.reads] == [6, 7]


def test_a_user_range_skips_the_sampling():
    data = RecordingArray(random_stack((10, 8, 8)))
    StackFrames(data, intensity_range=(0, 1), image_size=SIZE, prefetch=0)[3]
    assert [index[0] for index in data.reads] == [3]


def test_chosen_channels_read_with_basic_indexing_only():
    data = RecordingArray(random_stack((4, 8, 8, 6)))
    StackFrames(data, channel_axis=3, channels=[4, 2], intensity_range=(0, 1), image_size=SIZE, prefetch=0)[1]
    assert data.reads == [(1, slice(None), slice(None), slice(2, 5))]


def test_fixed_index_reads_one_plane():
    data = RecordingArray(random_stack((4, 3, 8, 8)))
    StackFrames(data, fixed_indices={1: 1}, intensity_range=(0, 1), image_size=SIZE, prefetch=0)[2]
    assert data.reads == [(2, 1, slice(None), slice(None))]


def test_memmap_stack(tmp_path):
    data = random_stack((6, 10, 10))
    mapped = np.memmap(tmp_path / "stack.raw", dtype=data.dtype, mode="w+", shape=data.shape)
    mapped[:] = data
    mapped.flush()
    readonly = np.memmap(tmp_path / "stack.raw", dtype=data.dtype, mode="r", shape=data.shape)
    with StackFrames(readonly, image_size=SIZE) as frames:
        torch.testing.assert_close(frames[4], StackFrames(data, image_size=SIZE, prefetch=0)[4])


def test_torch_tensor_stack():
    data = random_stack((3, 8, 8), np.float32)
    frames = StackFrames(torch.from_numpy(data), image_size=SIZE, prefetch=0)
    torch.testing.assert_close(frames[1], StackFrames(data, image_size=SIZE, prefetch=0)[1])


# --- prefetch -------------------------------------------------------------------------------------------------------


def test_prefetch_gives_the_same_tensors_forwards_and_backwards():
    data = random_stack((9, 16, 12), np.float32)
    plain = StackFrames(data, image_size=SIZE, prefetch=0)
    with StackFrames(data, image_size=SIZE, prefetch=2) as prefetched:
        for i in [*range(9), *reversed(range(9)), 4, 4, 0]:
            torch.testing.assert_close(prefetched[i], plain[i])
            assert len(prefetched._cache.cached_indices()) <= 3


def test_frames_for_a_gpu_are_prepared_in_page_locked_memory(monkeypatch):
    # pin_memory needs CUDA: recorded here, so that the CPU machines check the frames for a GPU are the pinned ones
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(self.shape) or self.clone())
    data = random_stack((4, 16, 12), np.float32)
    with StackFrames(data, image_size=SIZE, prefetch=2, pin_memory=True) as frames:
        for i in range(4):
            torch.testing.assert_close(frames[i], StackFrames(data, image_size=SIZE, prefetch=0)[i])
    assert pinned and all(shape == (3, SIZE, SIZE) for shape in pinned)
    pinned.clear()
    StackFrames(data, image_size=SIZE, prefetch=0)[0]
    assert pinned == []


def test_prefetch_follows_the_direction_of_travel():
    calls = []
    cache = PrefetchCache(lambda i: calls.append(i) or i, length=10, depth=2)
    assert cache.get(5) == 5
    assert cache.get(4) == 4  # now going backwards
    assert set(cache.cached_indices()) == {4, 3, 2}
    assert cache.get(3) == 3 and cache.get(2) == 2
    assert calls.count(3) == 1 and calls.count(2) == 1  # prepared ahead, not recomputed
    assert set(cache.cached_indices()) <= {2, 1, 0}
    cache.close()
    assert cache.cached_indices() == [] and cache.get(7) == 7


def test_prefetch_stops_at_the_ends():
    cache = PrefetchCache(lambda i: i, length=3, depth=2)
    cache.get(2)
    assert cache.cached_indices() == [2]
    cache.close()


def test_a_failed_frame_is_retried_not_cached():
    attempts = []

    def flaky(i):
        attempts.append(i)
        if len(attempts) == 1:
            raise OSError("disk hiccup")
        return i

    cache = PrefetchCache(flaky, length=4, depth=0)
    with pytest.raises(OSError):
        cache.get(1)
    assert cache.get(1) == 1 and attempts == [1, 1]


def test_close_keeps_the_view_usable():
    frames = StackFrames(random_stack((4, 8, 8)), image_size=SIZE, prefetch=2)
    first = frames[0].clone()
    frames.close()
    torch.testing.assert_close(frames[0], first)


# --- indices and bad input ------------------------------------------------------------------------------------------


def test_out_of_range_index_raises_index_error():
    frames = StackFrames(random_stack((3, 8, 8)), image_size=SIZE, prefetch=0)
    for index in (3, 100, -4):
        with pytest.raises(IndexError):
            frames[index]
    torch.testing.assert_close(frames[-1], frames[2])
    assert len(list(frames)) == 3  # iteration stops at the end


@pytest.mark.parametrize(
    "data, kwargs, message",
    [
        (np.zeros((64, 64)), {}, "single 2D image.*segment_image"),  # (a 2D TIFF among stacks: stack_axes)
        (np.zeros((64, 64, 3)), {"channel_axis": 2}, "single 2D image.*segment_image"),
        (np.zeros((4, 8, 8)), {"axis": 3}, "axis=3 is out of range"),
        (np.zeros((4, 8, 8)), {"axis": -4}, "out of range"),
        (np.zeros((4, 8, 8, 2)), {"channel_axis": 4}, "channel_axis=4 is out of range"),
        (np.zeros((4, 8, 8, 2)), {"axis": 0, "channel_axis": 0}, "must be different"),
        (np.zeros((4, 8, 8, 2)), {"axis": 3, "channel_axis": -1}, "must be different"),
        (np.zeros((4, 1, 8)), {}, "too small"),
        (np.zeros((4, 8, 1)), {}, "too small"),
        (np.zeros((0, 8, 8)), {}, "no frames"),
        (np.zeros((4, 8, 8), np.complex64), {}, "complex"),
        (np.empty((4, 8, 8), object), {}, "objects"),
        (np.zeros((4, 8, 8), "U1"), {}, "cannot be segmented"),
        (np.zeros((4, 3, 8, 8)), {}, r"fixed_indices=\{1: 0\}"),
        (np.zeros((4, 3, 8, 8)), {"fixed_indices": {1: 3}}, r"fixed_indices\[1\]=3 is out of range"),
        (np.zeros((4, 3, 8, 8)), {"fixed_indices": {0: 1}}, "already the frame axis"),
        (np.zeros((4, 8, 8)), {"fixed_indices": {1: 0}}, "fewer than 2 axes"),
        (np.zeros((4, 8, 8, 5)), {"channel_axis": 3}, "Choose up to 3"),
        (np.zeros((4, 8, 8, 5)), {"channel_axis": 3, "channels": [0, 1, 2, 3]}, "1 to 3 channels"),
        (np.zeros((4, 8, 8, 5)), {"channel_axis": 3, "channels": []}, "1 to 3 channels"),
        (np.zeros((4, 8, 8, 5)), {"channel_axis": 3, "channels": [5]}, "Channel 5 does not exist"),
        (np.zeros((4, 8, 8, 0)), {"channel_axis": 3}, "no channels"),
        (np.zeros((4, 8, 8)), {"channels": [0]}, "give channel_axis"),
        (np.zeros((4, 8, 8)), {"intensity_range": (0, 1, 2)}, "intensity_range"),
        (np.zeros((4, 8, 8)), {"intensity_range": (5, 1)}, "low value must not be above"),
        (np.zeros((4, 8, 8)), {"intensity_range": (0, np.inf)}, "finite"),
        (np.zeros((4, 8, 8)), {"intensity_range": "bright"}, "intensity_range"),
        (np.zeros((4, 8, 8, 2)), {"channel_axis": 3, "intensity_range": [(0, 1)] * 3}, "each of the 2 channel"),
        (np.zeros((4, 8, 8)), {"image_size": 0}, "image_size must be at least 1"),
        (np.zeros((4, 8, 8)), {"prefetch": -1}, "prefetch must be at least 0"),
        (np.zeros((4, 8, 8)), {"axis": 1.5}, "must be an integer"),
        ("not an array", {}, "Expected an array"),
    ],
)
def test_bad_input_gives_a_clear_input_error(data, kwargs, message):
    with pytest.raises(InputError, match=message):
        StackFrames(data, **kwargs)


def test_input_error_is_a_value_error():
    with pytest.raises(ValueError):
        StackFrames(np.zeros((8, 8)))


# --- saturation: say when SAM2 is shown (almost) nothing -------------------------------------------------------


def saturated_stack(fraction_every=50, shape=(6, 64, 64), top=65535, seed=1):
    """Dim nuclei-like values (100 to 1100) with every ``fraction_every``-th pixel at ``top``: 2 % by default."""
    stack = random_stack(shape, seed=seed) + 100
    stack.reshape(-1)[::fraction_every] = top
    return stack


def saturation_warnings(caught):
    return [w for w in caught if issubclass(w.category, SaturationWarning)]


def test_a_stack_pinned_to_saturated_pixels_warns_once_naming_the_fraction_and_the_remedies():
    frames = StackFrames(saturated_stack(), image_size=SIZE, prefetch=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for index in range(len(frames)):  # every frame, and the range again: one warning for the stack
            frames[index]
        frames.frame_rgb(0)
        frames.intensity_ranges
    found = saturation_warnings(caught)
    assert len(found) == 1, [str(w.message) for w in caught]
    message = str(found[0].message)
    assert message.startswith("2.0% of the sampled pixels sit at the top of the intensity range (65535, the largest value")
    assert "others reach only 2% of it" in message
    for remedy in ('"Use the layer\'s contrast limits"', "intensity_range=(low, high)", "--intensity-range LOW,HIGH"):
        assert remedy in message
    assert frames.intensity_ranges[0, 1] == 65535  # the range is still what it was: the warning only tells


def test_the_warning_comes_on_the_thread_that_asks_for_frames_not_the_prefetch_thread():
    frames = StackFrames(saturated_stack(), image_size=SIZE, prefetch=3)
    threads = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda *args, **kwargs: threads.append(threading.current_thread().name)
        for index in range(len(frames)):
            frames[index]
    frames.close()
    assert threads == [threading.current_thread().name]


@pytest.mark.parametrize(
    "case",
    ["user range", "bool", "normal", "few grey levels", "constant", "saturated but the cells are bright too",
     "hot pixels under 0.5 %"],
)
def test_no_warning_where_the_cells_show(case):
    kwargs = {}
    data = saturated_stack()
    if case == "user range":
        # The user chose the range (napari's contrast limits): clipping its brightest pixels is what they asked for,
        # and giving a range is what the warning would advise.
        kwargs = {"intensity_range": (100, 1100)}
    elif case == "bool":
        data = random_stack((4, 16, 16)) > 500
    elif case == "normal":
        data = random_stack((4, 64, 64))
    elif case == "few grey levels":
        data = (random_stack((4, 64, 64)) // 200).astype(np.uint8)  # 0 to 4: more than 0.5 % at the top level
    elif case == "constant":
        data = np.full((4, 16, 16), 65535, np.uint16)
    elif case == "saturated but the cells are bright too":
        data = saturated_stack(top=1200)  # the others reach most of the range
    else:
        data = saturated_stack(fraction_every=250)  # 0.4 %
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturationWarning)
        StackFrames(data, image_size=SIZE, prefetch=0, **kwargs)[0]


def test_each_channel_is_checked_and_named_by_its_index_in_the_data():
    channel = saturated_stack()
    data = np.stack([random_stack(channel.shape), np.zeros_like(channel), channel], axis=-1)  # (z, y, x, c)
    with pytest.warns(SaturationWarning, match=r"^2\.0% of the sampled pixels of channel 2 sit at the top") as caught:
        StackFrames(data, channel_axis=3, channels=[0, 2], image_size=SIZE, prefetch=0)[0]
    assert len(saturation_warnings(caught)) == 1 and "channel 0" not in str(caught[0].message)


def test_a_range_made_empty_by_a_zero_background_is_said_too():
    data = np.zeros((4, 64, 64), np.uint16)
    data[:, 10:13, 10:13] = 800  # 0.2 % bright: both percentiles are 0, and every frame comes out black
    with pytest.warns(SaturationWarning, match=r"99\.8% of the sampled pixels have the same value \(0\)"):
        rgb = StackFrames(data, image_size=SIZE, prefetch=0).frame_rgb(0)
    assert not rgb.any()
