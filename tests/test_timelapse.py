"""Time-lapse tracking (core/timelapse.py, api.track_stack): seeds, divisions followed as daughter objects, the
lineage and its export.

With random test weights SAM2's masks are meaningless, so the tracking logic is tested on an oracle session that
tracks like a perfect SAM2: each object follows its ground-truth cell, and a cell that divides stays ONE object
covering both daughters (what SAM2 does). track_timelapse must find each division, end the mother, track the
daughters as new objects, and the exported CTC folder must score TRA = 1 with every division found (traccuracy).
The SAM2 path itself is tested for plumbing on the miniature model."""

import numpy as np
import pytest
from ctc_truth import score, write_truth_folder

from napari_sam2.api import Prompt, track_stack
from napari_sam2.core.frame_labels import FrameLabels
from napari_sam2.core.lineage import build_lineage
from napari_sam2.core.seeding import seed_prompts
from napari_sam2.core.timelapse import track_timelapse
from napari_sam2.errors import InputError
from napari_sam2.io.track_export import write_tracking
from napari_sam2.io.tracking_samples import make_tracking_timelapse


class OracleRun:
    def __init__(self, results, total):
        self._results, self.total = iter(results), total

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._results)


class OracleSession:
    """TrackingSession's contract, tracking from the ground truth: an object prompted by a mask follows the
    ground-truth cell it overlaps most on that frame, together with all that cell's descendants."""

    def __init__(self, truth, parents):
        self.truth, self.parents = truth, parents
        self.n_frames, self.frame_size = truth.shape[0], truth.shape[1:]
        self.cell_of: dict[int, int] = {}  # obj_id -> ground-truth label
        self.prompted: dict[int, tuple[int, ...]] = {}
        self.ended: dict[int, int] = {}
        self.runs = []

    @property
    def prompted_frames(self):
        return self.prompted

    def add_prompts(self, prompts):
        for prompt in prompts:
            values, counts = np.unique(self.truth[prompt.frame][prompt.mask], return_counts=True)
            self.cell_of[prompt.obj_id] = int(values[np.argmax(counts * (values > 0))])
            self.prompted[prompt.obj_id] = self.prompted.get(prompt.obj_id, ()) + (prompt.frame,)

    def end_object(self, obj_id, last_frame):
        self.ended[obj_id] = last_frame

    def propagate(self, direction="both", frame_range=None, obj_ids=None):
        first, last = frame_range or (0, self.n_frames - 1)
        objects = sorted(obj_ids or self.cell_of)
        self.runs.append((direction, (first, last), tuple(objects)))
        start = min(min(self.prompted[o]) for o in objects)
        frames = range(start if direction == "forward" else first, last + 1)
        return OracleRun((self._labels(t, objects) for t in frames), len(frames))

    def _labels(self, t, objects):
        masks = np.stack([self._mask(obj_id, t) for obj_id in objects])
        return FrameLabels(t, tuple(objects), masks)

    def _mask(self, obj_id, t):
        if t > self.ended.get(obj_id, self.n_frames):
            return np.zeros(self.frame_size, bool)
        cells = {self.cell_of[obj_id]}
        for _ in range(4):
            cells |= {d for d, m in self.parents.items() if m in cells}
        return np.isin(self.truth[t], list(cells))


@pytest.fixture(scope="module")
def sample():
    _, truth, parents = make_tracking_timelapse()
    return truth, parents


def test_divisions_are_followed_and_the_export_scores_perfectly(sample, tmp_path):
    truth, parents = sample
    session = OracleSession(truth, parents)
    seeds = seed_prompts(truth[0], 0, len(truth), truth.shape[1:])  # the cells of frame 0, ids = their labels
    progress = []
    result = track_timelapse(session, seeds, progress=lambda done, total: progress.append((done, total)))
    mothers = {m for m in parents.values()}
    assert set(result.divisions) == mothers  # each dividing cell found, nothing else
    for mother, (frame, daughters) in result.divisions.items():
        daughters_of = [d for d, m in parents.items() if m == mother]
        assert frame == min(t for t in range(len(truth)) if np.isin(truth[t], daughters_of).any())
        assert not (result.labels[frame:] == mother).any()  # the mother ends before the division
        assert all((result.labels[frame] == d).any() for d in daughters)
        assert session.ended[mother] == frame - 1
    assert {p for _, p in result.lineage.graph.items() for p in p} >= mothers
    done = [d for d, _ in progress]
    assert done == sorted(done) and progress[-1][0] == progress[-1][1]
    assert [run[0] for run in session.runs] == ["both", "forward", "forward"]

    truth_folder = write_truth_folder(truth, parents, tmp_path / "gt")
    written = write_tracking(result.labels, result.lineage, tmp_path / "out")
    assert [p.name for p in written] == ["RES", "tracks.geff", "tracks.csv", "flags.csv"]
    ctc, divisions = score(truth_folder, tmp_path / "out" / "RES")
    assert ctc["TRA"] == 1.0 and ctc["DET"] == 1.0
    assert divisions["Division F1"] == 1.0


def test_without_divisions_a_dividing_cell_stays_one_object(sample):
    truth, parents = sample
    session = OracleSession(truth, parents)
    result = track_timelapse(session, seed_prompts(truth[0], 0, len(truth), truth.shape[1:]), divisions=False)
    assert result.divisions == {} and len(session.runs) == 1
    assert set(np.unique(result.labels)) == {0, *np.unique(truth[0][truth[0] > 0]).tolist()}


def test_a_mother_with_prompts_after_the_split_is_not_divided(sample):
    """The user's prompts say it is one object there: the division is left alone."""
    truth, parents = sample
    session = OracleSession(truth, parents)
    late = [Prompt(len(truth) - 1, 1, mask=np.isin(truth[-1], [7, 8]))]
    result = track_timelapse(session, seed_prompts(truth[0], 0, len(truth), truth.shape[1:]) + late)
    assert 1 not in result.divisions and 2 in result.divisions


def test_track_stack_plumbing_on_sam2(mini_model, sample, tmp_path):
    truth, _ = sample
    image, _, _ = make_tracking_timelapse(shape=(16, 64, 80), seed=1)
    seeds = np.zeros(image.shape[1:], np.int32)
    seeds[10:30, 10:30], seeds[35:55, 40:70] = 4, 11
    progress = []
    result = track_stack(image, model=mini_model, seed_labels=seeds, progress=lambda *a: progress.append(a))
    assert result.labels.shape == image.shape and result.labels.dtype == np.int32
    assert set(np.unique(result.labels)) - {0} <= {4, 11} | {d for _, ds in result.divisions.values() for d in ds}
    present = set(np.unique(result.labels).tolist())
    rebuilt = build_lineage(result.labels, {d: m for m, (_, ds) in result.divisions.items() for d in ds
                                            if d in present}, infer_divisions=False)
    np.testing.assert_array_equal(rebuilt.tracks, result.lineage.tracks)
    assert progress and progress[-1][0] == progress[-1][1]


def test_track_stack_bad_input_before_any_model(sample):
    image = np.zeros((5, 32, 32), np.uint16)
    with pytest.raises(InputError, match="seed must be None or 'auto'"):
        track_stack(image, seed="everything", model="no such model")
    with pytest.raises(InputError, match="with seed='auto'"):
        track_stack(image, seed_labels=np.ones((32, 32), int), auto_options={"points_per_side": 8},
                    model="no such model")
    with pytest.raises(InputError, match="No prompts given"):
        track_stack(image, model="no such model")
