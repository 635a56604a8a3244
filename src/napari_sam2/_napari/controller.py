"""The tracking controller: one object that owns a :class:`~napari_sam2.core.tracking.TrackingSession`, runs SAM2 work
(segmenting a slice, propagating, re-tracking) one run at a time, keeps the run's state and progress, and tells
whoever listens through events. Free of Qt and of napari: the napari widget is a thin view that wires these events
to its buttons, a progress bar and a Labels layer; a script or a test drives it the same way.

Events (``controller.events``, psygnal signals), always emitted on the thread that drives the controller and in
this order for one run::

    state_changed("running")
    downloading(name, done_bytes, total_bytes)   # only while a model is fetched, any number of times
    started(kind, total, description)            # once the session is ready; total = distinct frames (0: unknown)
    frame_done(frame_labels, done, total)        # per result; ``done`` counts distinct frames
    state_changed("idle")
    finished(kind, done) | failed(message) | cancelled(done)     # exactly one, always last

``warning(message)`` may come at any time of a run (an object with only negative clicks, a mask that found
nothing); ``status_changed(text)`` follows along with a line for a status bar. When a run ends, ``state`` is "idle"
before the last event is emitted, so a listener may start the next run from it.

Threads: the work runs through a *runner* ``runner(job, deliver, done)``: it runs ``job(post)`` (a generator)
somewhere, and calls ``deliver(item)`` for each item the job yields or posts, then ``done(error_or_None)`` once, all
on the controller's thread. ``run_inline`` does it all at once (scripts, tests); :class:`ThreadRunner` uses a
plain thread and a queue that its owner pumps; the napari widget uses ``napari_sam2._napari._qt.jobs.qt_runner``.
Items that arrive while the controller is still emitting an event (a listener that processes the GUI's events,
as napari's ``progress`` does) wait until that event is done: events never nest, so the state is always the one
the events so far describe.

Run kinds: "live" (the prompts changed: the changed (slice, object) pairs are decoded), "slice" (*Segment slice*:
the same, and the masks of every object prompted on the shown slice are written again), "propagate" (a full run
from the prompts), "corrections" (re-tracking from the slices prompted since the last run), "retrack" (a full run
of some objects only), "precompute" (the image features of every slice stored on disk: ``frame_done`` then carries
None instead of labels), "track" (time-lapse cell tracking: a full run, then each division followed by two daughter
objects with new ids; ``tracked(TimelapseTracks)`` comes before the run ends), "find" (SAM2's automatic masks on one
slice: ``frame_done`` carries None per batch of grid points decoded, ``objects_found(frame, labels)``, an (H, W)
label image, comes before the run ends; nothing is written).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Sequence

import numpy as np
from psygnal import Signal, SignalGroup

from ..core.frame_labels import FrameLabels
from ..core.prompts import Prompt, negative_only_pairs, negative_only_text
from ..errors import CheckpointError, InputError, Sam2Error
from ..models import registry as models

logger = logging.getLogger(__name__)

IDLE, RUNNING, CANCELLING = "idle", "running", "cancelling"
LIVE, SLICE, PROPAGATE, CORRECTIONS, RETRACK = "live", "slice", "propagate", "corrections", "retrack"
PRECOMPUTE, TRACK, FIND = "precompute", "track", "find"
SLICE_KINDS = (LIVE, SLICE)
DOWNLOAD_REPORT_S = 0.1  # at most ~10 download progress events a second reach the GUI


class ControllerEvents(SignalGroup):
    state_changed = Signal(str)
    status_changed = Signal(str)
    started = Signal(str, int, str)
    downloading = Signal(str, int, object)
    frame_done = Signal(object, int, int)
    warning = Signal(str)
    finished = Signal(str, int)
    objects_found = Signal(int, object)
    tracked = Signal(object)
    failed = Signal(str)
    cancelled = Signal(int)


@dataclass(frozen=True)
class SessionSpec:
    """What a session is made from: ``options`` are TrackingSession's keyword arguments (stack, axis, model,
    device, channel_axis, channels, intensity_range, fixed_indices); a new ``key`` (compared with ``==``) means a new
    session (another image, axis, model, ...)."""

    key: Hashable
    options: dict


class Identity:
    """Wraps an object so that it compares by identity in a session key (a layer, an array, a loaded model) and stays
    alive as long as the key: unlike ``id(obj)``, which Python reuses once the object is gone."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = getattr(obj, "__wrapped__", obj)  # a proxy (e.g. napari's PublicOnlyProxy) is its object

    def __eq__(self, other):
        return isinstance(other, Identity) and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)

    def __repr__(self):
        return f"Identity({type(self.obj).__name__} at {id(self.obj):#x})"


# ---- items a job sends to the controller's thread ------------------------------------------------------------


@dataclass(frozen=True)
class _SessionReady:
    session: Any
    key: Hashable


@dataclass(frozen=True)
class _Started:
    kind: str
    total: int
    description: str


@dataclass(frozen=True)
class _Download:
    name: str
    done: int
    total: int | None


@dataclass(frozen=True)
class _Warning:
    message: str


@dataclass(frozen=True)
class _Found:
    frame: int
    labels: Any


@dataclass(frozen=True)
class _Tracked:
    result: Any


@dataclass(frozen=True)
class _FrameProgress:
    """A frame done without labels to write (precomputation)."""

    frame: int


class RunCancelled(Exception):
    """Raised inside a job (e.g. from a download's progress callback) to stop it because the run was cancelled."""


@dataclass
class _Run:
    kind: str
    stop: threading.Event = field(default_factory=threading.Event)
    total: int = 0
    frames: set = field(default_factory=set)
    started: bool = False
    abort_message: str | None = None
    post: Callable | None = None  # the job's way to send an item from inside a call that cannot yield


# ---- runners ----------------------------------------------------------------------------------------------------


def run_inline(job, deliver, done) -> None:
    """Run ``job`` on the calling thread; every event is emitted before this returns."""
    error = None
    try:
        for item in job(deliver):
            deliver(item)
    except Exception as caught:  # handed to the controller, which turns it into a message
        error = caught
    done(error)


class ThreadRunner:
    """Runs each job in a plain thread; ``process_events`` (called by the thread that owns the controller) delivers
    what the job sent. For scripts and tests without a GUI event loop."""

    def __init__(self):
        self._queue: "queue.Queue[Callable[[], None]]" = queue.Queue()
        self.thread: threading.Thread | None = None

    def __call__(self, job, deliver, done) -> None:
        def work():
            error = None
            try:
                for item in job(lambda posted: self._queue.put(lambda: deliver(posted))):
                    self._queue.put(lambda item=item: deliver(item))
            except Exception as caught:
                error = caught
            self._queue.put(lambda: done(error))

        self.thread = threading.Thread(target=work, name="napari-sam2 job", daemon=True)
        self.thread.start()

    def process_events(self, timeout: float = 0.0) -> int:
        """Deliver what arrived (waiting up to ``timeout`` seconds for the first item); returns how many."""
        count = 0
        try:
            callback = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return 0
        while True:
            callback()
            count += 1
            try:
                callback = self._queue.get_nowait()
            except queue.Empty:
                return count

    def wait(self, controller: "TrackingController", timeout: float = 60.0) -> None:
        """Pump events until ``controller`` is idle."""
        deadline = time.monotonic() + timeout
        while controller.busy:
            if time.monotonic() > deadline:
                raise TimeoutError("the run did not end in time")
            self.process_events(timeout=0.05)


def default_error_message(error: BaseException) -> str:
    """A user-facing message for an error (the napari widget passes a richer one)."""
    if isinstance(error, Sam2Error):
        return str(error)
    return f"SAM2 stopped on an unexpected error ({type(error).__name__}: {error})."


def _create_session(**options):
    from ..core.tracking import TrackingSession  # torch is imported only when a session is made

    return TrackingSession(**options)


# ---- the controller -----------------------------------------------------------------------------------------------


class TrackingController:
    """Owns a tracking session and runs SAM2 work on it, one run at a time, with events (see the module's doc).

    ``runner``: how a job runs (see the module's doc; default: inline). ``session_factory(**options)`` makes a
    session (default: TrackingSession). ``describe_error(error) -> str``: the message of a failure.
    ``checkpoint_hint``: appended to the message when a model cannot be fetched (e.g. what to do in the GUI).
    """

    def __init__(
        self,
        runner=run_inline,
        session_factory: Callable[..., Any] = _create_session,
        describe_error: Callable[[BaseException], str] = default_error_message,
        checkpoint_hint: str = "",
    ):
        self.events = ControllerEvents()
        self._runner = runner
        self._session_factory = session_factory
        self._describe_error = describe_error
        self._checkpoint_hint = checkpoint_hint
        self._session = None
        self._session_key: Hashable | None = None
        self._run: _Run | None = None
        self._state = IDLE
        self._status = ""
        self._closed = False
        self._dispatching = False
        self._waiting: list[Callable[[], None]] = []
        self.last_outcome: str | None = None  # "finished", "failed" or "cancelled"

    # ---- what listeners read ----

    @property
    def state(self) -> str:
        return self._state

    @property
    def busy(self) -> bool:
        return self._run is not None

    @property
    def kind(self) -> str | None:
        """The kind of the run in progress (None when idle)."""
        return None if self._run is None else self._run.kind

    @property
    def session(self):
        """The current session (None before the first run, or after the image, model, ... changed)."""
        return self._session

    @property
    def progress(self) -> tuple[int, int]:
        """(distinct frames done, total) of the run in progress; (0, 0) when idle."""
        if self._run is None:
            return 0, 0
        return len(self._run.frames), self._run.total

    @property
    def status(self) -> str:
        return self._status

    @status.setter
    def status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            self.events.status_changed.emit(text)

    # ---- actions ----

    def segment(self, spec: SessionSpec, prompts: Sequence[Prompt], frame: int, live: bool = False) -> bool:
        """Make the session hold exactly ``prompts`` (every prompt of the stack): the changed (slice, object) pairs
        are decoded and written; without ``live``, the masks of every object prompted on ``frame`` are written
        again too. Returns False (and does nothing) while another run is in progress."""
        prompts = list(prompts)
        kind = LIVE if live else SLICE
        if not self._begin(kind, spec, f"Segmenting slice {frame}…"):
            return False
        self._start(lambda session_steps, run: self._segment_steps(session_steps, prompts, frame, live))
        return True

    def propagate(
        self,
        spec: SessionSpec,
        prompts: Sequence[Prompt],
        direction: str = "both",
        frame_range: tuple[int, int] | None = None,
        obj_ids: Sequence[int] | None = None,
    ) -> bool:
        """Track the prompted objects through the stack: after a first run, re-track from the slices prompted since
        (corrections); with ``obj_ids``, a full run of only these objects. Returns False while another run is in
        progress."""
        prompts = list(prompts)
        obj_ids = None if obj_ids is None else tuple(int(i) for i in obj_ids)
        kind = RETRACK if obj_ids else PROPAGATE
        if not self._begin(kind, spec, "Preparing…"):
            return False
        self._warn_negative_only(prompts, obj_ids=obj_ids)
        self._start(lambda session_steps, run: self._propagation_steps(
            session_steps, run, prompts, direction, frame_range, obj_ids))
        return True

    def precompute(self, spec: SessionSpec) -> bool:
        """Compute the image features of every slice not yet stored and store them on disk, so that clicks and runs
        on these slices, now and in later sessions, skip the image encoder. Returns False while another run is in
        progress."""
        if not self._begin(PRECOMPUTE, spec, "Preparing…"):
            return False
        self._start(lambda session_steps, run: self._precompute_steps(session_steps))
        return True

    def track_cells(self, spec: SessionSpec, prompts: Sequence[Prompt], divisions: bool = True) -> bool:
        """Time-lapse tracking: every prompted object tracked from its prompts, then, with ``divisions``, each
        division followed (core.timelapse); ``frame_done`` carries each frame's objects (daughters under new ids, a
        divided mother's empty masks after her division), ``tracked`` the TimelapseTracks. Returns False while
        another run is in progress."""
        prompts = list(prompts)
        if not self._begin(TRACK, spec, "Preparing…"):
            return False
        self._warn_negative_only(prompts)
        self._start(lambda session_steps, run: self._track_steps(session_steps, run, prompts, divisions))
        return True

    def find_objects(self, spec: SessionSpec, frame: int, options: dict | None = None) -> bool:
        """SAM2's automatic mask generator on slice ``frame`` (core.timelapse.automatic_seeds with ``options``):
        ``objects_found(frame, labels)``. Returns False while another run is in progress."""
        if not self._begin(FIND, spec, f"Finding objects on slice {frame}…"):
            return False
        self._start(lambda session_steps, run: self._find_steps(session_steps, run, frame, dict(options or {})))
        return True

    def remove_object(self, obj_id: int) -> bool:
        """Forget an object's prompts and masks in the session (the caller removes its points and labels). Returns
        False while a run is in progress."""
        if self.busy:
            return False
        if self._session is not None:
            self._session.remove_object(int(obj_id))
        return True

    def cancel(self) -> None:
        """Stop the run at the next result (a frame, or one object of a slice); results so far stay."""
        run = self._run
        if run is None or run.stop.is_set():
            return
        run.stop.set()
        self._set_state(CANCELLING)
        self.status = "Cancelling…"

    def abort(self, message: str) -> None:
        """Stop the run because it cannot go on (e.g. its layer was removed): it ends with ``failed(message)``."""
        run = self._run
        if run is None:
            return
        if run.abort_message is None:
            run.abort_message = message
        self.cancel()
        self.status = "Stopping…"

    def forget_session(self) -> None:
        """Release the session now (or when the run in progress ends); the next run makes a new one."""
        if self.busy:
            self._session_key = None  # replaced at the next run
            return
        self._release_session()

    def close(self) -> None:
        """Cancel any run and release the session and its threads (once the run has stopped). The controller
        accepts no new run afterwards."""
        self._closed = True
        if self.busy:
            self.cancel()  # the session is released when the job ends
        else:
            self._release_session()

    # ---- the run's life, on the controller's thread ----

    def _begin(self, kind: str, spec: SessionSpec, status: str) -> bool:
        if self._closed or self._run is not None:
            return False
        if self._session is not None and spec.key != self._session_key:
            self._release_session()
        self._spec = spec
        self._run = _Run(kind)
        self.last_outcome = None
        self.status = status
        self._set_state(RUNNING)
        return True

    def _start(self, steps: Callable) -> None:
        run, spec = self._run, self._spec
        session, hint = self._session, self._checkpoint_hint
        factory = self._session_factory

        def job(post):
            def session_steps():
                return (yield from _open_session(session, spec, factory, run, post, hint))

            run.post = post
            iterator = steps(session_steps, run)
            try:
                for item in iterator:
                    yield item
                    if run.stop.is_set():
                        return
            finally:
                iterator.close()

        self._runner(job, lambda item: self._dispatch(lambda: self._deliver(run, item)),
                     lambda error: self._dispatch(lambda: self._done(run, error)))

    def _dispatch(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` now, or after the event being emitted (events never nest)."""
        if self._dispatching:
            self._waiting.append(callback)
            return
        self._dispatching = True
        try:
            callback()
            while self._waiting:
                self._waiting.pop(0)()
        finally:
            self._dispatching = False
            self._waiting.clear()

    def _deliver(self, run: _Run, item) -> None:
        if run is not self._run:
            return  # a late item of a run that already ended
        if isinstance(item, _SessionReady):
            if self._closed or (self._session is not None and self._session is not item.session):
                item.session.close()
                return
            self._session, self._session_key = item.session, item.key
        elif isinstance(item, _Download):
            if not run.stop.is_set():
                self.status = _download_text(item)
            self.events.downloading.emit(item.name, item.done, item.total)
        elif isinstance(item, _Started):
            run.kind, run.total, run.started = item.kind, item.total, True
            if not run.stop.is_set():
                self.status = f"{item.description}…"
            self.events.started.emit(item.kind, item.total, item.description)
        elif isinstance(item, _Warning):
            self.events.warning.emit(item.message)
        elif isinstance(item, _Found):
            self.events.objects_found.emit(item.frame, item.labels)
        elif isinstance(item, _Tracked):
            self.events.tracked.emit(item.result)
        elif isinstance(item, (FrameLabels, _FrameProgress)):
            if run.abort_message is not None:
                return  # the run's target is gone: nothing more is written
            run.frames.add(item.frame)
            run.total = max(run.total, len(run.frames)) if run.total else 0
            done = len(run.frames)
            if run.total and not run.stop.is_set():
                self.status = f"{done} / {run.total} {'batches of points' if run.kind == FIND else 'slices'}"
            self.events.frame_done.emit(item if isinstance(item, FrameLabels) else None, done, run.total)

    def _done(self, run: _Run, error: BaseException | None) -> None:
        if run is not self._run:
            return
        self._run = None
        done = len(run.frames)
        if error is not None and not isinstance(error, (RunCancelled, GeneratorExit)):
            if not isinstance(error, Sam2Error):
                logger.error("napari-sam2 run failed", exc_info=error)
            message = run.abort_message or self._describe_error(error)
        else:
            message = run.abort_message
        if self._closed:
            self._release_session()
        self._set_state(IDLE)
        if message is not None:
            self.last_outcome = "failed"
            self.status = "Failed: see the notification."
            self.events.failed.emit(message)
        elif run.stop.is_set() or error is not None:
            self.last_outcome = "cancelled"
            kept = run.kind not in (*SLICE_KINDS, FIND)
            self.status = f"Cancelled: {done} slice(s) kept." if kept else "Cancelled."
            self.events.cancelled.emit(done)
        else:
            self.last_outcome = "finished"
            if run.kind in SLICE_KINDS:
                self.status = ""
            elif run.kind == PRECOMPUTE:
                self.status = f"Image features of {done} slice(s) stored: runs on them skip the image encoder."
            elif run.kind == FIND:
                self.status = ""
            else:
                self.status = f"Done: {done} slice(s)."
            self.events.finished.emit(run.kind, done)

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.events.state_changed.emit(state)

    def _release_session(self) -> None:
        session, self._session, self._session_key = self._session, None, None
        if session is not None:
            session.close()

    def _warn_negative_only(self, prompts, frame: int | None = None, obj_ids=None) -> None:
        """A warning per (slice, object) whose prompts there are only negative clicks: SAM2 finds nothing there."""
        for pair_frame, obj_id in negative_only_pairs(prompts):
            if frame is not None and pair_frame != frame:
                continue
            if obj_ids is not None and obj_id not in obj_ids:
                continue
            self.events.warning.emit(_negative_only_text(obj_id, pair_frame))

    # ---- the jobs, run by the runner (in a worker thread) ----

    def _segment_steps(self, session_steps, prompts, frame: int, live: bool) -> Iterator:
        session = yield from session_steps()
        yield _Started(LIVE if live else SLICE, 0, f"Segmenting slice {frame}")
        prompted = _pairs(prompts)
        negative_only = set(negative_only_pairs(prompts))
        written_here = set()
        for update in prompt_updates(session, prompts):
            yield update
            yield from _empty_mask_warnings(update, prompted, negative_only)
            if update.frame == frame:
                written_here.update(update.obj_ids)
        if not live:
            on_frame = {obj_id for pair_frame, obj_id in prompted if pair_frame == frame} - written_here
            if on_frame:
                current = session.frame_labels(frame)
                keep = tuple(obj_id for obj_id in current.obj_ids if obj_id in on_frame)
                if keep:
                    masks = np.stack([current.mask(obj_id) for obj_id in keep])
                    again = FrameLabels(frame, keep, masks)
                    yield again
                    yield from _empty_mask_warnings(again, prompted, negative_only)

    def _precompute_steps(self, session_steps) -> Iterator:
        session = yield from session_steps()
        yield _Started(PRECOMPUTE, session.n_frames, "Precomputing image features")
        for frame in session.precompute_features():
            yield _FrameProgress(frame)

    def _find_steps(self, session_steps, run, frame: int, options: dict) -> Iterator:
        from ..core.timelapse import automatic_seeds
        from ..engine.auto_masks import AutomaticMaskGenerator

        session = yield from session_steps()
        batches = AutomaticMaskGenerator(session.model, **options).num_batches(session.frame_size)
        yield _Started(FIND, batches, f"Finding objects on slice {frame}")

        def batch_done(done: int, total: int) -> None:  # from inside the generator: post, and stop on Cancel
            run.post(_FrameProgress(done - 1))
            if run.stop.is_set():
                raise RunCancelled()

        yield _Found(frame, automatic_seeds(session, frame, progress=batch_done, **options))

    def _track_steps(self, session_steps, run, prompts, divisions: bool) -> Iterator:
        from ..core.timelapse import RunPlanned, timelapse_steps

        session = yield from session_steps()
        updates = []
        for update in prompt_updates(session, prompts):
            updates.append(update)
            if run.stop.is_set():
                return
        steps = timelapse_steps(session, (), divisions=divisions)
        yield _Started(TRACK, session.n_frames, "Tracking cells" + (" and divisions" if divisions else ""))
        yield from updates
        try:
            while True:
                try:
                    item = next(steps)
                except StopIteration as end:
                    yield _Tracked(end.value)
                    return
                if not isinstance(item, RunPlanned):
                    yield item
        finally:
            steps.close()  # a cancel: the session's propagation stops with it

    def _propagation_steps(self, session_steps, run, prompts, direction, frame_range, obj_ids) -> Iterator:
        missing = sorted(set(obj_ids or ()) - {obj_id for _, obj_id in _pairs(prompts)})
        if missing:
            raise InputError(f"Object {missing[0]} has no points or boxes to track it from: click on it first.")
        session = yield from session_steps()
        updates = []
        for update in prompt_updates(session, prompts):  # one (slice, object) at a time: a cancel stops between
            updates.append(update)
            if run.stop.is_set():
                return
        if obj_ids:
            propagation = session.propagate(direction, frame_range, obj_ids=list(obj_ids))
            kind = RETRACK
            names = ", ".join(str(i) for i in obj_ids)
            description = f"Re-tracking object {names} ({direction})"
        elif session.has_propagated and session.pending_frames:
            frames = ", ".join(str(f) for f in session.pending_frames)
            propagation = session.propagate_corrections()
            kind, description = CORRECTIONS, f"Re-tracking from corrected slice(s) {frames}"
        else:
            propagation = session.propagate(direction, frame_range)
            kind, description = PROPAGATE, f"Propagating ({direction})"
        try:
            yield _Started(kind, int(propagation.total), description)
            yield from updates
            for result in propagation:
                if obj_ids:  # re-tracking some objects never touches the others' labels
                    result = only_objects(result, obj_ids)
                    if result is None:
                        continue
                yield result
        finally:
            propagation.close()


# ---- helpers shared by the jobs -------------------------------------------------------------------------------------


def _open_session(session, spec: SessionSpec, factory, run: _Run, post, hint: str):
    """The run's session: the current one, or a new one (fetching the model first, with progress)."""
    if session is not None:
        return session
    options = dict(spec.options)
    model = options.get("model")
    if isinstance(model, str):
        options["model"] = str(_fetch_model(model, run, post, hint))
    if run.stop.is_set():
        raise RunCancelled()
    session = factory(**options)
    yield _SessionReady(session, spec.key)
    frames = getattr(session, "frames", None)
    if frames is not None:
        _ = frames.intensity_ranges  # computed here, on the worker thread, once per session
        if getattr(frames, "saturation_message", None):
            yield _Warning(frames.saturation_message)  # SAM2 may be shown nothing: say so in napari
    return session


def _fetch_model(name: str, run: _Run, post, hint: str):
    """The checkpoint file of ``name`` (a path, a registered or an official name), downloading an official one
    that is not cached yet; the download reports its progress through ``post`` and stops on cancel."""
    last = [0.0]

    def progress(done: int, total: int | None) -> None:
        if run.stop.is_set():
            raise RunCancelled()
        now = time.monotonic()
        if now - last[0] >= DOWNLOAD_REPORT_S or (total is not None and done >= total):
            last[0] = now
            post(_Download(name, int(done), None if total is None else int(total)))

    try:
        return models.model_path(name, progress=progress)
    except CheckpointError as error:
        if hint and hint not in str(error):
            raise CheckpointError(f"{error} {hint}") from error
        raise


def prompt_updates(session, prompts) -> Iterator[FrameLabels]:
    """The session's results as it is made to hold exactly ``prompts``, one changed (slice, object) pair at a time.
    No prompts at all: every prompted pair is cleared (an all-False mask) and its object forgotten."""
    if prompts:
        yield from session.prompt_updates(prompts)
        return
    height, width = session.frame_size
    for obj_id, frames in sorted(dict(session.prompted_frames).items()):
        for frame in frames:
            yield FrameLabels(int(frame), (int(obj_id),), np.zeros((1, height, width), bool))
        session.remove_object(int(obj_id))


def only_objects(result: FrameLabels, obj_ids) -> FrameLabels | None:
    """``result`` restricted to ``obj_ids`` (None when it names none of them)."""
    keep = [i for i, obj_id in enumerate(result.obj_ids) if obj_id in obj_ids]
    if len(keep) == len(result.obj_ids):
        return result
    if not keep:
        return None
    return FrameLabels(result.frame, tuple(result.obj_ids[i] for i in keep), result.masks[keep])


def _pairs(prompts) -> set[tuple[int, int]]:
    return {(prompt.frame, prompt.obj_id) for prompt in prompts}


def _negative_only_text(obj_id: int, frame: int) -> str:
    return negative_only_text(obj_id, frame, frame_word="slice")


def empty_mask_text(frame: int, obj_id: int) -> str:
    return (
        f"SAM2 found nothing at these clicks on slice {frame} (object {obj_id}): try a click nearer the object's "
        "centre, or a box."
    )


def _empty_mask_warnings(update: FrameLabels, prompted, negative_only) -> Iterator[_Warning]:
    """Why a prompted object's mask on a slice is empty: only negative clicks there, or SAM2 found nothing."""
    for obj_id, mask in zip(update.obj_ids, update.masks):
        pair = (update.frame, obj_id)
        if pair not in prompted or mask.any():
            continue
        if pair in negative_only:
            yield _Warning(_negative_only_text(obj_id, update.frame))
        else:
            yield _Warning(empty_mask_text(update.frame, obj_id))


def _download_text(item: _Download) -> str:
    done_mb = item.done / 1e6
    if item.total:
        return f"Downloading {item.name}: {done_mb:.0f} / {item.total / 1e6:.0f} MB ({100 * item.done // item.total} %)"
    return f"Downloading {item.name}: {done_mb:.0f} MB"


