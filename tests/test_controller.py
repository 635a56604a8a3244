"""The tracking controller without Qt or napari: runs, their events in order, state, progress, cancel, failures,
sessions and model downloads. A fake session (tests/fake_session.py) stands in for SAM2."""

import threading
import time
from functools import partial

import numpy as np
from checkpoint_server import PAYLOAD, add_model, isolated_cache, server  # noqa: F401  (fixtures)
from fake_session import FakeSession

from napari_sam2._napari.controller import (
    CANCELLING,
    IDLE,
    RUNNING,
    Identity,
    SessionSpec,
    ThreadRunner,
    TrackingController,
    run_inline,
)
from napari_sam2.core.prompts import Prompt
from napari_sam2.errors import InputError

STACK = np.zeros((6, 40, 50), np.uint8)
SPEC = SessionSpec(key=("stack", 0), options=dict(stack=STACK, axis=0, model=None))


class Recorder:
    """Every event of a controller, in order: (name, args)."""

    def __init__(self, controller):
        self.controller = controller
        self.events = []
        for name in ("state_changed", "status_changed", "started", "downloading", "frame_done", "warning",
                     "finished", "failed", "cancelled"):
            getattr(controller.events, name).connect(partial(self._record, name))

    def _record(self, name, *args):
        self.events.append((name, args))

    def names(self, *, skip=("status_changed", "downloading")):
        return [name for name, _ in self.events if name not in skip]

    def of(self, name):
        return [args for event, args in self.events if event == name]


def make_controller(runner=run_inline, delay=0.0, factory=None, **kwargs):
    factory = factory or partial(FakeSession, delay=delay)
    controller = TrackingController(runner=runner, session_factory=factory, **kwargs)
    return controller, Recorder(controller)


def click(frame, obj_id, row=20, col=25, positive=True):
    return Prompt(frame, obj_id, points=[(row, col)], labels=[1 if positive else 0])


def test_a_propagation_emits_its_events_in_order_and_ends_idle():
    controller, recorder = make_controller()
    seen_in_finished = []
    controller.events.finished.connect(lambda kind, done: seen_in_finished.append((controller.state, controller.busy)))
    assert controller.propagate(SPEC, [click(2, 1)])
    names = recorder.names()
    assert names[0] == "state_changed" and names[1] == "started"
    assert names[-2:] == ["state_changed", "finished"]
    assert names.count("frame_done") == 6 + 1  # the prompted slice first, then the 6 slices of the run
    assert recorder.of("started") == [("propagate", 6, "Propagating (both)")]
    assert recorder.of("state_changed") == [(RUNNING,), (IDLE,)]
    assert recorder.of("finished") == [("propagate", 6)]
    assert [args[1:] for args in recorder.of("frame_done")][-1] == (6, 6)
    assert seen_in_finished == [(IDLE, False)], "the state is final when the last event comes"
    assert controller.status == "Done: 6 slice(s)." and controller.last_outcome == "finished"


def test_a_one_slice_run_is_as_consistent_as_a_long_one():
    controller, recorder = make_controller()
    controller.propagate(SPEC, [click(3, 1)], frame_range=(3, 3))
    assert recorder.of("started") == [("propagate", 1, "Propagating (both)")]
    assert recorder.names()[-2:] == ["state_changed", "finished"]
    assert controller.state == IDLE and controller.status == "Done: 1 slice(s)."


class SteppedRunner:
    """Runs a job in a thread but delivers its items only when ``pump`` is called on the test's thread, as Qt
    delivers a worker's signals when the GUI processes events."""

    def __init__(self):
        self.inner = ThreadRunner()

    def __call__(self, job, deliver, done):
        self.inner(job, deliver, done)
        self.inner.thread.join()  # everything is queued, nothing delivered yet

    def pump(self):
        return self.inner.process_events()


def test_events_never_nest_when_a_listener_processes_the_gui_events():
    """napari's progress() processes Qt events in its constructor: a short run used to end inside it, leaving the
    status on 'propagating' and the progress bar open. Items that arrive during an event wait until it is done."""
    runner = SteppedRunner()
    controller, recorder = make_controller(runner)
    during_started = []

    def on_started(kind, total, description):
        runner.pump()  # what progress() does: every queued item arrives now
        during_started.append(recorder.names())

    controller.events.started.connect(on_started)
    controller.propagate(SPEC, [click(3, 1)], frame_range=(3, 3))
    runner.pump()
    assert during_started == [["state_changed", "started"]], "nothing else was emitted inside the started event"
    assert recorder.names()[-2:] == ["state_changed", "finished"]
    assert controller.state == IDLE and controller.status == "Done: 1 slice(s)."


def test_cancel_stops_between_frames_keeps_the_frames_done_and_ends_cancelled():
    runner = ThreadRunner()
    controller, recorder = make_controller(runner, delay=0.05)
    controller.events.frame_done.connect(lambda labels, done, total: controller.cancel() if done == 2 else None)
    controller.propagate(SPEC, [click(0, 1)], direction="forward")
    runner.wait(controller)
    assert CANCELLING in [args[0] for args in recorder.of("state_changed")]
    assert recorder.names()[-2:] == ["state_changed", "cancelled"]
    done = recorder.of("cancelled")[0][0]
    assert 2 <= done <= 3 and len(recorder.of("frame_done")) <= 4
    assert controller.status == f"Cancelled: {done} slice(s) kept." and controller.state == IDLE


def test_cancel_answers_within_a_second_in_a_slice_with_many_objects():
    runner = ThreadRunner()
    controller, recorder = make_controller(runner, delay=0.3)  # 0.3 s per object: 30 objects take 9 s
    prompts = [click(2, obj_id, row=2 + obj_id, col=10) for obj_id in range(1, 31)]
    cancelled_at = []

    def on_frame(labels, done, total):
        if not cancelled_at:
            controller.cancel()
            cancelled_at.append(time.monotonic())

    controller.events.frame_done.connect(on_frame)
    controller.segment(SPEC, prompts, frame=2)
    assert controller.state in (RUNNING, CANCELLING)
    runner.wait(controller, timeout=20)
    assert time.monotonic() - cancelled_at[0] < 1.0
    assert len(recorder.of("frame_done")) <= 3 and recorder.names()[-1] == "cancelled"
    assert controller.status == "Cancelled."


def test_a_failure_is_a_message_and_the_next_action_clears_it():
    def broken(**options):
        raise InputError("The stack is broken: fix it.")

    controller, recorder = make_controller(factory=broken)
    controller.segment(SPEC, [click(2, 1)], frame=2)
    assert recorder.of("failed") == [("The stack is broken: fix it.",)]
    assert recorder.names()[-2:] == ["state_changed", "failed"]
    assert controller.status.startswith("Failed") and controller.state == IDLE
    controller.segment(SPEC, [click(2, 1)], frame=2)
    assert recorder.of("status_changed")[-2] == ("Segmenting slice 2…",), "a new action replaces the failure"


def test_an_unexpected_error_is_described_by_the_given_function():
    def broken(**options):
        raise ZeroDivisionError("oops")

    controller, recorder = make_controller(factory=broken, describe_error=lambda error: f"said: {error}")
    controller.propagate(SPEC, [click(2, 1)])
    assert recorder.of("failed") == [("said: oops",)]


def test_one_run_at_a_time():
    runner = ThreadRunner()
    controller, recorder = make_controller(runner, delay=0.05)
    assert controller.propagate(SPEC, [click(0, 1)])
    assert not controller.propagate(SPEC, [click(0, 1)]) and not controller.segment(SPEC, [click(0, 1)], frame=0)
    assert not controller.remove_object(1)
    runner.wait(controller)
    assert len(recorder.of("started")) == 1


def test_slices_are_segmented_from_their_prompts_and_a_removed_point_keeps_the_session():
    controller, recorder = make_controller()
    first, second = click(2, 1), click(2, 1, row=30, col=30)
    controller.segment(SPEC, [first, second], frame=2, live=True)
    session = controller.session
    (labels, _, _), = recorder.of("frame_done")
    assert labels.obj_ids == (1,) and labels.masks[0, 20, 25] and labels.masks[0, 30, 30]
    controller.segment(SPEC, [first], frame=2, live=True)  # the second point deleted
    labels = recorder.of("frame_done")[-1][0]
    assert labels.masks[0, 20, 25] and not labels.masks[0, 30, 30]
    assert controller.session is session and len(FakeSession.instances) >= 1
    before = len(recorder.of("frame_done"))
    controller.segment(SPEC, [first], frame=2)  # Segment slice: nothing changed, the masks are written again
    again = recorder.of("frame_done")[before:]
    assert len(again) == 1 and np.array_equal(again[0][0].masks, labels.masks)
    controller.segment(SPEC, [], frame=2, live=True)  # every point deleted: the mask goes
    last = recorder.of("frame_done")[-1][0]
    assert last.obj_ids == (1,) and not last.masks.any() and controller.session.obj_ids == ()


def test_empty_masks_and_negative_only_objects_are_explained():
    controller, recorder = make_controller()
    controller.segment(SPEC, [click(2, 1, positive=False)], frame=2)
    assert any("only negative clicks on slice 2" in message for message, in recorder.of("warning"))
    controller.propagate(SPEC, [click(2, 1, positive=False), click(3, 2)])
    assert any("Object 1 has only negative" in message for message, in recorder.of("warning"))

    class Blind(FakeSession):
        def _decode(self, group):
            return np.zeros(self.frame_size, bool)

    controller, recorder = make_controller(factory=Blind)
    controller.segment(SPEC, [click(4, 3)], frame=4)
    assert recorder.of("warning") == [(
        "SAM2 found nothing at these clicks on slice 4 (object 3): try a click nearer the object's centre, or a box.",
    )]


def test_corrections_then_retracking_one_object():
    controller, recorder = make_controller()
    controller.propagate(SPEC, [click(1, 1), click(1, 2, row=5, col=5)])
    session = controller.session
    controller.propagate(SPEC, [click(1, 1), click(1, 2, row=5, col=5), click(4, 1, row=22, col=22)])
    assert recorder.of("started")[-1][0] == "corrections"
    assert session.calls[-1] == ("propagate_corrections", (4,))
    controller.propagate(SPEC, [click(1, 1), click(1, 2, row=5, col=5)], obj_ids=[2], direction="forward")
    assert recorder.of("started")[-1] == ("retrack", 6, "Re-tracking object 2 (forward)")
    assert session.calls[-1] == ("propagate", "forward", None, (2,))
    assert all(labels.obj_ids in ((2,), (1,)) for labels, _, _ in recorder.of("frame_done")[-6:])
    controller.propagate(SPEC, [click(1, 1)], obj_ids=[7])
    assert "Object 7 has no points" in recorder.of("failed")[-1][0]


def test_remove_object_forgets_it_in_the_session():
    controller, _ = make_controller()
    controller.segment(SPEC, [click(1, 1), click(1, 2, row=5, col=5)], frame=1)
    assert controller.remove_object(2)
    assert controller.session.obj_ids == (1,)
    assert ("remove_object", 2) in controller.session.calls


def test_a_new_key_makes_a_new_session_and_close_releases_it():
    controller, _ = make_controller()
    controller.segment(SPEC, [click(1, 1)], frame=1)
    first = controller.session
    other = SessionSpec(key=("stack", 1), options=SPEC.options)
    controller.segment(other, [click(1, 1)], frame=1)
    assert first.closed and controller.session is not first
    second = controller.session
    controller.close()
    assert second.closed and controller.session is None
    assert not controller.segment(other, [click(1, 1)], frame=1), "a closed controller takes no new run"


def test_close_during_a_run_cancels_it_and_releases_the_session_when_it_stops():
    runner = ThreadRunner()
    controller, recorder = make_controller(runner, delay=0.05)
    controller.propagate(SPEC, [click(0, 1)])
    runner.process_events(timeout=1.0)
    controller.close()
    runner.wait(controller)
    assert recorder.names()[-1] == "cancelled"
    assert FakeSession.instances[-1].closed and controller.session is None


def test_abort_ends_the_run_with_its_message_and_nothing_more_is_written():
    runner = ThreadRunner()
    controller, recorder = make_controller(runner, delay=0.05)
    controller.events.frame_done.connect(
        lambda labels, done, total: controller.abort("The labels layer was removed.") if done == 1 else None)
    controller.propagate(SPEC, [click(0, 1)], direction="forward")
    runner.wait(controller)
    assert len(recorder.of("frame_done")) == 1
    assert recorder.of("failed") == [("The labels layer was removed.",)] and recorder.names()[-1] == "failed"


def test_identity_keys_compare_objects_not_ids():
    a, b = np.zeros(3), np.zeros(3)
    assert Identity(a) == Identity(a) and Identity(a) != Identity(b)
    assert ("x", Identity(a)) == ("x", Identity(a))


# ---- models: download progress and the offline message -------------------------------------------------------------


def test_a_download_reports_its_progress_then_the_session_gets_the_file(add_model, isolated_cache):
    add_model("good.pt")
    spec = SessionSpec(key="k", options=dict(stack=STACK, axis=0, model="test_model"))
    controller, recorder = make_controller()
    controller.segment(spec, [click(1, 1)], frame=1)
    progress = recorder.of("downloading")
    assert progress and progress[-1] == ("test_model", len(PAYLOAD), len(PAYLOAD))
    assert all(name == "test_model" and total == len(PAYLOAD) for name, _, total in progress)
    assert [done for _, done, _ in progress] == sorted(done for _, done, _ in progress)
    assert any(status.startswith("Downloading test_model:") for status, in recorder.of("status_changed"))
    assert controller.session.model == str(isolated_cache / "test_model.pt")
    assert recorder.names()[-1] == "finished"


def test_offline_the_message_names_the_widgets_fix(add_model, monkeypatch):
    from checkpoint_server import closed_port_url

    add_model("good.pt")
    monkeypatch.setenv("NAPARI_SAM2_BASE_URL", closed_port_url().rsplit("/", 1)[0])
    spec = SessionSpec(key="k", options=dict(stack=STACK, axis=0, model="test_model"))
    controller, recorder = make_controller(checkpoint_hint="In the widget: Model → checkpoint file….")
    controller.segment(spec, [click(1, 1)], frame=1)
    (message,), = recorder.of("failed")
    assert "refused" in message and message.endswith("In the widget: Model → checkpoint file….")


def test_a_download_stops_when_cancelled(add_model, server, monkeypatch):
    add_model("good.pt")
    from napari_sam2.models import downloads

    monkeypatch.setattr(downloads, "CHUNK_BYTES", 50_000)
    spec = SessionSpec(key="k", options=dict(stack=STACK, axis=0, model="test_model"))
    controller, recorder = make_controller(ThreadRunner())
    controller.events.downloading.connect(lambda name, done, total: controller.cancel())
    slow = threading.Event()

    def slow_down(*args):
        slow.wait(0.05)

    controller.events.downloading.connect(slow_down)
    controller.segment(spec, [click(1, 1)], frame=1)
    controller._runner.wait(controller)
    assert recorder.names()[-1] == "cancelled" and controller.session is None


def test_retracking_one_object_never_touches_the_others_even_if_the_session_names_them():
    class Leaky(FakeSession):
        def propagate(self, direction="both", frame_range=None, obj_ids=None):
            return super().propagate(direction, frame_range, None)  # every object in every result

    controller, recorder = make_controller(factory=Leaky)
    prompts = [click(1, 1), click(1, 2, row=5, col=5)]
    controller.propagate(SPEC, prompts)
    before = len(recorder.of("frame_done"))
    controller.propagate(SPEC, prompts, obj_ids=[2])
    assert [labels.obj_ids for labels, _, _ in recorder.of("frame_done")[before:]] == [(2,)] * 6
