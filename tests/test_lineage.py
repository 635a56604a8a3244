"""Tracks, parent links, divisions and identity-safety flags of label time-lapses (core/lineage.py), and the
synthetic tracking sample (io/tracking_samples.py)."""

import numpy as np
import pytest

from napari_sam2.core.lineage import Division, Flag, Lineage, TrackSegment, build_lineage, find_divisions
from napari_sam2.errors import InputError
from napari_sam2.io.tracking_samples import make_tracking_timelapse


def disk(shape, center, radius):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def series(n_frames, shape=(48, 64)):
    return np.zeros((n_frames, *shape), np.int32)


@pytest.fixture(scope="module")
def sample():
    return make_tracking_timelapse()


# --- find_divisions ---------------------------------------------------------------------------------------------


def splitting_cell(split_frames, n_frames=10, speck=False):
    """Label 1: one disk, two disks (radius 7 left, 5 right) on ``split_frames``; label 2 touches it throughout."""
    labels = series(n_frames)
    for t in range(n_frames):
        if t in split_frames:
            labels[t][disk(labels.shape[1:], (24, 16), 7)] = 1
            labels[t][disk(labels.shape[1:], (24, 40), 5)] = 1
        else:
            labels[t][disk(labels.shape[1:], (24, 26), 9)] = 1
        if speck:
            labels[t, 2:4, 60] = 1  # 2 pixels: far below 15 % of the cell
        labels[t, 40:46, 20:30] = 2
        labels[t, 46:48, 20:30] = 3  # touches label 2: other labels never make a split
    return labels


def test_a_lasting_split_is_one_division_at_its_first_frame_with_its_parts():
    labels = splitting_cell(split_frames={4, 5, 6, 7})
    divisions = find_divisions(labels)
    assert len(divisions) == 1
    division = divisions[0]
    assert isinstance(division, Division)
    assert (division.frame, division.label) == (4, 1)
    assert len(division.parts) == 2
    np.testing.assert_array_equal(division.parts[0], disk(labels.shape[1:], (24, 16), 7))  # largest first
    np.testing.assert_array_equal(division.parts[1], disk(labels.shape[1:], (24, 40), 5))
    assert division.parts[0].dtype == bool and division.parts[0].shape == labels.shape[1:]


def test_transient_splits_and_specks_are_not_divisions():
    assert find_divisions(splitting_cell(split_frames={4})) == []
    assert find_divisions(splitting_cell(split_frames={4, 5})) == []
    assert [d.frame for d in find_divisions(splitting_cell(split_frames={4, 5}), min_frames=2)] == [4]
    assert find_divisions(splitting_cell(split_frames=set(), speck=True)) == []
    # A speck beside a real split does not hide it.
    assert [d.frame for d in find_divisions(splitting_cell(split_frames={3, 4, 5, 6}, speck=True))] == [3]


def test_a_split_that_merges_and_splits_again_gives_two_divisions_and_3d_works():
    assert [d.frame for d in find_divisions(splitting_cell(split_frames={1, 2, 3, 6, 7, 8}))] == [1, 6]
    labels = np.zeros((4, 5, 20, 20), np.uint16)
    labels[:, 1:4, 2:8, 2:8] = 5
    labels[1:, 1:4, 2:8, 12:18] = 5
    divisions = find_divisions(labels)
    assert [(d.frame, d.label) for d in divisions] == [(1, 5)]
    assert divisions[0].parts[0].shape == (5, 20, 20)
    # Diagonal neighbours are connected (8-connectivity in 2D).
    diagonal = series(4, (10, 10))
    diagonal[:, 2:5, 2:5] = 1
    diagonal[:, 5:8, 5:8] = 1
    assert find_divisions(diagonal) == []


def test_find_divisions_checks_its_parameters():
    labels = splitting_cell(split_frames={4, 5, 6})
    with pytest.raises(InputError, match="min_frames"):
        find_divisions(labels, min_frames=0)
    with pytest.raises(InputError, match="min_part_fraction"):
        find_divisions(labels, min_part_fraction=0.7)


# --- tracks, segments, graph ------------------------------------------------------------------------------------


def test_tracks_are_napari_tracks_data_sorted_with_exact_centroids():
    rng = np.random.default_rng(3)
    labels = series(6, (30, 40))
    for t in range(6):
        for value in (2, 5, 9):
            if value == 9 and t < 2:
                continue
            y, x = rng.integers(3, 25), rng.integers(3, 35)
            labels[t][disk((30, 40), (y, x), 3) & (labels[t] == 0)] = value
    lineage = build_lineage(labels, infer_divisions=False)
    assert isinstance(lineage, Lineage)
    tracks = lineage.tracks
    assert tracks.shape == (6 + 6 + 4, 4) and tracks.dtype == np.float64
    np.testing.assert_array_equal(np.lexsort((tracks[:, 1], tracks[:, 0])), np.arange(len(tracks)))
    for track_id, t, y, x in tracks:
        expected = np.argwhere(labels[int(t)] == track_id).mean(axis=0)
        np.testing.assert_allclose((y, x), expected)
    assert lineage.segments == [TrackSegment(2, 2, 0, 5, 0), TrackSegment(5, 5, 0, 5, 0), TrackSegment(9, 9, 2, 5, 0)]
    assert lineage.graph == {} and lineage.parents() == {2: 0, 5: 0, 9: 0}


def test_3d_time_lapses_give_five_columns():
    labels = np.zeros((3, 6, 12, 12), np.uint8)
    labels[:, 1:3, 2:5, 2:6] = 1
    labels[1:, 3:6, 6:11, 5:9] = 4
    tracks = build_lineage(labels).tracks
    assert tracks.shape == (5, 5)
    for track_id, t, z, y, x in tracks:
        np.testing.assert_allclose((z, y, x), np.argwhere(labels[int(t)] == track_id).mean(axis=0))


def test_a_gap_splits_the_track_into_segments_linked_parent_to_child():
    labels = series(8, (20, 20))
    labels[:, 2:6, 2:6] = 1
    labels[[0, 1, 2, 5, 6, 7], 10:15, 10:15] = 2  # absent on frames 3 and 4
    lineage = build_lineage(labels)
    assert lineage.segments == [TrackSegment(1, 1, 0, 7, 0), TrackSegment(2, 2, 0, 2, 0), TrackSegment(3, 2, 5, 7, 2)]
    assert lineage.graph == {3: [2]}
    assert lineage.labels() == {1: 1, 2: 2, 3: 2}
    later = lineage.tracks[lineage.tracks[:, 0] == 3]
    np.testing.assert_array_equal(later[:, 1], [5, 6, 7])


def test_parents_are_inferred_from_overlap_or_given(sample):
    _, labels, truth = sample
    lineage = build_lineage(labels)
    label_of = lineage.labels()
    parents = {label_of[k]: label_of.get(v, 0) for k, v in lineage.parents().items() if v}
    gap_links = {k: v for k, v in parents.items() if k == v}
    assert {k: v for k, v in parents.items() if k != v} == truth
    assert gap_links == {3: 3}  # the cell that leaves and comes back
    given = build_lineage(labels, truth, infer_divisions=False)
    assert given.segments == lineage.segments
    none = build_lineage(labels, infer_divisions=False)
    assert [s for s in none.segments if s.parent] == [TrackSegment(11, 3, 18, 29, 3)]
    # 0 means "no parent" and stops inference for that label.
    assert build_lineage(labels, {7: 0}).parents()[7] == 0


def test_bad_parents_are_refused(sample):
    _, labels, _ = sample
    with pytest.raises(InputError, match="starts on frame"):
        build_lineage(labels, {7: 4})  # 4 is present when 7 starts
    with pytest.raises(InputError, match="not in the labels"):
        build_lineage(labels, {99: 1})
    with pytest.raises(InputError, match="not in the labels"):
        build_lineage(labels, {7: 99})


# --- flags ------------------------------------------------------------------------------------------------------


def moving_disk(n_frames=10, jump_at=None, grow_at=None):
    labels = series(n_frames, (64, 96))
    for t in range(n_frames):
        x = 15 + 2 * t + (40 if jump_at is not None and t >= jump_at else 0)
        radius = 8 if grow_at is not None and t >= grow_at else 5
        labels[t][disk((64, 96), (30, x), radius)] = 3
    return labels


def test_a_teleporting_object_is_flagged_as_a_jump_at_the_right_frame():
    flags = build_lineage(moving_disk(jump_at=6)).flags
    assert len(flags) == 1
    flag = flags[0]
    assert isinstance(flag, Flag)
    assert (flag.frame, flag.track_id, flag.label, flag.kind) == (6, 3, 3, "jump")
    assert flag.value == pytest.approx(42)
    assert flag.text == "object 3 jumps 42 px between frames 5 and 6"


def test_a_sudden_area_change_is_flagged():
    flags = build_lineage(moving_disk(grow_at=4)).flags
    assert [(f.frame, f.kind) for f in flags] == [(4, "area")]
    assert flags[0].value == pytest.approx((disk((64, 96), (30, 30), 8)).sum() / disk((64, 96), (30, 30), 5).sum())
    assert "object 3 grows" in flags[0].text and "between frames 3 and 4" in flags[0].text
    assert build_lineage(moving_disk(grow_at=4), area_change=3.0).flags == []


def test_smooth_motion_is_not_flagged_unless_the_jump_limit_is_smaller():
    assert build_lineage(moving_disk()).flags == []
    flags = build_lineage(moving_disk(), max_jump=1.5).flags
    assert [f.frame for f in flags] == list(range(1, 10)) and {f.kind for f in flags} == {"jump"}


# --- input checks -----------------------------------------------------------------------------------------------


def test_bad_labels_are_refused_with_a_clear_message():
    with pytest.raises(InputError, match="negative"):
        build_lineage(-np.ones((2, 4, 4), np.int16))
    with pytest.raises(InputError, match=r"time series .*labels\[None\]"):
        build_lineage(np.ones((4, 4), np.int32))
    with pytest.raises(InputError, match="whole numbers"):
        build_lineage(np.full((2, 4, 4), 1.5))
    with pytest.raises(InputError, match="whole numbers"):
        find_divisions(np.full((2, 4, 4), np.nan))
    with pytest.raises(InputError, match="integer"):
        build_lineage(np.full((2, 4, 4), "a"))
    with pytest.raises(InputError, match="area_change"):
        build_lineage(np.ones((2, 4, 4), np.int32), area_change=0.5)
    whole = build_lineage(np.ones((2, 4, 4), np.float32))
    assert whole.segments == [TrackSegment(1, 1, 0, 1, 0)]
    empty = build_lineage(np.zeros((3, 4, 4), np.int32))
    assert empty.segments == [] and empty.tracks.shape == (0, 4) and empty.flags == []


# --- the synthetic tracking sample ------------------------------------------------------------------------------


def test_the_tracking_sample_has_divisions_a_gap_and_touching_cells(sample):
    image, labels, parents = sample
    assert image.dtype == np.uint16 and labels.dtype == np.int32
    assert image.shape == labels.shape == (30, 128, 160)
    assert parents == {7: 1, 8: 1, 9: 2, 10: 2}
    present = {v: [t for t in range(30) if (labels[t] == v).any()] for v in range(1, 11)}
    for mother, daughters in ((1, (7, 8)), (2, (9, 10))):
        division = present[daughters[0]][0]
        assert present[mother][-1] == division - 1 and present[daughters[1]][0] == division
        a, b = labels[division] == daughters[0], labels[division] == daughters[1]
        assert _touching(a, b)
        assert (labels[division - 1][a | b] == mother).mean() > 0.8  # inside the mother's footprint
        later = labels[division + 4]
        assert not _touching(later == daughters[0], later == daughters[1])
    gap = [t for t in range(30) if t not in present[3]]
    assert gap and gap[0] > 0 and gap[-1] < 29 and gap == list(range(gap[0], gap[-1] + 1))
    touching = [t for t in range(30) if _touching(labels[t] == 4, labels[t] == 5)]
    assert 2 <= len(touching) <= 8 and 0 not in touching and 29 not in touching
    again = make_tracking_timelapse(seed=0)
    np.testing.assert_array_equal(again[0], image)
    np.testing.assert_array_equal(again[1], labels)
    assert not np.array_equal(make_tracking_timelapse(seed=1)[0], image)
    with pytest.raises(InputError, match="at least 15 frames"):
        make_tracking_timelapse((5, 128, 160))


def _touching(a, b):
    """Whether two masks have 8-connected neighbouring pixels."""
    grown = a.copy()
    grown[1:] |= a[:-1]
    grown[:-1] |= a[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return bool((grown & b).any())


def test_daughters_born_touching_are_found_on_their_first_frame():
    """A mother pinched at a waist into two touching daughters (one connected mask) is already divided there."""
    labels = np.zeros((6, 40, 60), np.int32)
    labels[:2, 10:30, 15:45] = 5  # the mother, a whole cell (solidity 1)
    labels[2, 10:30, 15:27] = 5  # two touching daughters joined by a thin neck: pinched
    labels[2, 10:30, 33:45] = 5
    labels[2, 19:21, 27:33] = 5
    labels[3:, 10:30, 12:26] = 5  # then apart
    labels[3:, 10:30, 34:48] = 5
    (division,) = find_divisions(labels, min_frames=3)
    assert division.frame == 2
    left, right = sorted(division.parts, key=lambda part: np.argwhere(part)[:, 1].mean())
    assert left[:, 15:27].all(axis=1)[10:30].all() and not left[:, 31:].any()
    assert right[:, 33:45].all(axis=1)[10:30].all() and not right[:, :29].any()
    assert (left | right).sum() == (labels[2] == 5).sum()


def test_two_labels_dividing_on_different_frames_get_their_own_parts():
    """A division whose run started earlier takes its parts from its own first frame, even when another label's
    split is found on the same frame."""
    labels = np.zeros((6, 30, 60), np.int32)
    labels[:, 2:12, 2:26] = 1  # label 1: one blob, then two parts from frame 1
    labels[1:, 2:12, 12:16] = 0
    labels[:, 16:28, 30:58] = 2  # label 2: two parts from frame 3
    labels[3:, 16:28, 42:46] = 0
    divisions = find_divisions(labels, min_frames=3)
    assert [(d.frame, d.label) for d in divisions] == [(1, 1), (3, 2)]
    for division in divisions:
        for part in division.parts:
            assert part.any() and (labels[division.frame][part] == division.label).all()
