"""The SAM2 dock widget: click on an object, see its mask, propagate it through the stack.

The widget is a thin view over :class:`napari_sam2._napari.controller.TrackingController`, which owns the session and the
run (its state, progress and events; the model runs in a worker thread). The widget reads the prompts from its
layers, asks the controller to act, and turns the controller's events into enabled / disabled controls, a status
line, a progress bar and writes into the Labels layer (through a ``LabelsRun``, which locks the layer while the run
writes and commits the run as one undo step).

Everything the widget connects (controller events, viewer and layer events, key bindings) is recorded and released
when the widget is closed or its dock removed; the session and its threads go with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, SpinBox
from napari.layers import Image
from napari.utils import progress
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QEvent, QObject, QTimer

from ...core.prompts import DIRECTIONS, MAX_OBJ_ID
from ...errors import InputError
from ...models.registry import DEFAULT_MODEL, MODELS, cached_path, local_models
from ..controller import CANCELLING, SLICE_KINDS, Identity, SessionSpec, TrackingController
from ..labels_writer import LabelsRun, check_ids_fit_layer, largest_id, remove_object_labels
from ..layer_prompts import OBJ_ID, LayerPrompts, prompts_from_layers, to_image_data
from ..prompt_layers import (
    FOR_IMAGE,
    ROLE,
    PromptLayers,
    find_or_create_prompt_layers,
    object_colour,
    set_current_object,
    style_points,
    toggle_next_polarity,
)
from ..stack_plane import (
    StackPlane,
    axis_name,
    channel_options,
    default_frame_axis,
    frame_axis_choices,
    layer_array,
    stack_plane,
)
from .jobs import qt_runner, user_message
from .object_list import ObjectList, ObjectRow
from .timelapse_panel import TimelapsePanel

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint file…"
CHECKPOINT_HINT = (
    "In the SAM2 widget: choose Model → “checkpoint file…” and pick the .pt file you saved (or a copy you have)."
)
DEVICES = ("auto", "cpu", "cuda", "mps")

# Keyboard shortcuts, bound on the viewer while the widget lives: key -> (method, what it does).
SHORTCUTS = {
    "N": ("next_object", "new object"),
    "Shift-S": ("segment_slice", "segment the slice"),
    "Shift-Enter": ("propagate", "propagate"),
    "T": ("toggle_polarity", "next click negative (Shift-click: positive)"),
    "Shift-Delete": ("remove_object", "remove the current object"),
    "Shift-Backspace": ("remove_object", "remove the current object"),
}
HELP = (
    "<b>Click</b>: positive point &nbsp; <b>Shift-click</b>: negative point<br>"
    "Boxes: draw rectangles on the <i>SAM2 boxes</i> layer<br>"
    "Remove points: select mode, select, <b>Delete</b><br>"
    "Keys: <b>N</b> new object, <b>T</b> next click negative,<br>"
    "<b>Shift-S</b> segment slice, <b>Shift-Enter</b> propagate,<br>"
    "<b>Shift-Delete</b> remove the current object<br>"
    "After a run, clicks on a wrong slice + <b>Propagate</b><br>re-track from there only. <b>Ctrl-Z</b> on the "
    "labels undoes a run."
)


@dataclass
class _Target:
    """Everything one action needs, read from the GUI on the GUI thread."""

    image: Image
    layers: PromptLayers
    plane: StackPlane
    found: LayerPrompts
    frame: int  # the frame shown in the viewer
    spec: SessionSpec
    array: object  # the image's data when the action started


class _CloseWatcher(QObject):
    """Calls ``on_close`` when the widget is closed, taken out of its dock (napari's remove_dock_widget makes it
    parentless) or destroyed."""

    def __init__(self, widget, on_close):
        super().__init__(widget)
        self._on_close = on_close
        widget.installEventFilter(self)
        widget.destroyed.connect(lambda *_: on_close())

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        kind = event.type()
        if kind == QEvent.Type.Close or (kind == QEvent.Type.ParentChange and obj.parent() is None):
            self._on_close()
        return False


class Sam2Widget(Container):
    """Segment and track objects in an image layer with SAM2."""

    def __init__(self, napari_viewer, session_factory=None):
        super().__init__(labels=True)
        # napari hands a plugin widget a PublicOnlyProxy of the viewer, whose layers come out as new proxies at each
        # access: the widget compares layers by identity (which layer a run writes to, which layer was removed), so
        # it works on the viewer itself.
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        options = {} if session_factory is None else {"session_factory": session_factory}
        self.controller = TrackingController(
            runner=qt_runner, describe_error=user_message, checkpoint_hint=CHECKPOINT_HINT, **options
        )
        self._layers: PromptLayers | None = None
        self._watched: dict = {}  # prompt layer -> its data callback (strong refs: never keyed by id())
        self._links: list[tuple] = []  # (emitter, callback) connected for the widget's lifetime
        self._run_links: list[tuple] = []  # (emitter, callback) connected for one run
        self._bound_keys: list[str] = []
        self._labels_watch: tuple | None = None  # (labels layer's data event, callback)
        self._writes: LabelsRun | None = None
        self._run_target: _Target | None = None
        self._session_image = None  # the image of the controller's session
        self._progress = None
        self._progress_done = 0
        self._live_pending = False
        self._quiet_prompts = 0  # > 0 while the widget itself edits the prompt layers
        self._extra_models: list[tuple[str, object]] = []  # loaded models offered besides the named ones
        self._closed = False

        self.image = ComboBox(label="Image", choices=self._image_choices)
        self.model = ComboBox(label="Model", choices=self._model_choices, value=_default_model())
        self.checkpoint = FileEdit(label="Checkpoint", filter="*.pt *.pth", visible=False)
        self.device = ComboBox(label="Device", choices=list(DEVICES), value="auto")
        self.fast = CheckBox(
            text="Fast mode (512-px model input: 6-15x quicker on a CPU, coarser masks)", value=False,
            tooltip="Runs SAM2 on a 512-pixel version of each slice instead of 1024, and on a CPU with native "
            "bfloat16 (recent Intel Xeon, AMD Zen 4) in bfloat16: much quicker on a laptop, but thin or small "
            "structures may be lost. Off: SAM2's exact results.",
        )
        self.axis = ComboBox(label="Propagate along", choices=self._axis_choices)
        self.channels = ComboBox(label="Channels", choices=self._channel_choices, visible=False)
        self.contrast = CheckBox(text="Use the layer's contrast limits", value=False)
        self.obj_id = SpinBox(label="Object id", min=1, max=MAX_OBJ_ID, value=1)
        self.new_object = PushButton(text="New object")
        self.objects = ObjectList(on_select=self._select_object)
        self.remove_button = PushButton(text="Remove object")
        self.retrack_button = PushButton(text="Re-track object")
        self.help = Label(value=HELP)
        self.live = CheckBox(text="Segment the slice live as points are added", value=True)
        self.segment_button = PushButton(text="Segment slice")
        self.direction = ComboBox(label="Direction", choices=list(DIRECTIONS), value="both")
        self.limit = CheckBox(text="Only slices from … to …", value=False)
        self.first = SpinBox(label="From", min=0, max=0, value=0, enabled=False)
        self.last = SpinBox(label="To", min=0, max=0, value=0, enabled=False)
        self.overwrite = CheckBox(text="Overwrite other objects' labels", value=False)
        self.propagate_button = PushButton(text="Propagate")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.precompute_button = PushButton(
            text="Precompute",
            tooltip="Compute the image features of every slice now and store them on disk: clicks and runs on this "
            "stack, now and after a restart, skip the image encoder (about half of the work on a CPU).",
        )
        self.features = Label(value="")
        self.status = Label(value="")
        self.timelapse = TimelapsePanel(self)

        self.extend([
            self.image, self.model, self.checkpoint, self.device, self.fast, self.axis, self.channels, self.contrast,
            Container(widgets=[self.obj_id, self.new_object], layout="horizontal", labels=True),
            self.objects,
            Container(widgets=[self.remove_button, self.retrack_button], layout="horizontal", labels=False),
            self.help, self.live, self.segment_button, self.direction, self.limit,
            Container(widgets=[self.first, self.last], layout="horizontal", labels=True),
            self.overwrite,
            Container(widgets=[self.propagate_button, self.cancel_button], layout="horizontal", labels=False),
            Container(widgets=[self.precompute_button, self.features], layout="horizontal", labels=False),
            Label(value="<b>Time-lapse cell tracking</b>"),
            self.timelapse,
            self.status,
        ])
        # Controls that change what a run does: disabled while one runs (Cancel is the way to stop it).
        self._run_controls = [
            self.image, self.model, self.checkpoint, self.device, self.fast, self.axis, self.channels, self.contrast,
            self.direction, self.limit, self.first, self.last, self.overwrite, self.segment_button,
            self.propagate_button, self.remove_button, self.retrack_button, self.precompute_button,
            *self.timelapse.run_controls,
        ]

        self.image.changed.connect(self._on_image_changed)
        self.model.changed.connect(lambda value: setattr(self.checkpoint, "visible", value == CHECKPOINT_FILE))
        self.model.changed.connect(self._show_model_source)
        self._show_model_source(self.model.value)
        self.axis.changed.connect(self._update_frame_limits)
        self.axis.changed.connect(lambda *_: self.timelapse.clear_seeds())  # seeds are frames of one axis
        self.limit.changed.connect(self._update_frame_limits)
        self.obj_id.changed.connect(self._on_object_changed)
        self.new_object.clicked.connect(self.next_object)
        self.remove_button.clicked.connect(lambda: self.remove_object())
        self.retrack_button.clicked.connect(lambda: self.retrack_object())
        self.segment_button.clicked.connect(self.segment_slice)
        self.propagate_button.clicked.connect(self.propagate)
        self.precompute_button.clicked.connect(self.precompute_features)
        self.cancel_button.clicked.connect(self.cancel)

        events = self.controller.events
        events.state_changed.connect(self._on_state_changed)
        events.status_changed.connect(self._on_status)
        events.started.connect(self._on_started)
        events.frame_done.connect(self._on_frame_done)
        events.warning.connect(lambda message: show_warning(message))
        events.finished.connect(lambda kind, done: self._on_run_ended())
        events.cancelled.connect(lambda done: self._on_run_ended())
        events.failed.connect(lambda message: self._on_run_ended(message))
        events.objects_found.connect(self.timelapse.objects_found)
        events.tracked.connect(self.timelapse.tracked)
        events.finished.connect(lambda kind, done: self.timelapse.run_finished(kind))

        self._link(self.viewer.layers.events.inserted, self._on_layers_inserted)
        self._link(self.viewer.layers.events.removed, self._on_layers_removed)
        self._bind_keys()
        self._close_watcher = _CloseWatcher(self.native, self._teardown)
        self.reset_choices()
        self._watch_prompt_layers()
        self._on_image_changed(self.image.value)

    # ---- public actions ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.controller.busy

    @property
    def prompt_layers(self) -> PromptLayers | None:
        return self._layers

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def bound_keys(self) -> tuple[str, ...]:
        """The shortcuts this widget holds on the viewer (none once closed)."""
        return tuple(self._bound_keys)

    def add_model_choice(self, label: str, model) -> None:
        """Offer an already loaded model (e.g. in a script or a test) and select it."""
        self._extra_models = [(text, value) for text, value in self._extra_models if text != label]
        self._extra_models.append((label, model))
        self.model.reset_choices()
        self.model.value = model

    def next_object(self, *_) -> int:
        """Switch to a new object id: one more than any id in the prompts, seeds and labels, or the smallest free id
        when that would not fit the labels layer's type."""
        limit = self._id_limit()
        candidate = self.next_free_id()
        if candidate > limit:
            candidate = self._smallest_free_id(limit)
            if candidate is None:
                show_warning(f"Every object id from 1 to {limit} is used in the labels: there is no free id left.")
                return int(self.obj_id.value)
        self.obj_id.value = candidate
        return int(self.obj_id.value)

    def segment_slice(self, *_, live: bool = False) -> None:
        """Segment the objects prompted on the slice shown in the viewer (and make the session hold all prompts)."""
        if self._closed:
            return
        if self.busy:
            if live:
                self._live_pending = True
            else:
                show_warning("SAM2 is still working: wait for it to finish, or press Cancel.")
            return
        if not live:
            self.controller.status = ""
        target = self._target(require_stack=False, quiet=live)
        if target is None:
            return
        if live and not target.found.prompts and self.controller.session is None:
            return  # nothing was segmented yet, so nothing to update
        if not live and not target.found.on_frame(target.frame):
            show_warning(f"No points or boxes on this slice ({target.frame}): click on the object first.")
            return
        self._start(target, lambda: self.controller.segment(target.spec, target.found.prompts, target.frame, live))

    def propagate(self, *_, obj_ids=None) -> None:
        """Propagate every prompted object through the stack (or re-track from the slices corrected since); with
        ``obj_ids``, re-track only these objects."""
        if not self._may_start():
            return
        target = self._target(require_stack=True, quiet=False)
        if target is None:
            return
        if not target.found.prompts:
            show_warning("Add at least one point (click on the object) or a box before propagating.")
            return
        frame_range = (self.first.value, self.last.value) if self.limit.value else None
        if frame_range is not None and frame_range[0] > frame_range[1]:
            show_error(f"The slice range {frame_range[0]} to {frame_range[1]} is empty: 'From' must not be after 'To'.")
            return
        direction = self.direction.value
        self._start(target, lambda: self.controller.propagate(
            target.spec, target.found.prompts, direction, frame_range, obj_ids=obj_ids))

    def precompute_features(self, *_) -> None:
        """Compute and store on disk the image features of every slice of the stack (with progress; Cancel keeps
        what is stored, and the next Precompute resumes)."""
        if not self._may_start():
            return
        target = self._target(require_stack=True, quiet=True)
        if target is None:
            return
        self._run_target = target
        self._session_image = target.image
        self._watch_run(target)
        if not self.controller.precompute(target.spec):
            self._unwatch_run()
            self._run_target = None

    def retrack_object(self, obj_id: int | None = None) -> None:
        """Propagate only one object (default: the current one), from its own prompts."""
        obj_id = int(self.obj_id.value if obj_id is None else obj_id)
        self.propagate(obj_ids=[obj_id])

    def remove_object(self, *_, obj_id: int | None = None) -> None:
        """Remove an object (default: the current one): its points and boxes, its state in the session, and its
        labels on every slice (one undo step of the labels layer)."""
        if self._closed:
            return
        if self.busy:
            show_warning("SAM2 is still working: wait for it to finish, or press Cancel, then remove the object.")
            return
        self.controller.status = ""
        obj_id = int(self.obj_id.value if obj_id is None else obj_id)
        layers = self._layers
        if layers is None:
            return
        self._quiet_prompts += 1  # no live update for each deleted point: the whole object goes at once
        try:
            for layer in (layers.points, layers.boxes):
                if OBJ_ID in layer.features and len(layer.data):
                    mine = np.flatnonzero(layer.features[OBJ_ID].to_numpy() == obj_id)
                    if len(mine):
                        layer.selected_data = set(int(i) for i in mine)
                        layer.remove_selected()
            self.controller.remove_object(obj_id)
            self.timelapse.seeds = {key: seed for key, seed in self.timelapse.seeds.items() if key[1] != obj_id}
            pixels = remove_object_labels(layers.labels, obj_id)
        finally:
            self._quiet_prompts -= 1
        self._refresh_objects()
        self.controller.status = (
            f"Object {obj_id} removed ({pixels} labelled pixels; Ctrl-Z on the labels brings them back)."
        )

    def track_cells(self, *_, divisions: bool = True) -> bool:
        """Track every prompted and seeded object through the time-lapse and follow divisions (daughters get new
        ids); the Tracks layer and the review list follow. Returns whether a run started."""
        if not self._may_start():
            return False
        target = self._target(require_stack=True, quiet=False)
        if target is None:
            return False
        if not target.found.prompts:
            show_warning("Seed objects first (from a Labels layer, Find all objects, or clicks) before tracking.")
            return False
        self._start(target, lambda: self.controller.track_cells(target.spec, target.found.prompts, divisions))
        return self._run_target is not None

    def find_objects(self, options: dict) -> bool:
        """SAM2's automatic masks on the shown slice become seeds (see TimelapsePanel). Returns whether it started."""
        if not self._may_start():
            return False
        target = self._target(require_stack=False, quiet=True)
        if target is None:
            return False
        self._start(target, lambda: self.controller.find_objects(target.spec, target.frame, options))
        return self._run_target is not None

    def target_for_seeds(self):
        """The image, plane and shown frame that seeds are for (None after telling the user what is missing)."""
        return self._target(require_stack=False, quiet=True)

    def seeds_changed(self, frame: int | None = None) -> None:
        """Seeds were added (on ``frame``: segment that slice now, so they show) or cleared."""
        self._refresh_objects()
        if frame is not None and not self.busy:
            self.segment_slice()

    def next_free_id(self) -> int:
        """One more than every id in the prompts, seeds and labels, and the current object's."""
        used = [int(self.obj_id.value), *(obj_id for _, obj_id in self.timelapse.seeds)]
        if self._layers is not None:
            for layer in (self._layers.points, self._layers.boxes):
                if OBJ_ID in layer.features and len(layer.features):
                    used.append(int(layer.features[OBJ_ID].max()))
            data = self._layers.labels.data
            if isinstance(data, np.ndarray) and data.size:
                used.append(int(data.max()))
        return max(used) + 1

    def n_frames(self) -> int:
        image = self.image.value
        return 1 if image is None else self._plane(image).n_frames

    def label_series(self):
        """(labels (T, H, W), plane, SAM2 labels layer) of the shown image's frames, or None for a 2D image."""
        image, layers = self.image.value, self._layers
        if image is None or layers is None:
            return None
        plane = self._plane(image)
        if plane.frame_axis is None:
            return None
        data = layers.labels.data
        series = np.stack([np.asarray(data[plane.frame_index(t)]) for t in range(plane.n_frames)])
        return series, plane, layers.labels

    def go_to(self, frame: int, obj_id: int) -> None:
        """Show ``frame`` (along the tracked axis) and make ``obj_id`` the current object."""
        image = self.image.value
        if image is None:
            return
        plane = self._plane(image)
        if plane.frame_axis is not None:
            step = list(self.viewer.dims.current_step)
            step[self.viewer.dims.ndim - image.ndim + plane.frame_axis] = int(frame)
            self.viewer.dims.current_step = tuple(step)
        if 1 <= obj_id <= self.obj_id.max:
            self.obj_id.value = obj_id

    def toggle_polarity(self, *_) -> None:
        """The next click adds a negative point (a Shift-click a positive one); again: back to normal."""
        if self._layers is None:
            return
        inverted = toggle_next_polarity(self._layers.points)
        self.controller.status = (
            "The next click adds a negative point (T again: positive)." if inverted else ""
        )

    def _may_start(self) -> bool:
        """Whether a run may start now (the widget is open and idle, else the user is told); clears the status."""
        if self._closed:
            return False
        if self.busy:
            show_warning("SAM2 is still working: wait for it to finish, or press Cancel.")
            return False
        self.controller.status = ""
        return True

    def cancel(self, *_) -> None:
        """Stop after the frame (or object) being computed; every finished one stays written."""
        self._live_pending = False
        self.controller.cancel()

    # ---- starting and ending a run (GUI thread) ----------------------------------------------------------------

    def _start(self, target: _Target, request) -> None:
        try:
            check_ids_fit_layer(target.found.obj_ids, target.layers.labels)
        except InputError as error:
            show_error(str(error))
            return
        self._run_target = target
        self._session_image = target.image
        self._writes = LabelsRun(target.layers.labels, target.plane, overwrite_others=self.overwrite.value)
        self._watch_run(target)
        if not request():
            self._end_writes()
            self._unwatch_run()
            self._run_target = None
            show_warning("SAM2 is still working: wait for it to finish, or press Cancel.")

    def _on_state_changed(self, state: str) -> None:
        self._update_enabled()

    def _on_status(self, text: str) -> None:
        self.status.value = text

    def _on_started(self, kind: str, total: int, description: str) -> None:
        self._close_progress()
        if kind not in SLICE_KINDS and total > 0:
            self._progress_done = 0
            self._progress = progress(total=total, desc=f"SAM2: {description}")

    def _on_frame_done(self, labels, done: int, total: int) -> None:
        if labels is not None:  # None: a slice done without labels (precomputation)
            if self._writes is None:
                return
            try:
                self._writes.write(labels)
            except InputError as error:
                self.controller.abort(str(error))
                return
        if labels is not None:
            self.timelapse.frame_written(self.controller.kind)  # the Tracks layer, now and then
        bar = self._progress
        if bar is not None and done > self._progress_done:
            if total and bar.total != total:
                bar.total = total
            step, self._progress_done = done - self._progress_done, done
            bar.update(step)  # may process the GUI's events: keep it last

    def _on_run_ended(self, message: str | None = None) -> None:
        self._end_writes()
        self._close_progress()
        self._unwatch_run()
        self._run_target = None
        self._update_enabled()
        self._refresh_objects()
        self._show_cached_features()
        if message is not None:
            show_error(message)
        if self._live_pending and not self._closed:
            self._live_pending = False
            self.segment_slice(live=True)

    def _end_writes(self) -> None:
        writes, self._writes = self._writes, None
        if writes is not None:
            commit = writes.layer in self.viewer.layers
            writes.finish(commit=commit)

    def _close_progress(self) -> None:
        bar, self._progress = self._progress, None
        if bar is not None:
            bar.close()

    def _watch_run(self, target: _Target) -> None:
        """While a run writes: its image or labels replaced with data of another shape stops it."""
        self._run_links = []
        for layer in (target.image, target.layers.labels):
            callback = self._on_run_layer_data
            layer.events.data.connect(callback)
            self._run_links.append((layer.events.data, callback))

    def _unwatch_run(self) -> None:
        links, self._run_links = self._run_links, []
        for emitter, callback in links:
            _disconnect(emitter, callback)

    def _on_run_layer_data(self, event=None) -> None:
        target = self._run_target
        if target is None or not self.busy:
            return
        problem = self._writes.problem() if self._writes is not None else None
        if problem is None and layer_array(target.image) is not target.array:
            problem = (
                f"The data of the image {target.image.name!r} was replaced while SAM2 was working on it: the run was "
                "stopped. Run it again."
            )
        if problem is not None:
            self._stop_run(problem)

    def _stop_run(self, message: str) -> None:
        """The run cannot go on: nothing more is written, and it ends with ``message``."""
        self._end_writes()
        self.controller.abort(message)

    # ---- the view of the state -------------------------------------------------------------------------------

    def _update_enabled(self) -> None:
        running = self.controller.busy
        for widget in self._run_controls:
            widget.enabled = not running
        self.cancel_button.enabled = running and self.controller.state != CANCELLING
        if not running:
            image = self.image.value
            self.axis.enabled = image is not None and bool(frame_axis_choices(image))
            self.first.enabled = self.last.enabled = bool(self.limit.value)

    def _show_cached_features(self) -> None:
        """How many slices of the session's stack have their image features cached (of those read so far)."""
        session = self.controller.session
        cached = getattr(session, "cached_frames", None)
        if cached is None:
            self.features.value = ""
            return
        self.features.value = f"features cached: {cached()} / {session.n_frames} slices"

    def _refresh_objects(self) -> None:
        layers, image = self._layers, self.image.value
        if self._closed or layers is None or image is None:
            self.objects.set_rows([], None)
            return
        slices: dict[int, set[int]] = {}
        try:
            plane = self._plane(image)
            found = prompts_from_layers(image, plane, layers.points, layers.boxes)
            self.timelapse.add_seeds_to(found)
            _drop_prompts_outside(found, plane)
            for prompt in found.prompts:
                slices.setdefault(int(prompt.obj_id), set()).add(int(prompt.frame))
        except (InputError, ValueError):
            pass
        current = int(self.obj_id.value)
        ids = sorted(set(slices) | {current})
        rows = [ObjectRow(obj_id, tuple(object_colour(layers.labels, obj_id)), tuple(sorted(slices.get(obj_id, ()))))
                for obj_id in ids]
        self.objects.set_rows(rows, current)

    def _select_object(self, obj_id: int) -> None:
        if obj_id != self.obj_id.value:
            self.obj_id.value = min(int(obj_id), int(self.obj_id.max))

    # ---- reading the GUI -------------------------------------------------------------------------------------

    def _plane(self, image) -> StackPlane:
        position = image.world_to_data(self.viewer.dims.point)
        return stack_plane(image, self.axis.value, position, self.channels.value)

    def _target(self, require_stack: bool, quiet: bool) -> _Target | None:
        """What the next action works on, or None after telling the user what is missing."""
        image = self.image.value
        if image is None:
            show_error("Choose an image layer first (open an image, or File > Open Sample > napari-sam2).")
            return None
        try:
            layers = self._ensure_layers(image)
            position = image.world_to_data(self.viewer.dims.point)
            plane = stack_plane(image, self.axis.value, position, self.channels.value)
            if require_stack and plane.frame_axis is None:
                raise InputError(
                    f"{image.name!r} is a single 2D image: there are no slices to propagate through (or precompute). "
                    "Use 'Segment slice' instead."
                )
            found = prompts_from_layers(image, plane, layers.points, layers.boxes)
            self.timelapse.add_seeds_to(found)
        except InputError as error:
            show_error(str(error))
            return None
        outside = _drop_prompts_outside(found, plane)
        if not quiet and (found.off_plane or found.not_rectangles or outside):
            show_warning(_skipped_text(found, image, plane, outside))
        frame = plane.frame_of(position)
        frame = int(np.clip(frame if frame is not None else 0, 0, plane.n_frames - 1))
        model = self._model_spec()
        if model is None:
            return None
        intensity_range = tuple(image.contrast_limits) if self.contrast.value else None
        options = dict(
            model=model, device=self.device.value, intensity_range=intensity_range, fast=bool(self.fast.value),
            **plane.stack_arguments(layer_array(image)),
        )
        key = (Identity(image), Identity(layer_array(image)), plane,
               model if isinstance(model, str) else Identity(model), self.device.value, intensity_range,
               bool(self.fast.value))
        return _Target(image, layers, plane, found, frame, SessionSpec(key, options), layer_array(image))

    def _model_spec(self):
        choice = self.model.value
        if choice != CHECKPOINT_FILE:
            return choice
        path = self.checkpoint.value
        if path is None or not str(path) or str(path) == ".":
            show_error("Choose the checkpoint file (.pt) of a SAM2 model, or pick a model name.")
            return None
        return str(path)

    def _id_limit(self) -> int:
        if self._layers is None:
            return MAX_OBJ_ID
        return largest_id(self._layers.labels.data.dtype)

    def _smallest_free_id(self, limit: int) -> int | None:
        used = set()
        if self._layers is not None:
            for layer in (self._layers.points, self._layers.boxes):
                if OBJ_ID in layer.features:
                    used.update(int(v) for v in layer.features[OBJ_ID].to_numpy())
            used.update(int(v) for v in np.unique(np.asarray(self._layers.labels.data)))
        for candidate in range(1, limit + 1):
            if candidate not in used:
                return candidate
        return None

    # ---- layers ----------------------------------------------------------------------------------------------

    def _ensure_layers(self, image) -> PromptLayers:
        current = self._layers
        if (
            current is None
            or current.points.metadata.get(FOR_IMAGE) != image.name
            or any(layer not in self.viewer.layers for layer in (current.points, current.boxes, current.labels))
        ):
            self._layers = find_or_create_prompt_layers(self.viewer, image)
            self._watch_prompt_layers()
            self._watch_labels(self._layers.labels)
            set_current_object(self._layers, self.obj_id.value)
            self._fit_id_range()
            self._refresh_objects()
        return self._layers

    def _fit_id_range(self) -> None:
        """The object id box never offers an id the labels layer cannot hold."""
        limit = self._id_limit()
        if self.obj_id.value > limit:
            self.obj_id.value = limit
        self.obj_id.max = limit

    def _watch_labels(self, labels) -> None:
        """The object id box follows the labels layer's type (its data may be converted, e.g. to uint8)."""
        if self._labels_watch is not None:
            _disconnect(*self._labels_watch)
        callback = lambda event=None: self._fit_id_range()  # noqa: E731
        labels.events.data.connect(callback)
        self._labels_watch = (labels.events.data, callback)

    def _make_ready(self) -> None:
        """Ready for the first click: the widget's layers on top of the layer list, the points layer selected and in
        add mode (after the current batch of layer changes, e.g. a sample that adds several layers)."""
        layers = self._layers
        if self._closed or layers is None:
            return
        for layer in (layers.labels, layers.boxes, layers.points):
            if layer in self.viewer.layers:
                index = self.viewer.layers.index(layer)
                if index != len(self.viewer.layers) - 1:
                    self.viewer.layers.move(index, len(self.viewer.layers))
        if layers.points in self.viewer.layers:
            self.viewer.layers.selection.active = layers.points
            layers.points.mode = "add"

    def _schedule_ready(self) -> None:
        QTimer.singleShot(0, self._make_ready)

    def _watch_prompt_layers(self) -> None:
        """Listen to the data of every SAM2 points and boxes layer in the viewer (and only those)."""
        wanted = [layer for layer in self.viewer.layers if (layer.metadata or {}).get(ROLE) in ("points", "boxes")]
        for layer in list(self._watched):
            if not any(layer is other for other in wanted):
                _disconnect(layer.events.data, self._watched.pop(layer))
        for layer in wanted:
            if layer not in self._watched:
                callback = _PromptDataCallback(self, layer)
                layer.events.data.connect(callback)
                self._watched[layer] = callback

    def _on_layers_inserted(self, event=None) -> None:
        self.reset_choices()  # a first image becomes the choice: see _on_image_changed
        self._watch_prompt_layers()

    def _on_layers_removed(self, event=None) -> None:
        removed = getattr(event, "value", None)
        target = self._run_target
        if target is not None and self.busy and removed is not None and (
            removed is target.image or removed is target.layers.labels
        ):
            what = "image" if removed is target.image else "labels layer"
            self._stop_run(
                f"The {what} {removed.name!r} was removed while SAM2 was working on it: the run was stopped "
                "(the slices finished before stay, if the labels layer is still there)."
            )
        if removed is not None and removed is self._session_image:
            self._session_image = None
            self.controller.forget_session()  # its frames and features go now, not at the next run
        self.reset_choices()
        self._watch_prompt_layers()

    def _on_image_changed(self, image) -> None:
        self.controller.status = ""
        self.features.value = ""
        self.timelapse.clear_seeds()  # seeds are masks of one image's frames
        if image is None:
            self._update_enabled()
            return
        self.axis.reset_choices()
        self.axis.value = default_frame_axis(image)
        self.channels.reset_choices()
        self.channels.visible = bool(channel_options(image))
        self._update_frame_limits()
        self._ensure_layers(image)
        self._update_enabled()
        self._refresh_objects()
        self._schedule_ready()

    def _update_frame_limits(self, *_) -> None:
        image = self.image.value
        n_frames = 1
        if image is not None and self.axis.value is not None:
            n_frames = int(layer_array(image).shape[self.axis.value])
        for spin in (self.first, self.last):
            spin.max = n_frames - 1
            spin.enabled = bool(self.limit.value) and not self.busy
        if self.last.value == 0 or self.last.value > n_frames - 1:
            self.last.value = n_frames - 1

    def _on_object_changed(self, obj_id) -> None:
        if self._layers is not None:
            set_current_object(self._layers, obj_id)
            style_points(self._layers.points, self._layers.labels)
        self._refresh_objects()

    def _on_prompt_data(self, layer, event) -> None:
        if self._closed:
            return
        action = str(getattr(event, "action", ""))
        if action not in ("added", "removed", "changed"):
            return
        if action == "added":
            self._explain_unusable(layer, getattr(event, "data_indices", ()))
        if self._layers is None or layer not in (self._layers.points, self._layers.boxes):
            return
        self._refresh_objects()
        if self._quiet_prompts == 0 and self.live.value:
            self.segment_slice(live=True)

    def _explain_unusable(self, layer, indices) -> None:
        """Say why a point just added cannot become a prompt: no image chosen, another image's layer, on another
        plane, off the image."""
        image = self.image.value
        owner = (layer.metadata or {}).get(FOR_IMAGE)
        if image is None:
            show_warning("This click is not used: no image is chosen in the SAM2 widget. Choose the image at its top.")
            return
        if owner != image.name:
            show_warning(
                f"This click is on {layer.name!r}, the prompts of image {owner!r}, but the SAM2 widget works on "
                f"{image.name!r}: choose {owner!r} in the widget, or click on the layer "
                f"{image.name + ' SAM2 points'!r}."
            )
            return
        if (layer.metadata or {}).get(ROLE) != "points":
            return
        try:
            plane = self._plane(image)
            positions = to_image_data(image, layer, np.asarray(layer.data)[list(indices)])
        except (InputError, IndexError, ValueError):
            return
        height, width = plane.frame_size
        for position in positions:
            frame = plane.frame_of(position)
            row, col = plane.row_col(position)
            if frame is None:
                others = ", ".join(f"axis {axis} at {index}" for axis, index in plane.fixed)
                show_warning(
                    f"This click lies on another plane of {image.name!r} than the one being segmented ({others}): "
                    "it is not used. Click on the plane shown, or move the viewer to the click's plane."
                )
            elif not (-0.5 <= row <= height - 0.5 and -0.5 <= col <= width - 0.5) or not 0 <= frame < plane.n_frames:
                show_warning(
                    f"This click (row {row:.0f}, column {col:.0f}) is outside the image {image.name!r} "
                    f"({height} x {width} pixels): it is not used. Click on the image."
                )

    # ---- lifetime --------------------------------------------------------------------------------------------

    def _link(self, emitter, callback) -> None:
        emitter.connect(callback)
        self._links.append((emitter, callback))

    def _bind_keys(self) -> None:
        for key, (method, _) in SHORTCUTS.items():
            action = getattr(self, method)

            def handler(viewer, action=action):
                action()

            try:
                self.viewer.bind_key(key, handler, overwrite=False)
            except (ValueError, TypeError):  # bound by someone else (e.g. a second SAM2 widget): leave it to them
                logger.info("napari-sam2: the key %s is taken; the widget's shortcut is not bound", key)
                continue
            self._bound_keys.append(key)

    def _unbind_keys(self) -> None:
        keys, self._bound_keys = self._bound_keys, []
        for key in keys:
            try:
                self.viewer.bind_key(key, None)
            except (KeyError, ValueError, TypeError):
                pass

    def close(self) -> None:
        self._teardown()
        super().close()

    def _teardown(self) -> None:
        """Release everything: the run is cancelled (what it wrote stays, as one undo step), the layers are
        unlocked, every callback disconnected, the keys unbound, the session released once its thread stops."""
        if self.__dict__.get("_closed", True):  # closed already, or Qt's `destroyed` after Python freed the widget
            return
        self._closed = True
        self._live_pending = False
        self._end_writes()
        self._close_progress()
        self._unwatch_run()
        self.controller.events.disconnect()
        self.controller.close()
        for emitter, callback in self._links:
            _disconnect(emitter, callback)
        self._links = []
        for emitter in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            _disconnect(emitter, self.reset_choices)  # napari's own link from a docked magicgui widget
        for layer, callback in list(self._watched.items()):
            _disconnect(layer.events.data, callback)
        self._watched = {}
        if self._labels_watch is not None:
            _disconnect(*self._labels_watch)
            self._labels_watch = None
        self._unbind_keys()
        self._layers = None
        self._run_target = self._session_image = None

    # ---- choices ---------------------------------------------------------------------------------------------

    def _image_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _axis_choices(self, _widget=None):
        image = self.image.value if hasattr(self, "image") else None
        choices = frame_axis_choices(image) if image is not None else []
        return [(axis_name(image, axis), axis) for axis in choices] or [("- (2D image)", None)]

    def _channel_choices(self, _widget=None):
        image = self.image.value if hasattr(self, "image") else None
        return (channel_options(image) if image is not None else []) or [("-", None)]

    def _show_model_source(self, value) -> None:
        """The model chooser's tooltip: the chosen registry model's description, source and licence."""
        info = MODELS.get(value) if isinstance(value, str) else None
        self.model.tooltip = (
            f"{info.description}\nSource: {info.source}\nLicence: {info.licence}" if info is not None
            else "A registered local file, a loaded model or a checkpoint file (SAM2's preprocessing)."
        )

    def _model_choices(self, _widget=None) -> list[tuple[str, object]]:
        names = list(MODELS)
        try:
            names += sorted(local_models())
        except Exception:  # a damaged list of local models must not break the widget
            pass
        return [(name, name) for name in names] + self._extra_models + [(CHECKPOINT_FILE, CHECKPOINT_FILE)]


class _PromptDataCallback:
    """A prompt layer's data event -> the widget, with the layer that sent it."""

    def __init__(self, widget: Sam2Widget, layer):
        self.widget, self.layer = widget, layer

    def __call__(self, event) -> None:
        self.widget._on_prompt_data(self.layer, event)


def _disconnect(emitter, callback) -> None:
    try:
        emitter.disconnect(callback)
    except (TypeError, ValueError, RuntimeError):  # already gone
        pass


def _default_model() -> str:
    """The first official model already downloaded, else the default (downloaded on first use)."""
    for name in MODELS:
        if cached_path(name).is_file():
            return name
    return DEFAULT_MODEL


def _drop_prompts_outside(found: LayerPrompts, plane: StackPlane) -> int:
    """Remove points off the image or on a frame the stack does not have (SAM2 would refuse every prompt for them);
    returns how many."""
    height, width = plane.frame_size
    kept, dropped = [], 0
    for prompt in found.prompts:
        inside = 0 <= prompt.frame < plane.n_frames and all(
            -0.5 <= row <= height - 0.5 and -0.5 <= col <= width - 0.5 for row, col in prompt.points
        )
        if inside:
            kept.append(prompt)
        else:
            dropped += 1
    found.prompts[:] = kept
    return dropped


def _skipped_text(found: LayerPrompts, image, plane: StackPlane, outside: int = 0) -> str:
    parts = []
    if found.off_plane:
        parts.append(
            f"{found.off_plane} prompt(s) lie on another plane of {image.name!r} than the one shown "
            f"(other axes at {dict(plane.fixed)}) and are ignored"
        )
    if found.not_rectangles:
        parts.append(f"{found.not_rectangles} shape(s) are not rectangles and are ignored (boxes must be rectangles)")
    if outside:
        parts.append(f"{outside} point(s) lie outside the image and are ignored")
    return "; ".join(parts) + "."

