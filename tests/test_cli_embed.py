"""`napari-sam2 embed`: every frame's image features stored on disk, resumably, so that `segment` (and the widget)
later skip the image encoder and give the same labels.

The command runs in-process on the fast model (random weights, 256 px). Each test stores its features in a folder
of its own (NAPARI_SAM2_FEATURES); the process-wide in-memory cache is cleared where a test must show that features
come from disk (a new process has an empty one).
"""

import shutil

import numpy as np
import pytest
import tifffile
from conftest import SMALL_STACK_FRAME, clear_feature_memory, one_error_line, run_cli

from napari_sam2.api import Prompt, segment_stack
from napari_sam2.cli import commands as cli
from napari_sam2.core.feature_store import shared_feature_cache
from napari_sam2.core.tensor_store import ZarrTensorStore
from napari_sam2.io.tiff import read_tiff

FRAME = SMALL_STACK_FRAME


def write_zyx(path, stack):
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZYX"})
    assert read_tiff(path).axes == "ZYX"
    return path


def entry_folder(folder, key):
    return folder / f"{key}.zarr"


# ---- storing, resuming ---------------------------------------------------------------------------------------------


def test_embed_stores_one_entry_per_frame_and_resumes(tmp_path, features, small_stack, use_fast_model, encoder_calls,
                                                      capsys):
    source = write_zyx(tmp_path / "stack.tif", small_stack)
    n_frames = small_stack.shape[0]
    clear_feature_memory()

    status, stdout, stderr = run_cli(["embed", source, "--model", "some_model", "--device", "cpu"], capsys)

    assert status == 0, stderr
    assert use_fast_model == [("some_model", "cpu")]
    store = ZarrTensorStore(features)
    keys = store.keys()
    assert len(keys) == n_frames, keys  # one entry per frame, all different
    assert len(encoder_calls) == n_frames
    assert f"{n_frames}/{n_frames} frames 100%" in stderr and str(features) in stderr  # progress, and where
    assert stdout == ""
    assert not [p.name for p in features.iterdir() if p.name.startswith(".tmp-")]  # no half-written entry left

    # Again (a new process: nothing in memory): everything is on disk, nothing is computed.
    clear_feature_memory()
    status, _, stderr = run_cli(["embed", source, "--quiet"], capsys)
    assert status == 0, stderr
    assert stderr == ""  # --quiet
    assert len(encoder_calls) == n_frames, "a second embed ran the image encoder again"
    assert store.keys() == keys

    # An interrupted run lost one frame: the next run computes exactly that one.
    lost = keys[1]
    shutil.rmtree(entry_folder(features, lost))
    assert lost not in store and len(store.keys()) == n_frames - 1
    clear_feature_memory()
    status, _, stderr = run_cli(["embed", source, "--quiet"], capsys)
    assert status == 0, stderr
    assert len(encoder_calls) == n_frames + 1, "resuming must compute exactly the missing frame"
    assert store.keys() == keys


def test_segment_after_embed_gives_the_same_labels_without_the_encoder(tmp_path, monkeypatch, features, small_stack,
                                                                        small_stack_clicks, fast_model, use_fast_model,
                                                                        encoder_calls, capsys):
    (r1, c1), (r2, c2) = small_stack_clicks
    prompts = [Prompt(FRAME, 1, [(r1, c1), (90, 2)], [1, 0]), Prompt(FRAME, 2, [(r2, c2)], [1])]
    source = write_zyx(tmp_path / "stack.tif", small_stack)
    points = [(p, row, col, label) for p in prompts for (row, col), label in zip(p.points, p.labels)]
    rows = [f"{i},{p.frame},{row},{col},{bool(label)},{p.obj_id}" for i, (p, row, col, label) in enumerate(points)]
    csv = tmp_path / "stack.csv"  # as napari's Points layer saves it
    csv.write_text("index,axis-0,axis-1,axis-2,positive,obj_id\n" + "\n".join(rows) + "\n")

    # Without any stored features: the API, then the command (nothing in memory, the store empty and left so).
    empty = tmp_path / "no_features"
    monkeypatch.setenv("NAPARI_SAM2_FEATURES", str(empty))
    clear_feature_memory()
    expected = segment_stack(small_stack, prompts, model=fast_model)
    assert set(np.unique(expected)) == {0, 1, 2}
    clear_feature_memory()
    before = len(encoder_calls)
    status, _, stderr = run_cli(["segment", source, "--prompts", csv, "--out", tmp_path / "plain.tif", "--quiet"], capsys)
    assert status == 0, stderr
    assert len(encoder_calls) - before >= small_stack.shape[0]  # every frame was encoded
    plain = read_tiff(tmp_path / "plain.tif").data
    np.testing.assert_array_equal(plain, expected)
    assert ZarrTensorStore(empty).keys() == []  # segmenting stores nothing on disk

    # Embed, then segment in a "new process" (memory cleared): the features come from disk.
    monkeypatch.setenv("NAPARI_SAM2_FEATURES", str(features))
    clear_feature_memory()
    status, _, stderr = run_cli(["embed", source, "--quiet"], capsys)
    assert status == 0, stderr
    assert len(ZarrTensorStore(features).keys()) == small_stack.shape[0]
    clear_feature_memory()
    before = len(encoder_calls)
    status, _, stderr = run_cli(["segment", source, "--prompts", csv, "--out", tmp_path / "cached.tif", "--quiet"], capsys)
    assert status == 0, stderr
    assert len(encoder_calls) == before, "segment ran the image encoder on frames whose features are stored"
    assert shared_feature_cache().store_hits >= small_stack.shape[0]
    cached = read_tiff(tmp_path / "cached.tif")
    assert cached.axes == "ZYX"
    np.testing.assert_array_equal(cached.data, plain)


def test_the_disk_bound_makes_room_and_refuses_a_stack_that_cannot_fit(tmp_path, monkeypatch, features, small_stack,
                                                                      use_fast_model, capsys):
    first = write_zyx(tmp_path / "first.tif", small_stack)
    second = write_zyx(tmp_path / "second.tif", small_stack[:, :, ::-1].copy())  # other frames, other keys
    n_frames = small_stack.shape[0]
    clear_feature_memory()
    assert run_cli(["embed", first, "--quiet"], capsys)[0] == 0
    frame_gib = ZarrTensorStore(features).disk_bytes() / n_frames / 2**30

    # Room for one stack and a half: the second stack's frames push out the first's least recently used ones.
    monkeypatch.setenv("NAPARI_SAM2_FEATURES_MAX_GB", f"{1.5 * n_frames * frame_gib:.9f}")
    status, _, stderr = run_cli(["embed", second], capsys)
    assert status == 0, stderr
    kept = ZarrTensorStore(features)
    assert len(kept.keys()) < 2 * n_frames and kept.disk_bytes() <= 1.5 * n_frames * frame_gib * 2**30
    assert "frames' features stored earlier were removed" in stderr and "NAPARI_SAM2_FEATURES_MAX_GB" in stderr
    assert "GiB of at most" in stderr

    # Room for less than one stack: refused before anything is written, with what to do.
    shutil.rmtree(features)
    monkeypatch.setenv("NAPARI_SAM2_FEATURES_MAX_GB", f"{0.5 * n_frames * frame_gib:.9f}")
    clear_feature_memory()
    status, _, stderr = run_cli(["embed", first, "--quiet"], capsys)
    assert status == 1
    assert "NAPARI_SAM2_FEATURES_MAX_GB" in one_error_line(stderr)
    assert ZarrTensorStore(features).keys() == []


def test_a_4d_stack_stores_every_position_of_the_further_axis(tmp_path, features, small_stack, use_fast_model,
                                                              encoder_calls, capsys):
    # (t, z, y, x): two time points with different pictures (features are keyed by content: equal frames share one).
    data = np.stack([small_stack, np.ascontiguousarray(small_stack[..., ::-1])])
    source = tmp_path / "tzyx.tif"
    tifffile.imwrite(source, data, imagej=True, metadata={"axes": "TZYX"})
    assert read_tiff(source).axes == "TZYX"
    n_t, n_z = data.shape[:2]
    clear_feature_memory()

    status, _, stderr = run_cli(["embed", source, "--axis", "z"], capsys)

    assert status == 0, stderr
    assert len(ZarrTensorStore(features).keys()) == n_t * n_z
    assert len(encoder_calls) == n_t * n_z
    assert f"{n_t * n_z}/{n_t * n_z} frames 100%" in stderr


# ---- bad input: exit 2, one line, no model loaded, nothing stored ----------------------------------------------------


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown axis", "no t axis"),
        ("unknown axis letter", "no q axis"),
        ("axis index out of range", "--axis 5 is not an axis"),
        ("missing file", "no such file"),
        ("folder", "is a folder"),
        ("one bad stack among good ones", "no such file"),
    ],
)
def test_bad_input_exits_2_before_loading_a_model(tmp_path, features, small_stack, no_model, capsys, case, message):
    source = write_zyx(tmp_path / "stack.tif", small_stack)
    if case == "unknown axis":
        args = [source, "--axis", "t"]
    elif case == "unknown axis letter":
        args = [source, "--axis", "q"]
    elif case == "axis index out of range":
        args = [source, "--axis", "5"]
    elif case == "missing file":
        args = [tmp_path / "nope.tif"]
    elif case == "folder":
        args = [tmp_path]
    else:
        args = [source, tmp_path / "nope.tif"]

    status, stdout, stderr = run_cli(["embed", *args], capsys)

    assert status == 2, stderr
    line = one_error_line(stderr)
    assert message in line, line
    assert stdout == ""
    assert not features.exists() or not any(features.iterdir())


def test_help_explains_the_cache_and_resuming(capsys):
    assert cli.main(["embed", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split()).lower()
    assert "usage: napari-sam2 embed" in text
    assert "cache" in text
    assert "resume" in text
    assert "--model" in text and "--axis" in text
    assert cli.main(["--help"]) == 0
    assert "embed" in capsys.readouterr().out
