"""Track export (io/track_export.py): CTC folders scored by traccuracy against an independently written ground
truth, GEFF read back with geff's reader, CSV tables, and the writers' refusals and atomicity."""

import csv
import sys

import numpy as np
import pytest
import tifffile
from ctc_truth import score, write_truth_folder

from napari_sam2.core.lineage import build_lineage
from napari_sam2.errors import InputError
from napari_sam2.io import track_export
from napari_sam2.io.track_export import write_ctc, write_flags_csv, write_geff, write_tracks_csv
from napari_sam2.io.tracking_samples import make_tracking_timelapse


@pytest.fixture(scope="module")
def sample():
    _, labels, parents = make_tracking_timelapse()
    return labels, parents


@pytest.fixture(scope="module")
def ground_truth(sample, tmp_path_factory):
    """A CTC ground-truth folder written straight from the generator's truth, without write_ctc."""
    labels, parents = sample
    return write_truth_folder(labels, parents, tmp_path_factory.mktemp("gt"))


@pytest.mark.parametrize("given_parents", [False, True], ids=["inferred", "given"])
def test_ctc_export_of_the_truth_scores_perfectly_with_traccuracy(sample, ground_truth, tmp_path, given_parents):
    labels, parents = sample
    lineage = build_lineage(labels, parents, infer_divisions=False) if given_parents else build_lineage(labels)
    folder = write_ctc(labels, lineage, tmp_path / "pred")
    assert sorted(p.name for p in folder.iterdir())[:2] == ["mask000.tif", "mask001.tif"]
    assert len(list(folder.glob("mask*.tif"))) == len(labels)
    assert tifffile.imread(folder / "mask000.tif").dtype == np.uint16
    ctc, divisions = score(ground_truth, folder)
    assert ctc["TRA"] == 1.0 and ctc["DET"] == 1.0 and ctc["LNK"] == 1.0
    assert divisions["Total GT Divisions"] == 2
    assert divisions["Division F1"] == 1.0 and divisions["True Positive Divisions"] == 2
    # The cell that leaves and comes back: its later segment carries a new id in the masks, parent = earlier one.
    segment = next(s for s in lineage.segments if s.label == 3 and s.parent)
    assert f"{segment.track_id} {segment.first} {segment.last} 3\n" in (folder / "res_track.txt").read_text()
    later = tifffile.imread(folder / f"mask{segment.first:03d}.tif")
    assert (later == segment.track_id).any() and not (later == 3).any()


def test_a_wrong_lineage_scores_below_one(sample, ground_truth, tmp_path):
    labels, _ = sample
    ctc, divisions = score(
        ground_truth, write_ctc(labels, build_lineage(labels, infer_divisions=False), tmp_path / "p")
    )
    assert ctc["TRA"] < 1.0 and ctc["DET"] == 1.0
    assert divisions["True Positive Divisions"] == 0


def test_geff_is_written_and_read_back_with_geff(sample, tmp_path):
    geff = pytest.importorskip("geff")
    labels, _ = sample
    lineage = build_lineage(labels)
    path = write_geff(lineage, tmp_path / "tracks.geff", scale=(5.0, 0.65, 0.65), axis_units=("minute", "um", "um"))
    graph, metadata = geff.read(str(path))
    tracks = lineage.tracks
    assert graph.number_of_nodes() == len(tracks)
    within = sum(int((tracks[:, 0] == s.track_id).sum()) - 1 for s in lineage.segments)
    assert graph.number_of_edges() == within + sum(1 for s in lineage.segments if s.parent)
    for node, row in zip(sorted(graph.nodes), tracks):
        attributes = graph.nodes[node]
        assert attributes["track_id"] == row[0] and attributes["t"] == row[1]
        assert attributes["y"] == pytest.approx(row[2]) and attributes["x"] == pytest.approx(row[3])
        assert attributes["label"] == lineage.labels()[int(row[0])]
    mothers = sorted(node for node in graph.nodes if graph.out_degree(node) == 2)
    assert [graph.nodes[m]["track_id"] for m in mothers] == [1, 2]
    for mother in mothers:
        daughters = sorted(graph.nodes[d]["track_id"] for d in graph.successors(mother))
        assert daughters == ([7, 8] if graph.nodes[mother]["track_id"] == 1 else [9, 10])
        assert {graph.nodes[d]["t"] for d in graph.successors(mother)} == {graph.nodes[mother]["t"] + 1}
    assert [axis.name for axis in metadata.axes] == ["t", "y", "x"]
    assert [axis.scale for axis in metadata.axes] == [5.0, 0.65, 0.65]
    assert metadata.axes[1].unit in ("um", "micrometer")
    with pytest.raises(InputError, match="overwrite=True"):
        write_geff(lineage, path)
    write_geff(lineage, path, overwrite=True)
    assert geff.read(str(path))[0].number_of_nodes() == len(tracks)
    assert [p.name for p in tmp_path.iterdir()] == ["tracks.geff"]


def test_geff_of_a_3d_time_lapse_and_bad_axis_names(tmp_path):
    geff = pytest.importorskip("geff")
    labels = np.zeros((3, 4, 8, 8), np.uint8)
    labels[:, 1:3, 2:5, 2:5] = 1
    lineage = build_lineage(labels)
    graph, metadata = geff.read(str(write_geff(lineage, tmp_path / "g")))
    assert [axis.name for axis in metadata.axes] == ["t", "z", "y", "x"]
    assert graph.nodes[0]["z"] == pytest.approx(1.5) and graph.number_of_edges() == 2
    with pytest.raises(InputError, match="axis_names"):
        write_geff(lineage, tmp_path / "h", axis_names=("t", "y", "x"))
    with pytest.raises(InputError, match="scale"):
        write_geff(lineage, tmp_path / "h", scale=(1.0, 1.0))


def test_geff_missing_says_how_to_install_it(sample, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "geff", None)  # makes `import geff` raise ImportError
    with pytest.raises(InputError, match="pip install geff"):
        write_geff(build_lineage(sample[0][:3]), tmp_path / "g")
    assert list(tmp_path.iterdir()) == []


def test_tracks_and_flags_csv_read_back(tmp_path):
    labels = np.zeros((6, 40, 60), np.int32)
    labels[:3, 5:15, 5:15] = 1
    labels[3:, 5:12, 5:12] = 2  # daughter-like continuation of 1
    labels[3:, 12:16, 5:12] = 3
    labels[:, 20:25, 10:15] = 4
    labels[4:, 20:25, 40:45] = 4  # teleports (the old place is emptied below)
    labels[4:, 20:25, 10:15] = 0
    lineage = build_lineage(labels)
    with open(write_tracks_csv(lineage, tmp_path / "out" / "tracks.csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["track_id", "t", "y", "x", "label", "parent_track_id"]
    assert len(rows) == len(lineage.tracks)
    for row, expected in zip(rows, lineage.tracks):
        np.testing.assert_allclose([float(row[k]) for k in ("track_id", "t", "y", "x")], expected)
    assert {(r["track_id"], r["parent_track_id"]) for r in rows} == {("1", "0"), ("2", "1"), ("3", "1"), ("4", "0")}
    with open(write_flags_csv(lineage, tmp_path / "flags.csv"), newline="") as file:
        flags = list(csv.DictReader(file))
    assert [(f["frame"], f["track_id"], f["kind"]) for f in flags] == [("4", "4", "jump")]
    assert float(flags[0]["value"]) == pytest.approx(30) and flags[0]["text"].startswith("object 4 jumps 30 px")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flags.csv", "out"]

    volume = np.zeros((2, 3, 6, 6), np.uint8)
    volume[:, 1, 1:3, 1:3] = 7
    with open(write_tracks_csv(build_lineage(volume), tmp_path / "3d.csv"), newline="") as file:
        assert next(csv.reader(file)) == ["track_id", "t", "z", "y", "x", "label", "parent_track_id"]


def test_ids_beyond_16_bits_are_renumbered_in_ctc_and_kept_in_geff(sample, ground_truth, tmp_path):
    """CTC masks are 16-bit: a lineage with larger ids (daughters of seeds with large ids) is written with its tracks
    numbered 1, 2, ... (masks and res_track.txt alike) and still scores perfectly; GEFF keeps the ids (uint32)."""
    labels, parents = sample
    shifted = np.where(labels > 0, labels.astype(np.int64) + 70000, 0)
    lineage = build_lineage(shifted, {d + 70000: m + 70000 for d, m in parents.items()}, infer_divisions=False)
    folder = write_ctc(shifted, lineage, tmp_path / "big")
    masks = [tifffile.imread(path) for path in sorted(folder.glob("mask*.tif"))]
    assert masks[0].dtype == np.uint16 and max(int(m.max()) for m in masks) == len(lineage.segments)
    ctc, divisions = score(ground_truth, folder)
    assert ctc["TRA"] == 1.0 and divisions["Division F1"] == 1.0
    path = write_geff(lineage, tmp_path / "big.geff", labels=shifted)
    import zarr

    segmentation = zarr.open_array(str(path / "segmentation"))
    assert segmentation.dtype == np.uint32 and int(np.asarray(segmentation[0]).max()) > 70000


def test_ctc_writer_refuses_existing_folders(sample, tmp_path):
    labels, _ = sample

    lineage = build_lineage(labels)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="overwrite=True"):
        write_ctc(labels, lineage, existing)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    write_ctc(labels, lineage, existing, overwrite=True)
    assert not (existing / "keep.txt").exists() and (existing / "res_track.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    write_ctc(labels, lineage, empty)  # an empty folder is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "existing"]

    other = labels.copy()
    other[5][other[5] == 4] = 0  # not the labels the lineage was built from
    with pytest.raises(InputError, match="do not match"):
        write_ctc(other, lineage, tmp_path / "mismatch")
    assert not (tmp_path / "mismatch").exists()
    with pytest.raises(InputError, match="does not fit"):
        write_ctc(labels[:10], lineage, tmp_path / "mismatch")
    with pytest.raises(InputError, match="does not fit"):
        write_ctc(labels[:, None], lineage, tmp_path / "mismatch")
    assert not (tmp_path / "mismatch").exists()


def test_a_failing_ctc_write_leaves_nothing_half_written(sample, tmp_path, monkeypatch):
    labels, _ = sample
    lineage = build_lineage(labels)
    written = []
    real_imwrite = tifffile.imwrite

    def failing_imwrite(path, data, **kwargs):
        if len(written) == 5:
            raise OSError("disk full")
        written.append(path)
        return real_imwrite(path, data, **kwargs)

    monkeypatch.setattr(track_export.tifffile, "imwrite", failing_imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_ctc(labels, lineage, tmp_path / "ctc")
    assert len(written) == 5 and list(tmp_path.iterdir()) == []
    # Overwriting: the old folder survives a failed write untouched.
    monkeypatch.setattr(track_export.tifffile, "imwrite", real_imwrite)
    write_ctc(labels, lineage, tmp_path / "ctc")
    before = (tmp_path / "ctc" / "res_track.txt").read_text()
    written.clear()
    monkeypatch.setattr(track_export.tifffile, "imwrite", failing_imwrite)
    with pytest.raises(OSError):
        write_ctc(labels, lineage, tmp_path / "ctc", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["ctc"]
    assert (tmp_path / "ctc" / "res_track.txt").read_text() == before
    assert len(list((tmp_path / "ctc").glob("mask*.tif"))) == len(labels)


def test_more_than_1000_frames_get_four_digit_mask_names(tmp_path, monkeypatch):
    monkeypatch.setattr(track_export.tifffile, "imwrite", lambda path, data: path.touch())  # only the names count
    labels = np.ones((1001, 2, 2), np.uint8)
    folder = write_ctc(labels, build_lineage(labels), tmp_path / "long")
    assert (folder / "mask0000.tif").exists() and (folder / "mask1000.tif").exists()
    assert (folder / "res_track.txt").read_text() == "1 0 1000 0\n"


def test_geff_with_its_segmentation_scores_perfectly_with_traccuracys_geff_reader(sample, ground_truth, tmp_path):
    """The GEFF carries the masks as a "labels" related object: traccuracy loads graph and masks from it alone and
    matches them against the ground truth like a CTC folder."""
    from traccuracy import run_metrics
    from traccuracy.loaders import load_ctc_data, load_geff_data
    from traccuracy.matchers import CTCMatcher
    from traccuracy.metrics import CTCMetrics, DivisionMetrics

    labels, _ = sample
    path = write_geff(build_lineage(labels), tmp_path / "tracks.geff", labels=labels)
    predicted = load_geff_data(str(path), load_geff_seg=True, name="pred")
    assert predicted.segmentation.shape == labels.shape
    results, _ = run_metrics(load_ctc_data(str(ground_truth), name="gt"), predicted, CTCMatcher(),
                             [CTCMetrics(), DivisionMetrics()])
    ctc, divisions = (r["results"] for r in results)
    assert ctc["TRA"] == 1.0 and ctc["DET"] == 1.0
    assert divisions["Frame Buffer 0"]["Division F1"] == 1.0


def test_outputs_are_readable_by_others_as_any_new_file(sample, tmp_path):
    """Written through private temporary names, the results still get the mode a plain new file or folder gets."""
    import os
    import stat

    from napari_sam2.io.track_export import write_tracking

    labels, _ = sample
    old = os.umask(0o022)
    try:
        written = write_tracking(labels, build_lineage(labels), tmp_path / "out")
    finally:
        os.umask(old)
    for path in [*written, tmp_path / "out" / "RES" / "mask000.tif"]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_segment_masks_are_the_same_for_ids_beyond_the_lookup_table(sample, monkeypatch):
    """Label ids too large for segment_masks' lookup table take the sorting path: the same masks, and the same
    refusal of labels that do not match the lineage."""
    labels, parents = sample
    lineage = build_lineage(labels, parents, infer_divisions=False)
    by_table = list(track_export.segment_masks(labels, lineage))
    monkeypatch.setattr(track_export, "LOOKUP_MAX_LABEL", 0)
    by_sorting = list(track_export.segment_masks(labels, lineage))
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(by_table, by_sorting, strict=True))
    wrong = labels.copy()
    wrong[0][wrong[0] == wrong[0].max()] = 0
    for table_size in (0, 1 << 22):
        monkeypatch.setattr(track_export, "LOOKUP_MAX_LABEL", table_size)
        with pytest.raises(InputError, match="do not match the lineage"):
            list(track_export.segment_masks(wrong, lineage))
