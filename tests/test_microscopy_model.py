"""micro-sam's light-microscopy SAM2.1 tiny ("hvit_t_cells"): its registry entry (xxh128 hash, source, licence,
preprocessing profile), its download and loading (a synthetic checkpoint in micro-sam's file layout, served on
127.0.0.1), its preprocessing (2-98 percentiles, longest side resized with zero padding) and its listing."""

import dataclasses
import io

import numpy as np
import pytest
import torch
import xxhash
from checkpoint_server import (  # noqa: F401  (fixtures)
    PAYLOAD,
    CheckpointServer,
    add_model,
    isolated_cache,
    server,
)

from napari_sam2 import cli
from napari_sam2.api import segment_image, segment_stack
from napari_sam2.core.frames import StackFrames
from napari_sam2.core.prompts import Prompt
from napari_sam2.core.tracking import TrackingSession
from napari_sam2.engine.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MICRO_SAM,
    SAM2_DEFAULT,
    Preprocessing,
    longest_side_pad_input,
    model_input,
    pad_to_square,
)
from napari_sam2.errors import CheckpointError, InputError
from napari_sam2.models import registry as models
from napari_sam2.models.loaded import clear_model_cache, get_model, preprocessing_for

NAME = "hvit_t_cells"


def xxh128(data: bytes) -> str:
    return xxhash.xxh128(data).hexdigest()


# ---------------------------------------------------------------- the registry entry


def test_registry_entry_names_micro_sams_file_hash_source_licence_and_profile():
    info = models.MODELS[NAME]
    assert info.config_name == "sam2.1_hiera_t"
    assert info.url == "https://owncloud.gwdg.de/index.php/s/PJRPRXC3BNOLJ6X/download"
    assert info.known_hash == "xxh128:385a8521cbadad2536b2e7950c394f80"
    assert (info.hash_algorithm, info.hash_value, info.sha256) == ("xxh128", "385a8521cbadad2536b2e7950c394f80", None)
    assert "micro-sam" in info.source
    assert info.licence
    assert info.preprocessing == "micro_sam"
    assert models.resolve_name("HVIT_T_CELLS") is info
    assert models.resolve_name("micro_sam_cells") is info
    # The variant's short name still names Meta's file, never the fine-tuned one.
    assert models.resolve_name("sam2.1_hiera_t").name == "sam2.1_hiera_tiny"
    for official in models.MODELS.values():
        if official.name != NAME:
            assert official.source == "Meta AI (facebookresearch/sam2)" and official.licence == "Apache-2.0"
            assert official.preprocessing == "sam2"


def test_the_profile_follows_the_model_name():
    assert preprocessing_for(NAME) is MICRO_SAM
    assert preprocessing_for("sam2.1_hiera_tiny") is SAM2_DEFAULT
    assert preprocessing_for(NAME, preprocessing="sam2") is SAM2_DEFAULT
    assert preprocessing_for(object()) is SAM2_DEFAULT  # a loaded model: SAM2's unless told
    assert preprocessing_for("some/file.pt", preprocessing=MICRO_SAM) is MICRO_SAM
    with pytest.raises(InputError, match="micro_sam"):
        preprocessing_for(NAME, preprocessing="cellpose")


def test_a_checkpoint_file_named_like_the_model_uses_sam2s_profile(tmp_path):
    file = tmp_path / f"{NAME}.pt"
    file.write_bytes(b"x")
    assert preprocessing_for(str(file)) is SAM2_DEFAULT


# ---------------------------------------------------------------- downloads checked with xxh128


def test_xxh128_download_is_checked_and_stamped(add_model, isolated_cache):
    info = add_model("good.pt", sha256=f"xxh128:{xxh128(PAYLOAD)}")
    assert info.hash_algorithm == "xxh128"
    path = models.download("test_model")
    assert path.read_bytes() == PAYLOAD
    assert (isolated_cache / "test_model.pt.xxh128").is_file()
    assert models.model_path("test_model", download=False) == path


def test_xxh128_mismatch_errors_and_keeps_nothing(add_model, isolated_cache):
    add_model("corrupt.pt", sha256=f"xxh128:{xxh128(PAYLOAD)}")
    with pytest.raises(CheckpointError, match="corrupt"):
        models.download("test_model")
    assert not (isolated_cache / "test_model.pt").exists()
    assert [p.name for p in isolated_cache.iterdir() if p.name.endswith(".part")] == []


def test_corrupt_cached_file_with_xxh128_is_reported(add_model, isolated_cache):
    add_model("good.pt", sha256=f"xxh128:{xxh128(PAYLOAD)}")
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "test_model.pt").write_bytes(PAYLOAD[:1000])
    with pytest.raises(CheckpointError, match="xxh128.*--force"):
        models.model_path("test_model")
    assert models.download("test_model", force=True).read_bytes() == PAYLOAD


def test_an_unknown_hash_algorithm_is_refused_before_downloading(add_model, server):
    add_model("good.pt", sha256="nohash:1234")
    with pytest.raises(CheckpointError, match="nohash"):
        models.download("test_model")
    assert server.requests == []


@pytest.fixture(scope="module")
def micro_sam_checkpoint_bytes(synthetic_checkpoint):
    """A synthetic SAM2.1 tiny in micro-sam's layout: {"model": state_dict, "model_type": "hvit_t"}."""
    state = torch.load(synthetic_checkpoint("sam2.1_hiera_t", 0), map_location="cpu", weights_only=True)["model"]
    buffer = io.BytesIO()
    torch.save({"model": state, "model_type": "hvit_t"}, buffer)
    return buffer.getvalue()


def test_hvit_t_cells_downloads_checks_its_hash_and_loads_as_sam2_1_tiny(micro_sam_checkpoint_bytes, monkeypatch):
    monkeypatch.delenv("NAPARI_SAM2_BASE_URL")
    with CheckpointServer(payload=micro_sam_checkpoint_bytes) as local:
        entry = dataclasses.replace(
            models.MODELS[NAME], url=local.url("good.pt"), known_hash=f"xxh128:{xxh128(micro_sam_checkpoint_bytes)}"
        )
        monkeypatch.setitem(models.MODELS, NAME, entry)
        clear_model_cache()
        try:
            model = get_model(NAME, device="cpu")
            assert model.config.name == entry.config_name == "sam2.1_hiera_t"
        finally:
            clear_model_cache()
    assert models.cached_path(NAME).read_bytes() == micro_sam_checkpoint_bytes


# ---------------------------------------------------------------- the preprocessing profile


def test_profiles_are_frozen_and_checked():
    assert SAM2_DEFAULT.intensity_percentiles == (0.5, 99.5) and SAM2_DEFAULT.resize == "stretch"
    assert MICRO_SAM.intensity_percentiles == (2.0, 98.0) and MICRO_SAM.resize == "longest_side_pad"
    with pytest.raises(dataclasses.FrozenInstanceError):
        MICRO_SAM.resize = "stretch"
    with pytest.raises(ValueError):
        Preprocessing("bad", (98, 2))
    with pytest.raises(ValueError):
        Preprocessing("bad", resize="crop")
    assert MICRO_SAM.model_frame_size((100, 300)) == (300, 300)
    assert SAM2_DEFAULT.model_frame_size((100, 300)) == (100, 300)


def test_micro_sam_intensities_are_the_2_and_98_percentiles_per_channel():
    rng = np.random.default_rng(0)
    data = np.stack([rng.integers(0, 1000, (40, 50)), rng.gamma(2.0, 300.0, (40, 50))], axis=-1)[None]
    frames = StackFrames(data, channel_axis=3, image_size=64, prefetch=0, preprocessing="micro_sam")
    expected = [np.percentile(data[0, ..., c], (2, 98)) for c in range(2)]
    np.testing.assert_allclose(frames.intensity_ranges, expected)
    default = StackFrames(data, channel_axis=3, image_size=64, prefetch=0)
    np.testing.assert_allclose(default.intensity_ranges, [np.percentile(data[0, ..., c], (0.5, 99.5)) for c in range(2)])
    # A range the user gives wins over the profile's percentiles.
    given = StackFrames(data, channel_axis=3, image_size=64, prefetch=0, preprocessing="micro_sam",
                        intensity_range=(0, 10))
    np.testing.assert_array_equal(given.intensity_ranges, [[0, 10], [0, 10]])


def test_longest_side_pad_puts_the_frame_top_left_and_pads_with_zeros_before_normalising():
    rgb = torch.rand(3, 100, 300)
    square = pad_to_square(rgb)
    assert square.shape == (3, 300, 300)
    assert torch.equal(square[:, :100], rgb) and not square[:, 100:].any()
    assert pad_to_square(torch.rand(3, 50, 50)).shape == (3, 50, 50)
    x = longest_side_pad_input(rgb, 256)
    assert x.shape == (3, 256, 256)
    pad_value = (-torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))[:, None, None]
    # 100 of 300 rows are the frame: 85.3 of 256 model rows; below row 87 the antialiased resize sees padding only.
    torch.testing.assert_close(x[:, 87:], pad_value.expand(3, 256 - 87, 256))
    assert not torch.allclose(x[:, :80], pad_value.expand(3, 80, 256))
    # A square frame is not padded: the same input as SAM2's.
    square_rgb = torch.rand(3, 128, 128)
    torch.testing.assert_close(longest_side_pad_input(square_rgb, 64), model_input(square_rgb, 64))


def test_stack_frames_give_padded_inputs_and_the_size_the_model_sees():
    data = np.random.default_rng(1).random((2, 100, 300)).astype(np.float32)
    frames = StackFrames(data, image_size=256, prefetch=0, preprocessing="micro_sam")
    assert frames.original_size == (100, 300)
    assert frames.model_frame_size == (300, 300)
    x = frames[0]
    assert x.shape == (3, 256, 256)
    pad_value = (-torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))[:, None, None]
    torch.testing.assert_close(x[:, 87:], pad_value.expand(3, 256 - 87, 256))
    stretched = StackFrames(data, image_size=256, prefetch=0)
    assert stretched.model_frame_size == (100, 300)
    assert not torch.allclose(stretched[0][:, 87:], pad_value.expand(3, 256 - 87, 256))
    with pytest.raises(InputError, match="preprocessing"):
        StackFrames(data, image_size=256, prefetch=0, preprocessing="nope")


# ---------------------------------------------------------------- masks: cropped back, clicks in place


@pytest.fixture(scope="module")
def wide_and_padded(small_stack):
    """small_stack (96 x 128 frames) with a fixed intensity range, and the same frames padded by hand to 128 x 128
    with the range's low value (0 after normalisation, as micro-sam's padding)."""
    low, high = float(small_stack.min()), float(np.percentile(small_stack, 99.5))
    padded = np.full((len(small_stack), 128, 128), low, dtype=small_stack.dtype)
    padded[:, :96, :128] = small_stack
    return small_stack, padded, (low, high)


def test_a_padded_frame_is_the_same_model_input_as_a_square_image_padded_by_hand(wide_and_padded):
    wide, padded, limits = wide_and_padded
    by_profile = StackFrames(wide, image_size=256, prefetch=0, intensity_range=limits, preprocessing="micro_sam")
    by_hand = StackFrames(padded, image_size=256, prefetch=0, intensity_range=limits)
    torch.testing.assert_close(by_profile[2], by_hand[2])


def test_clicks_land_where_they_do_on_the_square_image_and_masks_come_back_at_the_frame_size(
    wide_and_padded, fast_model
):
    from sam2_clicks import confident_clicks

    wide, padded, limits = wide_and_padded
    # Clicks inside the 96 x 128 frame; near its bottom edge, where a shift by the padding would show most.
    candidates = [(row, col) for row in (88, 80, 72) for col in range(8, 124, 8)]
    clicks = confident_clicks(fast_model, padded, 2, n=1, candidates=candidates)
    prompts = [Prompt(frame=2, obj_id=1, points=clicks)]

    square = segment_stack(padded, prompts, model=fast_model, device="cpu", intensity_range=limits)
    wide_labels = segment_stack(wide, prompts, model=fast_model, device="cpu", intensity_range=limits,
                                preprocessing="micro_sam")
    assert wide_labels.shape == (4, 96, 128)
    assert wide_labels[2].any()
    np.testing.assert_array_equal(wide_labels, square[:, :96, :128])

    image_prompts = [Prompt(frame=0, obj_id=1, points=clicks)]
    image_labels = segment_image(wide[2], image_prompts, model=fast_model, device="cpu", intensity_range=limits,
                                 preprocessing="micro_sam")
    square_image = segment_image(padded[2], image_prompts, model=fast_model, device="cpu", intensity_range=limits)
    assert image_labels.shape == (96, 128)
    assert image_labels.any()
    np.testing.assert_array_equal(image_labels, square_image[:96, :128])


def test_a_tracking_session_crops_to_a_wide_frame(fast_model):
    stack = np.random.default_rng(2).random((3, 100, 300)).astype(np.float32)
    with TrackingSession(stack, model=fast_model, device="cpu", preprocessing=MICRO_SAM, prefetch=0) as session:
        assert session.frames.preprocessing is MICRO_SAM
        assert session.frame_size == (100, 300)
        first = session.add_prompts([Prompt(frame=1, obj_id=1, points=[(50, 150)])])
        assert first[0].masks.shape == (1, 100, 300)
        results = list(session.propagate())
        assert results and all(result.masks.shape[1:] == (100, 300) for result in results)


# ---------------------------------------------------------------- listing


def test_models_list_shows_source_and_licence(capsys):
    assert cli.main(["models", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.split()[0] == NAME)
    assert lines[row].split()[1:3] == ["sam2.1_hiera_t", "38.9M"]
    info = models.MODELS[NAME]
    assert f"source: {info.source}" in lines[row + 1] and f"licence: {info.licence}" in lines[row + 1]
    assert "preprocessing: micro_sam" in lines[row + 1]
    assert "licence: Apache-2.0" in out and "Meta AI (facebookresearch/sam2)" in out
