"""Time-lapse tracking (core/timelapse.py, api.track_stack): seeds, divisions followed as daughter objects, the
lineage and its export.

With random test weights SAM2's masks are meaningless, so the tracking logic is tested on an oracle session that
tracks like a perfect SAM2: each object follows its ground-truth cell, and a cell that divides stays ONE object
covering both daughters (what SAM2 does). track_timelapse must find each division, end the mother, track the
daughters as new objects, and the exported CTC folder must score TRA = 1 with every division found (traccuracy).
The SAM2 path itself is tested for plumbing on the miniature model."""

import ctc_truth
import numpy as np
import pytest
from ctc_truth import score, write_truth_folder

from napari_sam2.api import Prompt, track_stack
from napari_sam2.core.lineage import build_lineage
from napari_sam2.core.seeding import seed_prompts
from napari_sam2.core.timelapse import track_timelapse
from napari_sam2.errors import InputError
from napari_sam2.io.track_export import write_tracking
from napari_sam2.io.tracking_samples import make_tracking_timelapse


class OracleSession(ctc_truth.OracleSession):
    """The benchmark's oracle (a perfect SAM2 that keeps a dividing cell as one object), recording its runs."""

    def __init__(self, truth, parents):
        super().__init__(truth, parents)
        self.runs = []

    def propagate(self, direction="both", frame_range=None, obj_ids=None):
        self.runs.append((direction, frame_range, obj_ids))
        return super().propagate(direction, frame_range, obj_ids)


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
    seeds = np.ones((32, 32), int)
    with pytest.raises(InputError, match="min_division_frames must be a whole number of 1 or more"):
        track_stack(image, seed_labels=seeds, min_division_frames=0, model="no such model")
    with pytest.raises(InputError, match=r"Unknown automatic seeding option\(s\) \['points_per_sid'\]"):
        track_stack(image, seed="auto", auto_options={"points_per_sid": 4}, model="no such model")


class ScriptedSession(OracleSession):
    """Object 5 as SAM2 might track it: one blob, two parts on frames 2-4, one blob again, two parts on 7-9;
    daughters follow the parts they were prompted with (their masks as given, on every later frame)."""

    def __init__(self):
        blob, parts = np.zeros((10, 20, 30), bool), np.zeros((10, 20, 30), bool)
        blob[:, 5:15, 5:25] = True
        parts[:, 5:15, 5:13] = parts[:, 5:15, 17:25] = True
        split = np.isin(np.arange(10), [2, 3, 4, 7, 8, 9])[:, None, None]
        self.script = np.where(split, parts, blob)
        super().__init__(np.zeros((10, 20, 30), np.int32), {})
        self.masks = {}

    def add_prompts(self, prompts):
        for prompt in prompts:
            self.masks[prompt.obj_id] = prompt.mask
            self.cell_of[prompt.obj_id] = prompt.obj_id
            self.prompted_frames[prompt.obj_id] = (prompt.frame,)

    def _mask(self, obj_id, t):
        if t > self.ended.get(obj_id, self.n_frames):
            return np.zeros(self.frame_size, bool)
        return self.script[t] if obj_id == 5 else self.masks[obj_id]


def test_a_label_that_splits_merges_and_splits_again_is_divided_once():
    session = ScriptedSession()
    result = track_timelapse(session, [Prompt(0, 5, mask=session.script[0])])
    assert result.divisions == {5: (2, (6, 7))}
    assert session.ended == {5: 1}
    assert [run[2] for run in session.runs] == [None, (6, 7)]
    assert not (result.labels[2:] == 5).any() and (result.labels[:2] == 5).any(axis=(1, 2)).all()
    assert result.lineage.parents() == {5: 0, 6: 5, 7: 5}
