"""`napari-sam2 segment --seed-labels`: a label TIFF (one frame's labels, or the whole stack's) seeds the objects
(label value = object id, prompted by its mask), with or without prompts; every seed file is checked before any
model is loaded.

The command runs in-process on the fast model (random weights, 256 px): a mask prompt's output on its own frame is
the mask itself, seen at the model's resolution, whatever the weights.
"""

import numpy as np
import pytest
import tifffile
from conftest import one_error_line, run_cli
from sam2_clicks import confident_clicks

from napari_sam2.io.tiff import read_tiff
from napari_sam2.io.tracking_samples import make_tracking_timelapse

SEED_FRAME = 1
IDS = {1: 3, 6: 12}  # cells of the sample -> the object ids their seeds give them


@pytest.fixture(scope="module")
def sample():
    image, truth, _ = make_tracking_timelapse(shape=(16, 64, 80))
    return image[:4], truth[:4]


@pytest.fixture(scope="module")
def seeds(sample):
    """(H, W) int32 labels of SEED_FRAME: two cells, renumbered 3 and 12."""
    _, truth = sample
    labels = np.zeros(truth.shape[1:], np.int32)
    for cell, obj_id in IDS.items():
        labels[truth[SEED_FRAME] == cell] = obj_id
    return labels


def write_tyx(path, data):
    tifffile.imwrite(path, data, imagej=True, resolution=(2.0, 2.0), metadata={"axes": "TYX", "unit": "um"})
    return path


def segment(args, capsys):
    return run_cli(["segment", *args, "--quiet"], capsys)


def assert_seeded(frame_labels, seeds):
    """Each seed is its object's mask on the seed frame (IoU > 0.95: SAM2 sees the mask at its model resolution)."""
    for obj_id in np.unique(seeds[seeds > 0]):
        ours, seed = frame_labels == obj_id, seeds == obj_id
        assert (ours & seed).sum() / (ours | seed).sum() > 0.95, obj_id


# ---- results ---------------------------------------------------------------------------------------------------


def test_seed_labels_become_the_objects_without_any_prompts_file(tmp_path, sample, seeds, use_fast_model, capsys):
    image, _ = sample
    source = write_tyx(tmp_path / "cells.tif", image)
    (tmp_path / "cells.csv").write_text("not a prompts file")  # the default prompts are not looked for
    tifffile.imwrite(tmp_path / "seeds.tif", seeds.astype(np.uint16))
    out = tmp_path / "out" / "labels.tif"

    status, stdout, stderr = segment(
        [source, "--seed-labels", tmp_path / "seeds.tif", "--seed-frame", SEED_FRAME, "--out", out], capsys
    )

    assert status == 0, stderr
    assert stdout.split() == [str(out)]
    written = read_tiff(out)
    assert written.axes == "TYX" and written.data.shape == image.shape
    assert written.pixel_sizes == pytest.approx({"Y": 0.5, "X": 0.5})
    assert set(np.unique(written.data)) == {0, *IDS.values()}  # label values = the seeds' ids
    assert_seeded(written.data[SEED_FRAME], seeds)


def test_a_template_pairs_one_frame_and_whole_stack_seed_files_with_their_stacks(tmp_path, sample, seeds,
                                                                                use_fast_model, capsys):
    image, _ = sample
    write_tyx(tmp_path / "a.tif", image)
    write_tyx(tmp_path / "b.tif", image)
    tifffile.imwrite(tmp_path / "a_seeds.tif", seeds)  # one frame's labels
    whole = np.zeros(image.shape, np.uint16)
    whole[SEED_FRAME] = seeds
    whole[0, :8, :8] = 99  # another frame's labels seed nothing
    tifffile.imwrite(tmp_path / "b_seeds.tif", whole, imagej=True, metadata={"axes": "TYX"})

    # The glob matches the seed files too: they are not stacks.
    status, stdout, stderr = segment(
        [tmp_path / "*.tif", "--seed-labels", "{dir}/{stem}_seeds.tif", "--seed-frame", SEED_FRAME, "--out",
         str(tmp_path / "{stem}_out.tif")], capsys
    )

    assert status == 0, stderr
    assert stdout.split() == [str(tmp_path / "a_out.tif"), str(tmp_path / "b_out.tif")]
    from_frame, from_stack = (read_tiff(tmp_path / f"{name}_out.tif").data for name in "ab")
    assert_seeded(from_frame[SEED_FRAME], seeds)
    np.testing.assert_array_equal(from_stack, from_frame)
    assert 99 not in from_stack


def test_seed_files_once_per_stack_in_order_and_prompts_add_objects(tmp_path, sample, seeds, fast_model,
                                                                   use_fast_model, capsys):
    image, _ = sample
    write_tyx(tmp_path / "a.tif", image)
    write_tyx(tmp_path / "b.tif", image)
    tifffile.imwrite(tmp_path / "first.tif", seeds)
    only_one = np.where(seeds == 12, 12, 0).astype(np.uint8)
    tifffile.imwrite(tmp_path / "second.tif", only_one)
    (row, col), = confident_clicks(fast_model, image, SEED_FRAME, n=1)
    # A further object (id 50) from a click: prompts and seeds are used together.
    for name in "ab":
        (tmp_path / f"{name}.json").write_text(f'[{{"frame": {SEED_FRAME}, "obj_id": 50, "points": [[{row}, {col}]]}}]')

    status, _, stderr = segment(
        [tmp_path / "a.tif", tmp_path / "b.tif", "--seed-labels", tmp_path / "first.tif", "--seed-labels",
         tmp_path / "second.tif", "--seed-frame", SEED_FRAME, "--prompts", "{dir}/{stem}.json"],
        capsys,
    )

    assert status == 0, stderr
    first, second = (read_tiff(tmp_path / f"{name}_labels.tif").data for name in "ab")
    assert set(np.unique(first)) == {0, 3, 12, 50}
    assert set(np.unique(second)) == {0, 12, 50}
    assert_seeded(first[SEED_FRAME], seeds)
    # The click's object takes no seed's pixel on the seed frame: a mask prompt is its object's output there.
    assert_seeded(second[SEED_FRAME], only_one)


def test_a_one_frame_seed_image_seeds_every_run_of_a_stack_with_further_axes(tmp_path, sample, seeds,
                                                                              use_fast_model, capsys):
    image, _ = sample
    data = np.stack([image[:3], image[:3]])  # (t, z, y, x), tracked along z at each t
    tifffile.imwrite(tmp_path / "tz.tif", data, imagej=True, metadata={"axes": "TZYX"})
    tifffile.imwrite(tmp_path / "plane.tif", seeds)
    whole = np.zeros(data.shape, np.uint16)
    whole[1, SEED_FRAME] = seeds  # seeds at t = 1 only
    tifffile.imwrite(tmp_path / "whole.tif", whole, imagej=True, metadata={"axes": "TZYX"})

    status, _, stderr = segment([tmp_path / "tz.tif", "--axis", "z", "--seed-labels", tmp_path / "plane.tif",
                                 "--seed-frame", SEED_FRAME, "--out", tmp_path / "from_plane.tif"], capsys)
    assert status == 0, stderr
    written = read_tiff(tmp_path / "from_plane.tif")
    assert written.axes == "TZYX" and written.data.shape == data.shape
    for t in (0, 1):
        assert_seeded(written.data[t, SEED_FRAME], seeds)
    np.testing.assert_array_equal(written.data[0], written.data[1])  # the same frames, the same seeds

    status, _, stderr = segment([tmp_path / "tz.tif", "--axis", "z", "--seed-labels", tmp_path / "whole.tif",
                                 "--seed-frame", SEED_FRAME, "--out", tmp_path / "from_whole.tif"], capsys)
    assert status == 0, stderr
    from_whole = read_tiff(tmp_path / "from_whole.tif").data
    assert not from_whole[0].any()  # no seed at t = 0: no run there
    np.testing.assert_array_equal(from_whole[1], written.data[1])


# ---- bad seeds: exit 2, one clear line, nothing written, no model loaded ------------------------------------------


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "Seed labels"),
        ("wrong shape", "shape (32, 80); give one frame's labels (64, 80) or the whole stack's labels (4, 64, 80)"),
        ("float fractions", "must be whole numbers"),
        ("empty frame", "no object on frame 1"),
        ("negative", "must be 0 (background) or positive"),
        ("not labels", "integer label image"),
        ("not a tiff", "as a TIFF image"),
        ("frame outside", "--seed-frame 4 is not a frame of"),
        ("seed frame without seeds", "--seed-frame says which frame"),
        ("two stacks, three seed files", "2 stacks but 3 seed label files"),
        ("output is the seed file", "is the seed labels of"),
        ("the stack as its own seeds", "would be the stack itself"),
        ("bad prompts too", "is not a number"),
    ],
)
def test_bad_seed_labels_exit_2_before_any_model(tmp_path, sample, seeds, no_model, capsys, case, message):
    image, _ = sample
    source = write_tyx(tmp_path / "s.tif", image)
    seed_file = tmp_path / "seeds.tif"
    tifffile.imwrite(seed_file, seeds)
    args = [source, "--seed-labels", seed_file, "--seed-frame", SEED_FRAME, "--out", tmp_path / "out.tif"]
    if case == "missing":
        args[2] = tmp_path / "nope.tif"
        message = f"Seed labels {tmp_path / 'nope.tif'} do not exist"
    elif case == "wrong shape":
        tifffile.imwrite(seed_file, seeds[:32])
    elif case == "float fractions":
        tifffile.imwrite(seed_file, seeds.astype(np.float32) / 2)
    elif case == "empty frame":
        whole = np.zeros(image.shape, np.uint16)
        whole[0] = seeds  # labels, but not on the seed frame
        tifffile.imwrite(seed_file, whole, imagej=True, metadata={"axes": "TYX"})
    elif case == "negative":
        tifffile.imwrite(seed_file, -seeds)
    elif case == "not labels":
        tifffile.imwrite(seed_file, seeds.astype(np.complex64))
    elif case == "not a tiff":
        seed_file.write_text("labels")
    elif case == "frame outside":
        args[4] = 4
    elif case == "seed frame without seeds":
        (tmp_path / "s.csv").write_text("index,axis-0,axis-1,axis-2,positive,obj_id\n0,1,40,50,True,1\n")
        args[1:3] = []
    elif case == "two stacks, three seed files":
        write_tyx(tmp_path / "t.tif", image)
        args[1:1] = [tmp_path / "t.tif", "--seed-labels", seed_file, "--seed-labels", seed_file]
        args[-1] = str(tmp_path / "{stem}_out.tif")
    elif case == "output is the seed file":
        args[-1] = seed_file
    elif case == "the stack as its own seeds":
        args[2] = "{dir}/{name}"
    elif case == "bad prompts too":
        (tmp_path / "p.csv").write_text("index,axis-0,axis-1,axis-2,positive,obj_id\n0,1,forty,50,True,1\n")
        args += ["--prompts", tmp_path / "p.csv"]
    before = sorted(p.name for p in tmp_path.iterdir())

    status, stdout, stderr = segment(args, capsys)

    assert status == 2, stderr
    assert message in one_error_line(stderr)
    assert stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before
