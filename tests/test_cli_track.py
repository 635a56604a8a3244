"""`napari-sam2 track`: time-lapse TIFFs and their seeds in, one folder per time-lapse out (labels.tif, a CTC result
folder, GEFF, CSV), with segment's conventions: every input checked before the model loads (exit 2, nothing
written), a failing time-lapse costs only its own outputs (exit 1), outputs appear only when complete.

One test tracks for real on the fast model (random weights, 256 px) and compares with api.track_stack; the others
check the command's own logic with api.track_stack replaced by a recorder that returns that result.
"""

import csv

import numpy as np
import pytest
import tifffile
from conftest import one_error_line, run_cli

from napari_sam2 import api
from napari_sam2.io.tiff import read_tiff
from napari_sam2.io.tracking_samples import make_tracking_timelapse

IDS = {1: 3, 6: 12}  # cells of the sample -> the ids their seeds give them
N_FRAMES = 5


@pytest.fixture(scope="module")
def sample():
    """(image (T, Y, X) uint16, seeds of frame 0 (Y, X) int32 with ids 3 and 12)."""
    image, truth, _ = make_tracking_timelapse(shape=(16, 64, 80))
    seeds = np.zeros(truth.shape[1:], np.int32)
    for cell, obj_id in IDS.items():
        seeds[truth[0] == cell] = obj_id
    return image[:N_FRAMES], seeds


@pytest.fixture(scope="module")
def expected(sample, fast_model):
    image, seeds = sample
    return api.track_stack(image, model=fast_model, seed_labels=seeds)


def write_tyx(path, data):
    tifffile.imwrite(path, data, imagej=True, resolution=(2.0, 2.0), metadata={"axes": "TYX", "unit": "um"})
    return path


def track(args, capsys):
    return run_cli(["track", *args], capsys)


@pytest.fixture
def recorder(monkeypatch, expected):
    """api.track_stack replaced: records each call's arguments and returns the real result (or raises what the
    test puts in ``fail``, by call number)."""
    calls, fail = [], {}

    def track_stack(stack, prompts=None, **kwargs):
        calls.append(dict(stack=np.asarray(stack), prompts=prompts, **kwargs))
        if len(calls) in fail:
            raise fail[len(calls)]
        return expected

    monkeypatch.setattr(api, "track_stack", track_stack)
    return calls, fail


def names(folder):
    return sorted(path.name for path in folder.iterdir())


# ---- results -------------------------------------------------------------------------------------------------


def test_track_writes_labels_and_the_ctc_geff_csv_tracks(tmp_path, sample, expected, use_fast_model, capsys):
    image, seeds = sample
    source = write_tyx(tmp_path / "cells.tif", image)
    tifffile.imwrite(tmp_path / "seeds.tif", seeds.astype(np.uint16))
    results = tmp_path / "results"

    status, stdout, stderr = track([source, "--seed-labels", tmp_path / "seeds.tif", "--out", results,
                                    "--model", "some_model", "--device", "cpu"], capsys)

    assert status == 0, stderr
    folder = results / "cells"
    assert stdout.split() == [str(folder)]
    assert use_fast_model == [("some_model", "cpu")]
    assert "cells.tif  [" in stderr and "frames 100%" in stderr  # progress on stderr
    assert names(results) == ["cells"]  # no temporary folder left
    assert names(folder) == ["RES", "flags.csv", "labels.tif", "tracks.csv", "tracks.geff"]

    labels = read_tiff(folder / "labels.tif")
    assert labels.axes == "TYX" and labels.pixel_sizes == pytest.approx({"Y": 0.5, "X": 0.5})
    np.testing.assert_array_equal(labels.data, expected.labels)
    for obj_id in IDS.values():  # the seeds are their objects' masks on their frame
        ours, seed = labels.data[0] == obj_id, seeds == obj_id
        assert (ours & seed).sum() / (ours | seed).sum() > 0.95
    assert set(np.unique(labels.data)) - {0} >= set(IDS.values())

    masks = sorted(path.name for path in (folder / "RES").glob("mask*.tif"))
    assert masks == [f"mask{t:03d}.tif" for t in range(N_FRAMES)]
    lines = (folder / "RES" / "res_track.txt").read_text().splitlines()
    tracks = [tuple(int(value) for value in line.split()) for line in lines]
    assert tracks and all(len(track) == 4 for track in tracks)
    assert {track_id for track_id, *_ in tracks} == set(np.unique(tifffile.imread(folder / "RES" / "mask000.tif"))) - {0}
    with open(folder / "tracks.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["track_id", "t", "y", "x", "label", "parent_track_id"]
    assert {int(row["label"]) for row in rows} == set(np.unique(expected.labels)) - {0}
    assert (folder / "flags.csv").read_text().startswith("frame,track_id,label,kind,value,text")
    assert (folder / "tracks.geff").is_dir()


def test_formats_limit_the_outputs_and_overwrite_replaces_an_earlier_run(tmp_path, sample, recorder,
                                                                         use_fast_model, capsys):
    image, seeds = sample
    source = write_tyx(tmp_path / "cells.tif", image)
    tifffile.imwrite(tmp_path / "seeds.tif", seeds)
    args = [source, "--seed-labels", tmp_path / "seeds.tif", "--out", tmp_path / "out", "--quiet"]

    status, _, stderr = track([*args, "--formats", "ctc"], capsys)
    assert status == 0 and stderr == ""
    folder = tmp_path / "out" / "cells"
    assert names(folder) == ["RES", "labels.tif"]
    assert len(list((folder / "RES").glob("mask*.tif"))) == N_FRAMES

    status, stdout, stderr = track([*args, "--formats", "csv"], capsys)
    assert status == 2 and stdout == ""
    assert "already exist" in one_error_line(stderr) and "--overwrite" in one_error_line(stderr)
    assert len(recorder[0]) == 1  # refused before any tracking

    status, _, stderr = track([*args, "--formats", "csv,ctc", "--overwrite"], capsys)
    assert status == 0, stderr
    assert names(folder) == ["RES", "flags.csv", "labels.tif", "tracks.csv"]
    status, _, stderr = track([*args, "--formats", "csv", "--overwrite"], capsys)
    assert status == 0, stderr
    assert names(folder) == ["flags.csv", "labels.tif", "tracks.csv"]  # the earlier run's RES is not left over
    assert names(tmp_path / "out") == ["cells"]


def test_the_options_reach_track_stack(tmp_path, sample, recorder, use_fast_model, capsys):
    image, seeds = sample
    calls, _ = recorder
    source = write_tyx(tmp_path / "cells.tif", image)
    whole = np.zeros(image.shape, np.uint16)
    whole[2] = seeds  # the whole time-lapse's labels: frame 2 is taken
    tifffile.imwrite(tmp_path / "cells_seeds.tif", whole, imagej=True, metadata={"axes": "TYX"})
    (tmp_path / "cells.csv").write_text("index,axis-0,axis-1,axis-2,positive,obj_id\n0,3,20,30,True,40\n")

    # The glob matches the seed file too: it is not a time-lapse.
    status, stdout, stderr = track(
        [tmp_path / "*.tif", "--seed-labels", "{dir}/{stem}_seeds.tif", "--prompts", "{dir}/{stem}.csv", "--seed", "auto",
         "--points-per-side", 4, "--pred-iou-thresh", 0.5, "--min-mask-region-area", 20, "--seed-frame", 2, "--no-divisions", "--out", str(tmp_path / "{stem}_tracks"),
         "--formats", "csv", "--quiet"], capsys)

    assert status == 0, stderr
    assert stdout.split() == [str(tmp_path / "cells_tracks")]
    call = calls[-1]
    np.testing.assert_array_equal(call["stack"], image)
    np.testing.assert_array_equal(call["seed_labels"], seeds)
    assert [(p.frame, p.obj_id, p.points) for p in call["prompts"]] == [(3, 40, ((20.0, 30.0),))]
    assert call["seed"] == "auto"
    assert call["auto_options"] == {"points_per_side": 4, "pred_iou_thresh": 0.5, "min_mask_region_area": 20}
    assert call["seed_frame"] == 2 and call["divisions"] is False and call["axis"] == 0

    # Without any seed source, the prompts beside the stack are taken; the division setting is passed on.
    status, _, stderr = track([source, "--out", tmp_path / "other", "--min-division-frames", 5, "--formats", "csv",
                               "--quiet"], capsys)
    assert status == 0, stderr
    call = calls[-1]
    assert [p.obj_id for p in call["prompts"]] == [40] and "seed_labels" not in call and "seed" not in call
    assert call["divisions"] is True and call["min_division_frames"] == 5 and call["seed_frame"] == 0


def test_labels_keep_the_stack_axis_order(tmp_path, sample, expected, recorder, use_fast_model, capsys):
    image, seeds = sample
    calls, _ = recorder
    tifffile.imwrite(tmp_path / "ytx.tif", np.moveaxis(image, 0, 1), metadata={"axes": "YTX"})
    tifffile.imwrite(tmp_path / "seeds.tif", seeds)

    status, _, stderr = track([tmp_path / "ytx.tif", "--axis", "t", "--seed-labels", tmp_path / "seeds.tif",
                               "--out", tmp_path, "--formats", "ctc", "--quiet"], capsys)

    assert status == 0, stderr
    assert calls[-1]["axis"] == 1
    written = read_tiff(tmp_path / "ytx" / "labels.tif")
    assert written.axes == "YTX"
    np.testing.assert_array_equal(written.data, np.moveaxis(expected.labels, 0, 1))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "ytx" / "RES" / "mask001.tif") > 0, expected.labels[1] > 0)


def test_a_failing_time_lapse_exits_1_and_the_others_are_written(tmp_path, sample, recorder, use_fast_model, capsys):
    image, seeds = sample
    _, fail = recorder
    fail[1] = RuntimeError("boom")
    for name in ("a", "b"):
        write_tyx(tmp_path / f"{name}.tif", image)
    tifffile.imwrite(tmp_path / "seeds.tif", seeds)
    results = tmp_path / "results"

    status, stdout, stderr = track([tmp_path / "a.tif", tmp_path / "b.tif", "--seed-labels", tmp_path / "seeds.tif",
                                    "--seed-labels", tmp_path / "seeds.tif", "--out", results], capsys)

    assert status == 1, stderr
    line = one_error_line(stderr)
    assert line.startswith(f"napari-sam2: error: {tmp_path / 'a.tif'}: ") and "RuntimeError: boom" in line
    assert "1 of 2 time-lapse(s) failed; the others were written" in stderr
    assert stdout.split() == [str(results / "b")]
    assert names(results) == ["b"]  # nothing of a's, and no temporary folder
    assert names(results / "b") == ["RES", "flags.csv", "labels.tif", "tracks.csv", "tracks.geff"]


def test_automatic_seeds_run_on_the_model(tmp_path, sample, use_fast_model, capsys):
    """--seed auto reaches SAM2's automatic mask generator, with its thresholds and a progress bar of its own; with
    no filtering (thresholds 0) the random-weight model's masks seed objects, which are then tracked."""
    image, _ = sample
    source = write_tyx(tmp_path / "cells.tif", image[:3])

    status, stdout, stderr = track([source, "--seed", "auto", "--points-per-side", 4, "--pred-iou-thresh", 0,
                                    "--stability-score-thresh", 0, "--out", tmp_path / "out"], capsys)

    assert status == 0, stderr
    assert stdout.split() == [str(tmp_path / "out" / "cells")]
    assert "cells.tif: finding cells" in stderr and "batches" in stderr
    assert read_tiff(tmp_path / "out" / "cells" / "labels.tif").data[0].any()


# ---- bad input: exit 2, one clear line, nothing written, no model loaded ---------------------------------------


@pytest.mark.parametrize(
    "case, message",
    [
        ("no seed source", "Nothing to track in"),
        ("further axes", "track follows 2D cells through time"),
        ("points per side without auto", "--points-per-side sets SAM2's automatic seeding"),
        ("threshold without auto", "--stability-score-thresh sets SAM2's automatic seeding"),
        ("seed frame without seeds", "--seed-frame says which frame"),
        ("min division frames without divisions", "leave out --no-divisions"),
        ("unknown format", "choose one or more of ctc, geff, csv"),
        ("seed frame outside", "--seed-frame 5 is not a frame of"),
        ("bad seed labels", "the seed labels have shape"),
        ("existing output", "already exist"),
        ("two stacks one folder", "would both be written to"),
        ("missing stack", "no such file"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, sample, no_model, capsys, case, message):
    image, seeds = sample
    source = write_tyx(tmp_path / "s.tif", image)
    seed_file = tmp_path / "seeds.tif"
    tifffile.imwrite(seed_file, seeds)
    args = [source, "--seed-labels", seed_file, "--out", tmp_path / "out"]
    if case == "no seed source":
        args[1:3] = []
    elif case == "further axes":
        tifffile.imwrite(source, np.stack([image, image], axis=1), imagej=True, metadata={"axes": "TZYX"})
    elif case == "points per side without auto":
        args += ["--points-per-side", 8]
    elif case == "threshold without auto":
        args += ["--stability-score-thresh", 0.9]
    elif case == "seed frame without seeds":
        args[1:3] = ["--prompts", tmp_path / "p.csv"]
        (tmp_path / "p.csv").write_text("index,axis-0,axis-1,axis-2,positive,obj_id\n0,1,40,50,True,1\n")
        args += ["--seed-frame", 1]
    elif case == "min division frames without divisions":
        args += ["--no-divisions", "--min-division-frames", 4]
    elif case == "unknown format":
        args += ["--formats", "ctc,xml"]
    elif case == "seed frame outside":
        args += ["--seed-frame", N_FRAMES]
    elif case == "bad seed labels":
        tifffile.imwrite(seed_file, seeds[:, :40])
    elif case == "existing output":
        (tmp_path / "out" / "s").mkdir(parents=True)
        (tmp_path / "out" / "s" / "tracks.csv").write_text("precious")
    elif case == "two stacks one folder":
        write_tyx(tmp_path / "t.tif", image)
        args[1:1] = [tmp_path / "t.tif", "--seed-labels", seed_file]
        args[-1] = str(tmp_path / "{dir}")
    elif case == "missing stack":
        args[0] = tmp_path / "nope.tif"
    before = sorted(str(path) for path in tmp_path.rglob("*"))

    status, stdout, stderr = track(args, capsys)

    assert status == 2, stderr
    assert message in one_error_line(stderr)
    assert stdout == ""
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before


def test_usage_errors_exit_2(tmp_path, capsys):
    from napari_sam2.cli import commands as cli

    assert cli.main(["track", "x.tif"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err
    assert cli.main(["track", "x.tif", "--out", str(tmp_path), "--seed", "everything"]) == 2
    assert cli.main(["track", "x.tif", "--out", str(tmp_path), "--min-division-frames", "0"]) == 2
    assert cli.main(["track", "x.tif", "--out", str(tmp_path), "--seed", "auto", "--pred-iou-thresh", "1.5"]) == 2
    assert "expected a number from 0 to 1" in capsys.readouterr().err
