"""The SAM2 dock widget: click on an object, see its mask, propagate it through the stack.

The widget only moves data between napari layers and the scripting API (``TrackingSession``); the model runs in a
worker thread, results are written on the GUI thread as they arrive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, SpinBox
from napari.layers import Image
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning

from ..errors import InputError
from ..frame_labels import FrameLabels
from ..model_cache import DEFAULT_MODEL
from ..models import MODELS, cached_path, local_models
from ..tracking import DIRECTIONS, TrackingSession
from .jobs import RunStarted, start_job
from .labels_writer import LabelsRun
from .layers import OBJ_ID, LayerPrompts, prompts_from_layers
from .prompt_layers import PromptLayers, find_or_create_prompt_layers, set_current_object, style_points
from .stack_plane import (
    StackPlane,
    axis_name,
    channel_options,
    default_frame_axis,
    frame_axis_choices,
    layer_array,
    stack_plane,
)

CHECKPOINT_FILE = "checkpoint file…"
DEVICES = ("auto", "cpu", "cuda", "mps")
HELP = (
    "<b>Click</b>: positive point &nbsp; <b>Shift-click</b>: negative point<br>"
    "Boxes: draw rectangles on the <i>SAM2 boxes</i> layer<br>"
    "Remove points: select mode, select, <b>Delete</b><br>"
    "<b>New object</b> before clicking on the next object<br>"
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
    session_key: tuple
    session_options: dict


class Sam2Widget(Container):
    """Segment and track objects in an image layer with SAM2."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self._session: TrackingSession | None = None
        self._session_key: tuple | None = None
        self._worker = None
        self._run: LabelsRun | None = None
        self._progress = None
        self._frames_done: set[int] = set()
        self._live_pending = False
        self._cancelled = False
        self._layers: PromptLayers | None = None
        self._connected: set[int] = set()
        self._extra_models: list[tuple[str, object]] = []  # loaded models offered besides the named ones
        self._kind: str | None = None  # "slice" or "propagate" while a job runs
        self._total = 0  # frames the running propagation will write
        self._failed = False

        self.image = ComboBox(label="Image", choices=self._image_choices)
        self.model = ComboBox(label="Model", choices=self._model_choices, value=_default_model())
        self.checkpoint = FileEdit(label="Checkpoint", filter="*.pt *.pth", visible=False)
        self.device = ComboBox(label="Device", choices=list(DEVICES), value="auto")
        self.axis = ComboBox(label="Propagate along", choices=self._axis_choices)
        self.channels = ComboBox(label="Channels", choices=self._channel_choices, visible=False)
        self.contrast = CheckBox(text="Use the layer's contrast limits", value=False)
        self.obj_id = SpinBox(label="Object id", min=1, max=2**31 - 1, value=1)
        self.new_object = PushButton(text="New object")
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
        self.status = Label(value="")

        self.extend([
            self.image, self.model, self.checkpoint, self.device, self.axis, self.channels, self.contrast,
            Container(widgets=[self.obj_id, self.new_object], layout="horizontal", labels=True),
            self.help, self.live, self.segment_button, self.direction, self.limit,
            Container(widgets=[self.first, self.last], layout="horizontal", labels=True),
            self.overwrite,
            Container(widgets=[self.propagate_button, self.cancel_button], layout="horizontal", labels=False),
            self.status,
        ])

        self.image.changed.connect(self._on_image_changed)
        self.model.changed.connect(lambda value: setattr(self.checkpoint, "visible", value == CHECKPOINT_FILE))
        self.axis.changed.connect(self._update_frame_limits)
        self.limit.changed.connect(self._update_frame_limits)
        self.obj_id.changed.connect(self._on_object_changed)
        self.new_object.clicked.connect(self.next_object)
        self.segment_button.clicked.connect(self.segment_slice)
        self.propagate_button.clicked.connect(self.propagate)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self.reset_choices)
        self.viewer.layers.events.removed.connect(self.reset_choices)
        self.reset_choices()
        self._on_image_changed(self.image.value)

    # ---- public actions ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._worker is not None

    @property
    def worker(self):
        """The running job's worker (None when idle)."""
        return self._worker

    @property
    def prompt_layers(self) -> PromptLayers | None:
        return self._layers

    def add_model_choice(self, label: str, model) -> None:
        """Offer an already loaded model (e.g. in a script or a test) and select it."""
        self._extra_models = [(text, value) for text, value in self._extra_models if text != label]
        self._extra_models.append((label, model))
        self.model.reset_choices()
        self.model.value = model

    def next_object(self) -> int:
        """Switch to a new object id: one more than any id in the prompts and labels."""
        used = [int(self.obj_id.value)]
        if self._layers is not None:
            for layer in (self._layers.points, self._layers.boxes):
                if OBJ_ID in layer.features and len(layer.features):
                    used.append(int(layer.features[OBJ_ID].max()))
            data = self._layers.labels.data
            if isinstance(data, np.ndarray) and data.size:
                used.append(int(data.max()))
        self.obj_id.value = max(used) + 1
        return int(self.obj_id.value)

    def segment_slice(self, *_, live: bool = False) -> None:
        """Segment the objects prompted on the slice shown in the viewer (and make the tracker hold all prompts)."""
        if self.busy:
            self._live_pending = True
            return
        target = self._target(require_stack=False, quiet=live)
        if target is None:
            return
        if live and not target.found.prompts and self._session is None:
            return  # nothing was segmented yet, so nothing to update
        if not live and not target.found.on_frame(target.frame):
            show_warning(f"No points or boxes on this slice ({target.frame}): click on the object first.")
            return
        self._begin(target, "slice")
        self._worker = start_job(
            lambda: self._slice_steps(target, force=not live), self._on_result, self._on_failure, self._on_finished
        )

    def propagate(self, *_) -> None:
        """Propagate every prompted object through the stack (or re-track from the slices corrected since)."""
        if self.busy:
            show_warning("SAM2 is still working: wait for it to finish, or press Cancel.")
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
        self._begin(target, "propagate")
        self._worker = start_job(
            lambda: self._propagation_steps(target, self.direction.value, frame_range),
            self._on_result, self._on_failure, self._on_finished,
        )

    def cancel(self, *_) -> None:
        """Stop after the frame being computed; every finished frame stays written."""
        if self._worker is not None:
            self._cancelled = True
            self._live_pending = False
            self.status.value = "Cancelling…"
            self._worker.quit()

    # ---- work done in the worker thread ----------------------------------------------------------

    def _session_for(self, target: _Target) -> TrackingSession:
        if self._session is None or self._session_key != target.session_key:
            if self._session is not None:
                self._session.close()
            self._session = None
            self._session = TrackingSession(**target.session_options)
            self._session_key = target.session_key
        return self._session

    def _slice_steps(self, target: _Target, force: bool):
        session = self._session_for(target)
        before = set(session.prompted_pairs)
        if not target.found.prompts:
            session.restart()
            results = []
        else:
            results = session.set_prompts(target.found.prompts)
            if force:
                results += session.add_prompts(target.found.on_frame(target.frame))
        yield from results
        # Objects whose last prompt on the shown slice was just deleted: clear their mask there.
        now = set(session.prompted_pairs)
        height, width = target.plane.frame_size
        for frame, obj_id in sorted(before - now):
            if frame == target.frame:
                yield FrameLabels(frame, (obj_id,), np.zeros((1, height, width), bool))

    def _propagation_steps(self, target: _Target, direction: str, frame_range):
        session = self._session_for(target)
        yield from session.set_prompts(target.found.prompts)
        if session.has_propagated and session.pending_frames:
            run = session.propagate_corrections()
            frames = ", ".join(str(f) for f in session.pending_frames)
            description = f"re-tracking from corrected slice(s) {frames}"
        else:
            run = session.propagate(direction, frame_range)
            description = f"propagating ({direction})"
        yield RunStarted(run.total, description)
        yield from run

    # ---- GUI thread -------------------------------------------------------------------------------

    def _begin(self, target: _Target, kind: str) -> None:
        self._run = LabelsRun(target.layers.labels, target.plane, overwrite_others=self.overwrite.value)
        self._frames_done = set()
        self._cancelled = False
        self._failed = False
        self._kind = kind
        self._set_running(True)
        needs_download = isinstance(self.model.value, str) and self.model.value != CHECKPOINT_FILE and (
            self.model.value in MODELS and not cached_path(self.model.value).is_file()
        )
        if needs_download:
            show_info(f"Downloading {self.model.value} (once; it is cached afterwards)…")
        self.status.value = "Segmenting the slice…" if kind == "slice" else "Preparing…"

    def _on_result(self, item) -> None:
        if isinstance(item, RunStarted):
            self._total = item.total
            self._progress = progress(total=item.total, desc=f"SAM2 {item.description}")
            self.status.value = f"SAM2 {item.description}…"
            return
        if self._run is None:
            return
        self._run.write(item)
        if item.frame not in self._frames_done:
            self._frames_done.add(item.frame)
            if self._progress is not None:
                self.status.value = f"{len(self._frames_done)} / {self._total} slices"
                self._progress.update(1)  # may process events: keep it last

    def _on_failure(self, message: str) -> None:
        self._failed = True
        show_error(message)
        self.status.value = "Failed: see the notification."

    def _on_finished(self) -> None:
        if self._run is not None:
            self._run.finish()
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self._kind == "propagate" and not self._failed:
            done = len(self._frames_done)
            self.status.value = f"Cancelled: {done} slice(s) kept." if self._cancelled else f"Done: {done} slice(s)."
        elif self._kind == "slice" and not self._failed:
            self.status.value = ""
        self._run = None
        self._worker = None
        self._set_running(False)
        if self._live_pending:
            self._live_pending = False
            self.segment_slice(live=True)

    def _set_running(self, running: bool) -> None:
        self.cancel_button.enabled = running
        self.propagate_button.enabled = not running
        self.segment_button.enabled = not running

    def _target(self, require_stack: bool, quiet: bool) -> _Target | None:
        """What the next action works on, or None after telling the user what is missing."""
        image = self.image.value
        if image is None:
            show_error("Choose an image layer first (open an image, or File > Open Sample > SAM2).")
            return None
        try:
            layers = self._ensure_layers(image)
            position = image.world_to_data(self.viewer.dims.point)
            plane = stack_plane(image, self.axis.value, position, self.channels.value)
            if require_stack and plane.frame_axis is None:
                raise InputError(
                    f"{image.name!r} is a single 2D image: there are no slices to propagate through. "
                    "Use 'Segment slice' instead."
                )
            found = prompts_from_layers(image, plane, layers.points, layers.boxes)
        except InputError as error:
            show_error(str(error))
            return None
        if not quiet and (found.off_plane or found.not_rectangles):
            show_warning(_skipped_text(found, image, plane))
        frame = plane.frame_of(position)
        frame = int(np.clip(frame if frame is not None else 0, 0, plane.n_frames - 1))
        model = self._model_spec()
        if model is None:
            return None
        intensity_range = tuple(image.contrast_limits) if self.contrast.value else None
        options = dict(
            model=model, device=self.device.value, intensity_range=intensity_range,
            **plane.stack_arguments(layer_array(image)),
        )
        key = (id(image), id(layer_array(image)), plane, id(model) if not isinstance(model, str) else model,
               self.device.value, intensity_range)
        return _Target(image, layers, plane, found, frame, key, options)

    def _model_spec(self):
        choice = self.model.value
        if choice != CHECKPOINT_FILE:
            return choice
        path = self.checkpoint.value
        if path is None or not str(path) or str(path) == ".":
            show_error("Choose the checkpoint file (.pt) of a SAM2 model, or pick a model name.")
            return None
        return str(path)

    def _ensure_layers(self, image) -> PromptLayers:
        if self._layers is None or self._layers.points.metadata.get("napari_sam2_image") != image.name or any(
            layer not in self.viewer.layers for layer in (self._layers.points, self._layers.boxes, self._layers.labels)
        ):
            self._layers = find_or_create_prompt_layers(self.viewer, image)
            for layer in (self._layers.points, self._layers.boxes):
                if id(layer) not in self._connected:
                    layer.events.data.connect(self._on_prompt_data)
                    self._connected.add(id(layer))
            set_current_object(self._layers, self.obj_id.value)
            # Ready for the first click: the points layer selected, in add mode.
            self.viewer.layers.selection.active = self._layers.points
            self._layers.points.mode = "add"
        return self._layers

    def _on_image_changed(self, image) -> None:
        if image is None:
            return
        self.axis.reset_choices()
        self.axis.value = default_frame_axis(image)
        self.axis.enabled = bool(frame_axis_choices(image))
        self.channels.reset_choices()
        self.channels.visible = bool(channel_options(image))
        self._update_frame_limits()
        self._ensure_layers(image)

    def _update_frame_limits(self, *_) -> None:
        image = self.image.value
        n_frames = 1
        if image is not None and self.axis.value is not None:
            n_frames = int(layer_array(image).shape[self.axis.value])
        for spin in (self.first, self.last):
            spin.max = n_frames - 1
            spin.enabled = bool(self.limit.value)
        if self.last.value == 0 or self.last.value > n_frames - 1:
            self.last.value = n_frames - 1

    def _on_object_changed(self, obj_id) -> None:
        if self._layers is not None:
            set_current_object(self._layers, obj_id)
            style_points(self._layers.points, self._layers.labels)

    def _on_prompt_data(self, event) -> None:
        if str(getattr(event, "action", "")) not in ("added", "removed", "changed"):
            return
        if self.live.value:
            self.segment_slice(live=True)

    def _image_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _axis_choices(self, _widget=None):
        image = self.image.value if hasattr(self, "image") else None
        choices = frame_axis_choices(image) if image is not None else []
        return [(axis_name(image, axis), axis) for axis in choices] or [("- (2D image)", None)]

    def _channel_choices(self, _widget=None):
        image = self.image.value if hasattr(self, "image") else None
        return (channel_options(image) if image is not None else []) or [("-", None)]

    def _model_choices(self, _widget=None) -> list[tuple[str, object]]:
        names = list(MODELS)
        try:
            names += sorted(local_models())
        except Exception:  # a damaged list of local models must not break the widget
            pass
        return [(name, name) for name in names] + self._extra_models + [(CHECKPOINT_FILE, CHECKPOINT_FILE)]


def _default_model() -> str:
    """The first official model already downloaded, else the default (downloaded on first use)."""
    for name in MODELS:
        if cached_path(name).is_file():
            return name
    return DEFAULT_MODEL


def _skipped_text(found: LayerPrompts, image, plane: StackPlane) -> str:
    parts = []
    if found.off_plane:
        parts.append(
            f"{found.off_plane} prompt(s) lie on another plane of {image.name!r} than the one shown "
            f"(other axes at {dict(plane.fixed)}) and are ignored"
        )
    if found.not_rectangles:
        parts.append(f"{found.not_rectangles} shape(s) are not rectangles and are ignored (boxes must be rectangles)")
    return "; ".join(parts) + "."
