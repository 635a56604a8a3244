"""`napari-sam2 segment`: TIFF stacks and napari Points CSVs in, label TIFFs out, equal to segment_stack.

Most tests run the command in-process on the fast model (random weights, 256 px); one runs the installed console
script end to end on a real-size model.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from napari_builtins.io._write import napari_write_points

from napari_sam2 import cli
from napari_sam2.sample_data import make_nuclei_stack
from napari_sam2.api import Prompt, segment_stack
from napari_sam2.engine import load_model
from napari_sam2.file_segmentation import FileJob, prepare_stack
from napari_sam2.tiff_io import read_tiff, write_labels_tiff
from conftest import SMALL_STACK_FRAME
from sam2_clicks import confident_clicks

FRAME = SMALL_STACK_FRAME


@pytest.fixture(scope="module")
def stack(small_stack):
    return small_stack


@pytest.fixture(scope="module")
def prompts(small_stack_clicks):
    """Object 1: a positive click and a negative one far from it; object 2: one click."""
    (r1, c1), (r2, c2) = small_stack_clicks
    return [Prompt(FRAME, 1, [(r1, c1), (90, 2)], [1, 0]), Prompt(FRAME, 2, [(r2, c2)], [1])]


@pytest.fixture(scope="module")
def expected(stack, prompts, fast_model):
    return segment_stack(stack, prompts, model=fast_model)


@pytest.fixture
def use_fast_model(monkeypatch, fast_model):
    """The command loads the fast model whatever --model says (and records what it was asked for)."""
    asked = []

    def load(name_or_path, device, quiet):
        asked.append((name_or_path, device))
        return fast_model

    monkeypatch.setattr(cli, "_load_model", load)
    return asked


@pytest.fixture
def no_model(monkeypatch):
    """Bad input must be refused before any model is loaded."""

    def load(*args):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr(cli, "_load_model", load)


def save_points_csv(path, prompts, to_coordinates):
    """Write prompts the way napari's Points layer "Save" writes them (napari's own writer, our widget's features).

    ``to_coordinates(frame, row, col)`` gives a point's coordinates over the layer's axes."""
    data, positive, obj_ids = [], [], []
    for prompt in prompts:
        for (row, col), label in zip(prompt.points, prompt.labels):
            data.append(to_coordinates(prompt.frame, row, col))
            positive.append(bool(label))
            obj_ids.append(prompt.obj_id)
    features = pd.DataFrame({"positive": positive, "obj_id": obj_ids})
    written = napari_write_points(str(path), np.asarray(data, float), {"properties": {k: v.to_numpy() for k, v in features.items()}})
    assert written == str(path)
    return path


def zyx(frame, row, col):
    return (frame, row, col)


def run(args, capsys):
    status = cli.main(["segment", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("napari-sam2: error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# ---- results --------------------------------------------------------------------------------------------------


def test_labels_equal_segment_stack_and_keep_axes_and_pixel_sizes(tmp_path, stack, prompts, expected, use_fast_model, capsys):
    source = tmp_path / "nuclei.tif"
    tifffile.imwrite(source, stack, imagej=True, resolution=(1 / 0.25, 1 / 0.25), metadata={"axes": "ZYX", "spacing": 1.5, "unit": "um"})
    csv = save_points_csv(tmp_path / "nuclei.csv", prompts, zyx)
    out = tmp_path / "labels.tif"

    status, stdout, stderr = run([source, "--prompts", csv, "--out", out, "--model", "some_model", "--device", "cpu"], capsys)

    assert status == 0, stderr
    assert stdout.strip() == str(out)
    assert use_fast_model == [("some_model", "cpu")]
    written = read_tiff(out)
    assert written.axes == "ZYX" and written.data.dtype == np.uint16
    assert written.pixel_sizes == pytest.approx({"Z": 1.5, "Y": 0.25, "X": 0.25})
    assert set(np.unique(expected)) == {0, 1, 2}
    np.testing.assert_array_equal(written.data, expected)
    assert "nuclei.tif  [" in stderr and "4/4 frames 100%" in stderr  # progress on stderr


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int16])
def test_any_dtype_gives_what_segment_stack_gives(tmp_path, stack, prompts, fast_model, use_fast_model, dtype, capsys):
    data = (stack // 256).astype(dtype) if dtype == np.uint8 else stack.astype(dtype)
    source = tmp_path / "stack.tif"
    # A plain TIFF: tifffile stores 3 or 4 slices as a planar RGB(A) image ("SYX"), more as "QYX".
    tifffile.imwrite(source, data)
    csv = save_points_csv(tmp_path / "stack.csv", prompts, zyx)

    status, _, stderr = run([source, "--prompts", csv, "--axis", "z", "--quiet"], capsys)

    assert status == 0, stderr
    assert stderr == ""  # --quiet
    written = read_tiff(tmp_path / "stack_labels.tif")  # the default output name
    np.testing.assert_array_equal(written.data, segment_stack(data, prompts, model=fast_model))


def test_axis_order_y_z_x_with_letter_columns_and_json(tmp_path, stack, prompts, expected, use_fast_model, capsys):
    data = np.moveaxis(stack, 0, 1)  # (y, z, x)
    source = tmp_path / "yzx.tif"
    tifffile.imwrite(source, data, metadata={"axes": "YZX"})
    assert read_tiff(source).axes == "YZX"
    rows = [(row, prompt.frame, col, label, prompt.obj_id) for prompt in prompts
            for (row, col), label in zip(prompt.points, prompt.labels)]
    pd.DataFrame(rows, columns=["y", "z", "x", "positive", "obj_id"]).to_csv(tmp_path / "letters.csv", index=False)
    entries = [dict(frame=p.frame, obj_id=p.obj_id, points=[list(pt) for pt in p.points], labels=list(p.labels)) for p in prompts]
    (tmp_path / "prompts.json").write_text(json.dumps({"prompts": entries}))

    for prompts_file, out in (("letters.csv", "from_csv.tif"), ("prompts.json", "from_json.tif")):
        status, _, stderr = run([source, "--prompts", tmp_path / prompts_file, "--out", tmp_path / out, "--quiet"], capsys)
        assert status == 0, stderr
        written = read_tiff(tmp_path / out)
        assert written.axes == "YZX"
        np.testing.assert_array_equal(written.data, np.moveaxis(expected, 0, 1))


def test_unnamed_axes_and_an_axis_index_as_for_segment_stack(tmp_path, stack, prompts, expected, use_fast_model, capsys):
    data = np.ascontiguousarray(np.moveaxis(stack, 0, 2))  # (y, x, z), saved plainly: tifffile guesses "QYX"
    source = tmp_path / "yxz.tif"
    tifffile.imwrite(source, data)
    save_points_csv(tmp_path / "yxz.csv", prompts, lambda frame, row, col: (row, col, frame))

    status, _, stderr = run([source, "--axis", "2", "--quiet"], capsys)  # prompts found beside the stack

    assert status == 0, stderr
    np.testing.assert_array_equal(read_tiff(tmp_path / "yxz_labels.tif").data, np.moveaxis(expected, 0, 2))


def test_4d_with_channels_tracks_along_z_at_each_prompted_time(tmp_path, stack, prompts, expected, fast_model, use_fast_model, capsys):
    # (t, z, c, y, x): two time points, two channels; the prompts are at t = 1 and the grey channel is channel 1.
    data = np.zeros((2, *stack.shape[:1], 2, *stack.shape[1:]), stack.dtype)
    data[:, :, 1] = stack
    data[:, :, 0] = stack[::-1]
    source = tmp_path / "tzcyx.tif"
    tifffile.imwrite(source, data, imagej=True, metadata={"axes": "TZCYX"})
    # A napari layer opened with one layer per channel has the axes t, z, y, x.
    csv = save_points_csv(tmp_path / "points.csv", prompts, lambda frame, row, col: (1, frame, row, col))

    status, _, stderr = run([source, "--prompts", csv, "--axis", "z", "--channels", "1", "--quiet"], capsys)

    assert status == 0, stderr
    written = read_tiff(tmp_path / "tzcyx_labels.tif")
    assert written.axes == "TZYX" and written.data.shape == (2, *stack.shape)
    assert not written.data[0].any()  # no prompt at t = 0
    reference = segment_stack(data, prompts, axis=1, channel_axis=2, channels=[1], fixed_indices={0: 1}, model=fast_model)
    np.testing.assert_array_equal(written.data[1], reference)
    np.testing.assert_array_equal(written.data[1], expected)  # channel 1 is the stack itself


def test_many_stacks_with_a_glob_and_templates(tmp_path, stack, prompts, expected, use_fast_model, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(folder / f"{name}.tif", stack, metadata={"axes": "ZYX"})
        save_points_csv(folder / f"{name}.csv", prompts, zyx)
    write_labels_tiff(folder / "a_labels.tif", np.zeros(stack.shape, np.uint16), "ZYX")  # an earlier run's output

    status, stdout, stderr = run(
        [folder / "*.tif", "--prompts", "{dir}/{stem}.csv", "--out", str(tmp_path / "results" / "{stem}_seg.tif")], capsys
    )

    assert status == 0, stderr
    outputs = [tmp_path / "results" / f"{name}_seg.tif" for name in ("a", "b")]  # the folder was made
    assert stdout.split() == [str(path) for path in outputs]
    for path in outputs:
        np.testing.assert_array_equal(read_tiff(path).data, expected)


def test_overwrite_replaces_an_existing_output(tmp_path, stack, prompts, expected, use_fast_model, capsys):
    tifffile.imwrite(tmp_path / "s.tif", stack)
    save_points_csv(tmp_path / "s.csv", prompts, zyx)
    (tmp_path / "s_labels.tif").write_bytes(b"precious")
    status, _, stderr = run([tmp_path / "s.tif", "--quiet"], capsys)
    assert status == 2 and "already exists" in one_error_line(stderr)
    assert (tmp_path / "s_labels.tif").read_bytes() == b"precious"

    status, _, stderr = run([tmp_path / "s.tif", "--quiet", "--overwrite"], capsys)
    assert status == 0, stderr
    np.testing.assert_array_equal(read_tiff(tmp_path / "s_labels.tif").data, expected)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


# ---- bad input: exit 2, one clear line, nothing written, no model loaded ---------------------------------------


def _bad_csv(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing stack", "no such file"),
        ("missing prompts", "does not exist"),
        ("no obj_id column", "no object id column"),
        ("no coordinate columns", "no coordinate columns"),
        ("too few axis columns", "2 coordinate columns"),
        ("frame outside", "outside the stack's 4 slices"),
        ("point outside", "lies outside the 96 x 128 image"),
        ("not a number", "is not a number"),
        ("bad polarity", "neither positive"),
        ("2D image", "single 2D image"),
        ("bad axis", "no t axis"),
        ("channels without channel axis", "no channel axis"),
        ("empty prompts", "holds no prompts"),
        ("not a tiff", "as a TIFF image"),
        ("output is input", "is one of the input stacks"),
        ("output under a file", "is a file, not a folder"),
        ("two stacks one output", "cannot all be written"),
        ("bad json", "not valid JSON"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, stack, no_model, capsys, case, message):
    source = tmp_path / "s.tif"
    tifffile.imwrite(source, stack, metadata={"axes": "ZYX"})
    good = "index,axis-0,axis-1,axis-2,positive,obj_id\n0,2.0,40.0,50.0,1.0,1.0\n"
    prompts = _bad_csv(tmp_path / "p.csv", good)
    args = [source, "--prompts", prompts, "--out", tmp_path / "out.tif"]
    if case == "missing stack":
        args[0] = tmp_path / "nope.tif"
    elif case == "missing prompts":
        args[2] = tmp_path / "nope.csv"
    elif case == "no obj_id column":
        _bad_csv(prompts, "index,axis-0,axis-1,axis-2,positive\n0,2,40,50,True\n")
    elif case == "no coordinate columns":
        _bad_csv(prompts, "index,a,b,c,positive,obj_id\n0,2,40,50,True,1\n")
    elif case == "too few axis columns":
        _bad_csv(prompts, "index,axis-0,axis-1,positive,obj_id\n0,40,50,True,1\n")
    elif case == "frame outside":
        _bad_csv(prompts, "index,axis-0,axis-1,axis-2,positive,obj_id\n0,7,40,50,True,1\n")
    elif case == "point outside":
        _bad_csv(prompts, "index,axis-0,axis-1,axis-2,positive,obj_id\n0,2,40,128.7,True,1\n")
    elif case == "not a number":
        _bad_csv(prompts, "index,axis-0,axis-1,axis-2,positive,obj_id\n0,2,forty,50,True,1\n")
    elif case == "bad polarity":
        _bad_csv(prompts, "index,axis-0,axis-1,axis-2,positive,obj_id\n0,2,40,50,maybe,1\n")
    elif case == "2D image":
        tifffile.imwrite(source, stack[0])
        _bad_csv(prompts, "index,axis-0,axis-1,positive,obj_id\n0,40,50,True,1\n")
    elif case == "bad axis":
        args += ["--axis", "t"]
    elif case == "channels without channel axis":
        args += ["--channels", "0"]
    elif case == "empty prompts":
        _bad_csv(prompts, "index,axis-0,axis-1,axis-2,positive,obj_id\n")
    elif case == "not a tiff":
        source.write_text("not an image")
    elif case == "output is input":
        args[4] = source
    elif case == "output under a file":
        args[4] = source / "labels.tif"
    elif case == "two stacks one output":
        other = tmp_path / "t.tif"
        tifffile.imwrite(other, stack)
        args.insert(1, other)
        args[2:2] = ["--prompts", prompts]
    elif case == "bad json":
        args[2] = tmp_path / "p.json"
        (tmp_path / "p.json").write_text("{oops")
    before = sorted(p.name for p in tmp_path.iterdir())

    status, stdout, stderr = run(args, capsys)

    assert status == 2
    assert message in one_error_line(stderr)
    assert stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_bad_stack_among_many_stops_everything_before_any_work(tmp_path, stack, no_model, capsys):
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / f"{name}.tif", stack)
    (tmp_path / "a.csv").write_text("index,axis-0,axis-1,axis-2,positive,obj_id\n0,2,40,50,True,1\n")
    (tmp_path / "b.csv").write_text("index,axis-0,axis-1,axis-2,positive,obj_id\n0,9,40,50,True,1\n")
    status, _, stderr = run([tmp_path / "a.tif", tmp_path / "b.tif"], capsys)
    assert status == 2
    line = one_error_line(stderr)
    assert "b.csv" in line and "outside the stack" in line
    assert not list(tmp_path.glob("*_labels.tif"))


def test_usage_errors_exit_2(capsys):
    assert cli.main(["segment"]) == 2
    assert "STACK" in capsys.readouterr().err
    assert cli.main(["segment", "x.tif", "--direction", "sideways"]) == 2
    assert cli.main(["segment", "x.tif", "--channels", "a,b"]) == 2


# ---- the installed command, end to end ---------------------------------------------------------------------


def test_console_script_on_a_real_size_model(tmp_path, synthetic_checkpoint):
    """`python -m napari_sam2 segment` with a checkpoint file, at SAM2's real 1024-px input, on a small stack."""
    data = make_nuclei_stack(shape=(6, 96, 128))[0][1:4]
    tifffile.imwrite(tmp_path / "small.tif", data, imagej=True, metadata={"axes": "ZYX"})
    checkpoint = synthetic_checkpoint("sam2.1_hiera_t", 0)
    model = load_model(checkpoint, device="cpu")
    (row, col), = confident_clicks(model, data, 1, n=1)
    (tmp_path / "small.csv").write_text(f"index,axis-0,axis-1,axis-2,positive,obj_id\n0,1.0,{row},{col},True,3\n")

    result = subprocess.run(
        [sys.executable, "-m", "napari_sam2", "segment", str(tmp_path / "small.tif"), "--model", str(checkpoint),
         "--device", "cpu"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "NAPARI_SAM2_CACHE": str(tmp_path / "cache")},
    )

    assert result.returncode == 0, result.stderr
    out = tmp_path / "small_labels.tif"
    assert result.stdout.strip() == str(out)
    assert "small.tif  [" in result.stderr and "3/3 frames" in result.stderr
    written = read_tiff(out)
    assert written.axes == "ZYX"
    expected = segment_stack(data, [Prompt(1, 3, [(row, col)])], model=model)
    assert (expected[1] == 3).sum() >= 100
    np.testing.assert_array_equal(written.data, expected)


# ---- sample files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, axes", [("nuclei", "ZYX"), ("timelapse", "TYX")])
def test_sample_writes_a_stack_its_truth_and_one_click_inside_each_object(tmp_path, kind, axes, capsys):
    assert cli.main(["sample", kind, "--out", str(tmp_path / "demo")]) == 0
    paths = capsys.readouterr().out.split()
    assert paths == [str(tmp_path / "demo" / name) for name in (f"{kind}.tif", f"{kind}_truth.tif", f"{kind}.csv")]
    image, truth = read_tiff(paths[0]), read_tiff(paths[1])
    assert image.axes == truth.axes == axes and image.data.shape == truth.data.shape
    assert image.pixel_sizes == truth.pixel_sizes
    prepared = prepare_stack(FileJob(Path(paths[0]), Path(paths[2]), tmp_path / "out.tif"))
    clicks = [(p.frame, p.points[0], p.obj_id) for prompts in prepared.runs.values() for p in prompts]
    assert len(clicks) >= 4
    for frame, (row, col), obj_id in clicks:
        assert truth.data[frame, int(row), int(col)] == obj_id

    assert cli.main(["sample", kind, "--out", str(tmp_path / "demo")]) == 2  # never overwritten silently
    assert "already exist" in one_error_line(capsys.readouterr().err)
