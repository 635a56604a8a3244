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
import torch
from conftest import SMALL_STACK_FRAME, one_error_line, run_cli
from napari_builtins.io._write import napari_write_points
from sam2_clicks import confident_clicks

from napari_sam2.api import Prompt, segment_stack
from napari_sam2.cli import commands as cli
from napari_sam2.cli.file_segmentation import FileJob, prepare_stack
from napari_sam2.engine import load_model
from napari_sam2.errors import DeviceError
from napari_sam2.io.sample_data import make_nuclei_stack
from napari_sam2.io.tiff import read_tiff, write_labels_tiff

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
    return run_cli(["segment", *args], capsys)


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


def test_object_ids_are_stored_exactly_in_the_smallest_type_that_holds_the_largest(tmp_path, stack, prompts, expected, use_fast_model, capsys):
    largest_ids = (65535, 65536, 2**31 - 1)
    for largest in largest_ids:
        tifffile.imwrite(tmp_path / f"s{largest}.tif", stack, metadata={"axes": "ZYX"})
        renumbered = [Prompt(p.frame, 1 if p.obj_id == 1 else largest, p.points, p.labels) for p in prompts]
        save_points_csv(tmp_path / f"s{largest}.csv", renumbered, zyx)

    status, _, stderr = run([tmp_path / "*.tif", "--quiet"], capsys)

    assert status == 0, stderr
    for largest, dtype in zip(largest_ids, (np.uint16, np.uint32, np.uint32)):
        written = read_tiff(tmp_path / f"s{largest}_labels.tif")
        assert written.data.dtype == dtype and written.axes == "ZYX"
        np.testing.assert_array_equal(written.data, np.where(expected == 2, largest, expected))


# ---- a single plane among stacks ------------------------------------------------------------------------------


def test_a_2d_tiff_among_stacks_is_a_stack_of_one_frame(tmp_path, stack, prompts, expected, fast_model, use_fast_model, capsys):
    on_frame_0 = [Prompt(0, p.obj_id, p.points, p.labels) for p in prompts]
    plane = stack[FRAME]
    tifffile.imwrite(tmp_path / "a.tif", stack, metadata={"axes": "ZYX"})
    save_points_csv(tmp_path / "a.csv", prompts, zyx)
    # A 2D TIFF with prompts as napari saves them from a 2D layer: only the y and x columns.
    tifffile.imwrite(tmp_path / "b.tif", plane, imagej=True, resolution=(4, 4), metadata={"unit": "um"})
    save_points_csv(tmp_path / "b.csv", on_frame_0, lambda frame, row, col: (row, col))
    # A 2D TIFF with an axis-0 column all 0 (saved from a 3D layer), and one with letter columns y, x.
    tifffile.imwrite(tmp_path / "c.tif", plane)
    save_points_csv(tmp_path / "c.csv", on_frame_0, zyx)
    tifffile.imwrite(tmp_path / "d.tif", plane)
    rows = [(row, col, label, p.obj_id) for p in on_frame_0 for (row, col), label in zip(p.points, p.labels)]
    pd.DataFrame(rows, columns=["y", "x", "positive", "obj_id"]).to_csv(tmp_path / "d.csv", index=False)
    # A stack whose z axis has one slice, with prompts on y and x only.
    tifffile.imwrite(tmp_path / "e.tif", plane[None], metadata={"axes": "ZYX"})
    save_points_csv(tmp_path / "e.csv", on_frame_0, lambda frame, row, col: (row, col))
    assert [read_tiff(tmp_path / f"{n}.tif").axes for n in "bcde"] == ["YX", "YX", "YX", "ZYX"]

    status, stdout, stderr = run([tmp_path / "?.tif", "--axis", "z", "--quiet"], capsys)

    assert status == 0, stderr
    assert stdout.split() == [str(tmp_path / f"{name}_labels.tif") for name in "abcde"]
    np.testing.assert_array_equal(read_tiff(tmp_path / "a_labels.tif").data, expected)
    one_frame = segment_stack(plane[None], on_frame_0, model=fast_model)
    assert (one_frame > 0).sum() > 100  # a real mask, so the comparison means something
    for name in "bcd":
        written = read_tiff(tmp_path / f"{name}_labels.tif")
        assert written.axes == "YX"  # the plane's own axes
        np.testing.assert_array_equal(written.data, one_frame[0])
    assert read_tiff(tmp_path / "b_labels.tif").pixel_sizes == pytest.approx({"Y": 0.25, "X": 0.25})
    written = read_tiff(tmp_path / "e_labels.tif")
    assert written.axes == "ZYX"
    np.testing.assert_array_equal(written.data, one_frame)


# ---- a stack that fails while computing: exit 1, one line, the others written -----------------------------------


def _failing_first_run(monkeypatch, error):
    """stream_stack as file_segmentation calls it, with the first run failing with ``error`` after its first frame."""
    from napari_sam2 import api
    from napari_sam2.api import Propagation

    real = api.stream_stack
    calls = []

    def stream(*args, **kwargs):
        run = real(*args, **kwargs)
        calls.append(run)
        if len(calls) > 1:
            return run

        def results():
            try:
                yield next(run)
                raise error
            finally:
                run.close()

        return Propagation(results(), run.total, run.n_frames, run.frame_size)

    monkeypatch.setattr(api, "stream_stack", stream)  # file_segmentation imports it when a stack's turn comes


def _failing_tracking(monkeypatch, error):
    """The first stack's tracking session raising ``error`` (e.g. the GPU's out-of-memory) once propagation asks for
    a frame other than the prompted one: deep inside the session and the engine, whatever their structure."""
    from napari_sam2.core.frames import StackFrames

    real = StackFrames.__getitem__
    first = []

    def getitem(self, index):
        if not first:
            first.append(self)
        if first[0] is self and index != FRAME:
            raise error
        return real(self, index)

    monkeypatch.setattr(StackFrames, "__getitem__", getitem)


def _failing_write(monkeypatch, error):
    from napari_sam2.cli import file_segmentation

    real = file_segmentation.write_labels_tiff
    calls = []

    def write(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            Path(path).write_bytes(b"half a file")
            raise error
        return real(path, *args, **kwargs)

    monkeypatch.setattr(file_segmentation, "write_labels_tiff", write)


CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.79 GiB"


@pytest.mark.parametrize(
    "where, error, reason",
    [
        ("tracking", lambda: torch.OutOfMemoryError(CUDA_OOM), "GPU ran out of memory"),
        ("run", lambda: torch.OutOfMemoryError(CUDA_OOM), "The GPU ran out of memory. Choose a smaller model"),
        ("run", lambda: torch.cuda.OutOfMemoryError(CUDA_OOM), "GPU ran out of memory"),
        ("run", lambda: MemoryError(), "The computer ran out of memory (RAM)"),
        ("run", lambda: DeviceError("The GPU went away."), "The GPU went away."),
        ("run", lambda: RuntimeError("boom"), "unexpected RuntimeError: boom (please report it)"),
        ("write", lambda: OSError(28, "No space left on device"), "No space left on device"),
    ],
)
def test_a_stack_failing_while_computing_exits_1_and_the_others_are_written(
    tmp_path, stack, prompts, expected, use_fast_model, monkeypatch, capsys, where, error, reason
):
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / f"{name}.tif", stack, metadata={"axes": "ZYX"})
        save_points_csv(tmp_path / f"{name}.csv", prompts, zyx)
    {"run": _failing_first_run, "tracking": _failing_tracking, "write": _failing_write}[where](monkeypatch, error())

    status, stdout, stderr = run([tmp_path / "a.tif", tmp_path / "b.tif"], capsys)

    assert status == 1, stderr
    line = one_error_line(stderr)
    assert line.startswith(f"napari-sam2: error: {tmp_path / 'a.tif'}: ")
    assert reason in line
    assert "1 of 2 stack(s) failed; the others were written" in stderr
    assert stdout.split() == [str(tmp_path / "b_labels.tif")]
    np.testing.assert_array_equal(read_tiff(tmp_path / "b_labels.tif").data, expected)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.csv", "a.tif", "b.csv", "b.tif", "b_labels.tif"]


def test_out_of_memory_while_loading_the_model_exits_1_and_writes_nothing(tmp_path, stack, prompts, monkeypatch, capsys):
    tifffile.imwrite(tmp_path / "a.tif", stack, metadata={"axes": "ZYX"})
    save_points_csv(tmp_path / "a.csv", prompts, zyx)

    def load(*args):
        raise torch.OutOfMemoryError(CUDA_OOM)

    monkeypatch.setattr(cli, "_load_model", load)
    status, stdout, stderr = run([tmp_path / "a.tif"], capsys)
    assert status == 1 and stdout == ""
    assert "GPU ran out of memory" in one_error_line(stderr)
    assert not (tmp_path / "a_labels.tif").exists()


# ---- a stack scaled to saturated pixels: one warning line -------------------------------------------------------


def test_a_saturated_stack_gives_one_warning_line_unless_the_range_is_given(tmp_path, stack, prompts, expected, use_fast_model, capsys):
    bright = stack.copy()
    bright.reshape(-1)[::50] = 65535  # 2 % saturated
    tifffile.imwrite(tmp_path / "bright.tif", bright, metadata={"axes": "ZYX"})
    save_points_csv(tmp_path / "bright.csv", prompts, zyx)
    tifffile.imwrite(tmp_path / "normal.tif", stack, metadata={"axes": "ZYX"})
    save_points_csv(tmp_path / "normal.csv", prompts, zyx)
    # Two time points prompted: two tracking runs over one stack, still one line.
    tifffile.imwrite(tmp_path / "bright4d.tif", np.stack([bright, bright]), metadata={"axes": "TZYX"})
    rows = [(t, p.frame, row, col, bool(label), p.obj_id) for t in (0, 1) for p in prompts
            for (row, col), label in zip(p.points, p.labels)]
    pd.DataFrame(rows, columns=["axis-0", "axis-1", "axis-2", "axis-3", "positive", "obj_id"]).to_csv(
        tmp_path / "bright4d.csv", index=False)

    status, _, stderr = run([tmp_path / "bright.tif", tmp_path / "normal.tif", tmp_path / "bright4d.tif", "--axis", "z", "--quiet"], capsys)

    assert status == 0, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 2, stderr
    for line, name in zip(lines, ("bright.tif", "bright4d.tif")):
        assert line.startswith(f"napari-sam2: warning: {tmp_path / name}: 2.0% of the sampled pixels sit at the top")
        assert "--intensity-range LOW,HIGH" in line
    np.testing.assert_array_equal(read_tiff(tmp_path / "normal_labels.tif").data, expected)

    status, _, stderr = run([tmp_path / "bright.tif", "--intensity-range", "0,2000", "--overwrite", "--quiet"], capsys)
    assert status == 0 and stderr == ""


# ---- bad input: exit 2, one clear line, nothing written, no model loaded ---------------------------------------


def _bad_csv(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing stack", "no such file"),
        ("missing prompts", "does not exist"),
        ("no obj_id column", "no obj_id column"),
        ("no positive nor obj_id column", "no positive and no obj_id column"),
        ("image axis", "y is an image or channel axis"),
        ("output not a tiff", "is not a TIFF file name"),
        ("no coordinate columns", "no coordinate columns"),
        ("too few axis columns", "2 coordinate columns"),
        ("frame outside", "outside the stack's 4 slices"),
        ("point outside", "lies outside the 96 x 128 image"),
        ("not a number", "is not a number"),
        ("bad polarity", "neither positive"),
        ("2D image with a prompt off its one frame", "outside the stack's 1 slices"),
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
    elif case == "no positive nor obj_id column":
        _bad_csv(prompts, "index,axis-0,axis-1,axis-2\n0,2,40,50\n")
    elif case == "image axis":
        args += ["--axis", "y"]
    elif case == "output not a tiff":
        args[4] = tmp_path / "out.png"
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
    elif case == "2D image with a prompt off its one frame":
        tifffile.imwrite(source, stack[0])
        _bad_csv(prompts, "index,axis-0,axis-1,axis-2,positive,obj_id\n0,1,40,50,True,1\n")
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


def test_the_header_is_quoted_as_the_file_has_it(tmp_path, stack, no_model, capsys):
    tifffile.imwrite(tmp_path / "s.tif", stack, metadata={"axes": "ZYX"})
    _bad_csv(tmp_path / "s.csv", "index,axis-0,axis-1,axis-2,Positive\n0,2,40,50,True\n")
    status, _, stderr = run([tmp_path / "s.tif"], capsys)
    line = one_error_line(stderr)
    assert status == 2 and "no obj_id column: expected obj_id (1, 2, ...;" in line  # "Positive" was found
    assert "['index', 'axis-0', 'axis-1', 'axis-2', 'Positive']" in line


def test_a_point_off_a_plain_image_names_no_made_up_axis(tmp_path, stack, no_model, capsys):
    tifffile.imwrite(tmp_path / "s.tif", stack[0])  # no axes in the file: tifffile calls the added axis Q
    _bad_csv(tmp_path / "s.csv", "index,axis-0,axis-1,axis-2,positive,obj_id\n0,2,40,50,True,1\n")
    status, _, stderr = run([tmp_path / "s.tif"], capsys)
    line = one_error_line(stderr)
    assert status == 2 and "on axis 0, outside the stack's 1 slices" in line and "(Q)" not in line


@pytest.mark.parametrize("value, message", [
    ("500,100", "LOW must not be above HIGH, got '500,100': give 100,500"),
    ("nan,100", "LOW and HIGH must be finite numbers"),
    ("5", "expected LOW,HIGH (two numbers)"),
    ("low,high", "expected numbers separated by commas"),
])
def test_a_bad_intensity_range_is_refused_before_anything_is_read(tmp_path, stack, no_model, capsys, value, message):
    tifffile.imwrite(tmp_path / "s.tif", stack, metadata={"axes": "ZYX"})
    _bad_csv(tmp_path / "s.csv", "index,axis-0,axis-1,axis-2,positive,obj_id\n0,2,40,50,True,1\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    status, stdout, stderr = run([tmp_path / "s.tif", "--intensity-range", value], capsys)
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert status == 2 and stdout == "" and len(errors) == 1
    assert f"error: argument --intensity-range: {message}" in errors[0]
    assert errors[0].count("--intensity-range") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_object_with_only_negative_clicks_is_segmented_with_one_warning_line(tmp_path, stack, use_fast_model, capsys):
    tifffile.imwrite(tmp_path / "s.tif", stack, metadata={"axes": "ZYX"})
    _bad_csv(tmp_path / "s.csv", "index,axis-0,axis-1,axis-2,positive,obj_id\n"
                                 f"0,{FRAME},40,50,False,1\n1,{FRAME},60,70,False,1\n2,{FRAME},40,50,True,2\n")
    status, stdout, stderr = run([tmp_path / "s.tif", "--quiet"], capsys)
    assert status == 0, stderr
    assert stderr.strip().splitlines() == [
        f"napari-sam2: warning: {tmp_path / 's.tif'}: Object 1 has only negative clicks on frame {FRAME}: SAM2 needs a "
        "positive click (on the object) or a box there to find it."
    ]
    assert (tmp_path / "s_labels.tif").is_file()


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
    # Another process: oneDNN's kernels depend on buffer addresses, so logits can differ in the last bits and a
    # pixel whose logit is ~0 may flip; the reference's mask tolerance (>= 99.99 % of pixels agree) applies.
    assert written.data.shape == expected.shape and written.data.dtype.kind in "ui"
    assert set(np.unique(written.data)) <= {0, 3}
    assert (written.data != expected).mean() <= 1e-4


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
