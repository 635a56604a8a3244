"""The track cache (engine.track_cache): a pass made once is replayed, bit for bit, by any tracker with the same
prompts, history and frames, and never when any of them differs. Uses the fast 256-px model."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_sam2 import InputError, Prompt
from napari_sam2.core.frames import StackFrames
from napari_sam2.core.track_store import shared_track_cache
from napari_sam2.core.tracking import TrackingSession
from napari_sam2.engine import Tracker
from napari_sam2.engine.track_cache import TrackCache
from napari_sam2.io.sample_data import make_nuclei_stack

N_FRAMES = 8


@pytest.fixture(scope="module")
def stack():
    return make_nuclei_stack(shape=(N_FRAMES, 96, 128), n_nuclei=4, seed=3)


@pytest.fixture
def frames(stack, fast_model):
    with StackFrames(stack[0], axis=0, image_size=fast_model.image_size, prefetch=0) as f:
        yield f


@pytest.fixture
def tracked(fast_model, monkeypatch):
    """How many object-frames the model tracked from memory (calls of condition_on_memory, one row per object)."""
    counts = [0]
    real = fast_model.condition_on_memory

    def counting(features, memory, *args, **kwargs):
        counts[0] += memory.shape[0]
        return real(features, memory, *args, **kwargs)

    monkeypatch.setattr(fast_model, "condition_on_memory", counting)
    return counts


def clicks(stack, frame=3, n=3):
    labels = stack[1][frame]
    out = {}
    for value in [v for v in np.unique(labels) if v][:n]:
        rows, cols = np.nonzero(labels == value)
        out[int(value)] = [float(cols.mean()), float(rows.mean())]
    return out


def prompt(tracker, points, frame=3):
    for obj_id, xy in points.items():
        tracker.set_prompt(frame, obj_id, points=[xy], labels=[1])


def results(iterator):
    return [(r.frame_idx, r.obj_ids, r.mask_logits, r.low_res_logits, r.object_score_logits, r.obj_ptrs)
            for r in iterator]


def assert_same(a, b):
    assert [(t, ids) for t, ids, *_ in a] == [(t, ids) for t, ids, *_ in b]
    for (_, _, *ta), (_, _, *tb) in zip(a, b):
        for x, y in zip(ta, tb):
            assert torch.equal(x, y)


def test_a_second_tracker_replays_the_same_bits_without_tracking(fast_model, frames, stack, tracked):
    points = clicks(stack)
    plain = Tracker(fast_model, frames)
    prompt(plain, points)
    expected = results(plain.propagate_from_prompts("both"))
    cache = TrackCache()
    first = Tracker(fast_model, frames, track_cache=cache)
    prompt(first, points)
    tracked[0] = 0
    assert_same(results(first.propagate_from_prompts("both")), expected)
    assert tracked[0] == 3 * (N_FRAMES - 1)  # 3 objects, every frame but the prompted one
    assert len(cache) == 6  # one pass per object and direction

    second = Tracker(fast_model, frames, track_cache=cache)
    prompt(second, points)
    tracked[0] = 0
    assert_same(results(second.propagate_from_prompts("both")), expected)
    assert tracked[0] == 0
    # Meta's calls make the same passes (forward, then reverse from the same start): replayed too
    plain_meta = Tracker(fast_model, frames)
    prompt(plain_meta, points)
    expected_meta = results(plain_meta.propagate_both())
    meta = Tracker(fast_model, frames, track_cache=cache)
    prompt(meta, points)
    tracked[0] = 0
    assert_same(results(meta.propagate_both()), expected_meta)
    assert tracked[0] == 0


def test_replayed_memories_serve_later_corrections_exactly(fast_model, frames, stack):
    points = clicks(stack)
    cache = TrackCache()
    made = Tracker(fast_model, frames, track_cache=cache)
    prompt(made, points)
    results(made.propagate_from_prompts("both"))
    replayed = Tracker(fast_model, frames, track_cache=cache)
    plain = Tracker(fast_model, frames)
    fix = [points[min(points)][0] + 4.0, points[min(points)][1] + 3.0]
    outcomes = []
    for tracker in (replayed, plain):
        prompt(tracker, points)
        results(tracker.propagate_from_prompts("both"))
        tracker.add_prompt(6, min(points), points=[fix], labels=[1])
        outcomes.append(results(tracker.repropagate(stop_iou=None)))
    assert_same(*outcomes)
    assert len(cache) == 6  # a re-propagated correction is no pass: nothing more kept


def test_only_what_changed_is_tracked(fast_model, frames, stack, tracked):
    points = clicks(stack, n=3)
    cache = TrackCache()
    first = Tracker(fast_model, frames, track_cache=cache)
    prompt(first, {k: points[k] for k in list(points)[:2]})
    results(first.propagate_from_prompts("forward"))

    # a third object added: the two others replay
    again = Tracker(fast_model, frames, track_cache=cache)
    prompt(again, points)
    tracked[0] = 0
    got = results(again.propagate_from_prompts("forward"))
    assert tracked[0] == N_FRAMES - 1 - 3  # object three alone, frames 4 to 7
    plain = Tracker(fast_model, frames)
    prompt(plain, points)
    assert_same(got, results(plain.propagate_from_prompts("forward")))

    # a moved click, other frames, another range or direction: computed again
    moved = dict(points)
    key = min(points)
    moved[key] = [points[key][0] + 2.0, points[key][1]]
    changed = Tracker(fast_model, frames, track_cache=cache)
    prompt(changed, moved)
    tracked[0] = 0
    results(changed.propagate_from_prompts("forward"))
    assert tracked[0] == N_FRAMES - 1 - 3  # the moved object alone
    shorter = Tracker(fast_model, frames, track_cache=cache)
    prompt(shorter, points)
    tracked[0] = 0
    results(shorter.propagate_from_prompts("forward", last_frame=6))
    assert tracked[0] == 3 * 3
    rolled = np.roll(stack[0], 1, axis=0)
    with StackFrames(rolled, axis=0, image_size=fast_model.image_size, prefetch=0) as other:
        elsewhere = Tracker(fast_model, other, track_cache=cache)
        prompt(elsewhere, points)
        tracked[0] = 0
        results(elsewhere.propagate_from_prompts("forward"))
        assert tracked[0] == 3 * 4


def test_a_pass_cut_short_or_after_a_correction_is_not_kept(fast_model, frames, stack, tracked):
    points = clicks(stack, n=1)
    cache = TrackCache()
    tracker = Tracker(fast_model, frames, track_cache=cache)
    prompt(tracker, points)
    run = tracker.propagate_from_prompts("forward")
    next(run), next(run)
    run.close()
    assert len(cache) == 0
    tracker.clear_tracking()
    results(tracker.propagate())
    assert len(cache) == 1
    # a correction, then Meta's pass over it: the history is a mix, neither looked up nor kept
    (obj_id, xy), = points.items()
    tracker.add_prompt(5, obj_id, points=[[xy[0] + 3, xy[1]]], labels=[1])
    tracked[0] = 0
    results(tracker.propagate())
    assert tracked[0] == N_FRAMES - 1 - 3  # frames 4 to 7, the corrected one overwritten (Meta's semantics)
    assert len(cache) == 1


def test_a_cache_too_small_keeps_nothing_and_changes_nothing(fast_model, frames, stack, tracked):
    points = clicks(stack, n=1)
    cache = TrackCache(max_bytes=1000)
    outcomes = []
    for _ in range(2):
        tracker = Tracker(fast_model, frames, track_cache=cache)
        prompt(tracker, points)
        tracked[0] = 0
        outcomes.append(results(tracker.propagate_from_prompts("both")))
        assert tracked[0] == N_FRAMES - 1
    assert len(cache) == 0
    assert_same(*outcomes)


def test_sessions_share_the_process_wide_track_cache(fast_model, stack, tracked):
    prompts = [Prompt(frame=3, obj_id=obj_id, points=[xy]) for obj_id, xy in clicks(stack, n=2).items()]
    shared_track_cache().clear()
    labels, counts = [], []
    for cache in ("shared", "shared", None):
        with TrackingSession(stack[0], model=fast_model, device="cpu", prefetch=0, track_cache=cache) as session:
            session.set_prompts(prompts)
            tracked[0] = 0
            labels.append({r.frame: r.labels for r in session.propagate("both")})
            counts.append(tracked[0])
    assert counts == [2 * (N_FRAMES - 1), 0, 2 * (N_FRAMES - 1)]
    for other in labels[1:]:
        assert sorted(other) == sorted(labels[0])
        for frame in other:
            np.testing.assert_array_equal(other[frame], labels[0][frame])


def test_passes_kept_on_disk_are_replayed_after_a_restart(fast_model, stack, tracked, tmp_path, monkeypatch):
    """The shared cache writes every pass to its disk store (behind the tracking); a new process, whose memory holds
    nothing, replays them from there: no object-frame tracked, the same labels."""
    monkeypatch.setenv("NAPARI_SAM2_TRACKS", str(tmp_path / "tracks"))
    monkeypatch.setenv("NAPARI_SAM2_TRACKS_MAX_GB", "1")
    cache = shared_track_cache()
    assert cache.store.folder == tmp_path / "tracks" and cache.store.max_bytes == 1 << 30
    prompts = [Prompt(frame=3, obj_id=obj_id, points=[xy]) for obj_id, xy in clicks(stack, n=2).items()]
    labels, counts = [], []
    for _ in range(2):
        cache.clear()  # memory only: as a new process finds it
        with TrackingSession(stack[0], model=fast_model, device="cpu", prefetch=0) as session:
            session.set_prompts(prompts)
            tracked[0] = 0
            labels.append({r.frame: r.labels for r in session.propagate("both")})
            counts.append(tracked[0])
        cache.store.flush()
    assert counts == [2 * (N_FRAMES - 1), 0]
    assert len(cache.store.keys()) == 4 and cache.store_hits == 4  # two objects, two directions
    for frame in labels[0]:
        np.testing.assert_array_equal(labels[1][frame], labels[0][frame])
    monkeypatch.setenv("NAPARI_SAM2_TRACKS_MAX_GB", "0")
    assert shared_track_cache().store is None  # 0: nothing on disk


# ---- the invariant: the track cache never changes a result -------------------------------------------------------

SHORT = 6
_shared_cache = TrackCache()

action = st.one_of(
    st.tuples(st.just("prompt"), st.integers(0, SHORT - 1), st.sampled_from([1, 2]), st.sampled_from([0.0, 2.0])),
    st.tuples(st.just("add"), st.integers(0, SHORT - 1), st.sampled_from([1, 2]), st.sampled_from([0.0, 3.0])),
    st.tuples(st.just("clear"), st.integers(0, SHORT - 1), st.sampled_from([1, 2])),
    st.tuples(st.just("from_prompts"), st.sampled_from(["both", "forward", "backward"])),
    st.tuples(st.just("propagate"), st.booleans()),
    st.tuples(st.just("repropagate"),),
    st.tuples(st.just("end_track"), st.sampled_from([1, 2]), st.integers(0, SHORT - 1)),
)


def _apply(tracker, step, base):
    kind = step[0]
    if kind == "prompt":
        _, frame, obj_id, dx = step
        return [tracker.set_prompt(frame, obj_id, points=[[base[obj_id][0] + dx, base[obj_id][1]]], labels=[1])]
    if kind == "add":
        _, frame, obj_id, dx = step
        return [tracker.add_prompt(frame, obj_id, points=[[base[obj_id][0] + dx, base[obj_id][1] + 1]], labels=[1])]
    if kind == "clear":
        return tracker.clear_prompt(step[1], step[2])
    if kind == "from_prompts":
        return list(tracker.propagate_from_prompts(step[1]))
    if kind == "propagate":
        return list(tracker.propagate(reverse=step[1]))
    if kind == "repropagate":
        return list(tracker.repropagate())
    return tracker.end_track(step[1], step[2])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(action, min_size=2, max_size=7))
def test_any_action_sequence_gives_the_same_bits_with_and_without_the_cache(fast_model, stack, steps):
    """Whatever the user clicks, corrects, deletes and propagates, in any order, a tracker with the (shared, already
    filled) track cache gives what a tracker without one computes, bit for bit, and refuses the same actions.
    The cache is shared by all the sequences, so later ones replay passes earlier ones made (about 15 replays in
    15 sequences here)."""
    base = clicks(stack, n=2)
    base = dict(zip((1, 2), base.values()))
    with StackFrames(stack[0][:SHORT], axis=0, image_size=fast_model.image_size, prefetch=0) as frames:
        cached, plain = Tracker(fast_model, frames, track_cache=_shared_cache), Tracker(fast_model, frames)
        for step in [("prompt", 2, 1, 0.0), ("prompt", 2, 2, 0.0), *steps]:  # two objects, then anything
            outcomes = []
            for tracker in (cached, plain):
                try:
                    outcomes.append(("ok", _apply(tracker, step, base)))
                except InputError as exc:
                    outcomes.append(("refused", str(exc)))
            (kind_a, a), (kind_b, b) = outcomes
            assert kind_a == kind_b, (step, a, b)
            if kind_a == "ok" and a is not None:
                assert_same(results(a), results(b))
            else:
                assert a == b
        for frame in range(SHORT):
            assert_same(results([cached.result_on(frame)]), results([plain.result_on(frame)]))
