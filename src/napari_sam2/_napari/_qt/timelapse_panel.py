"""The SAM2 widget's time-lapse section: objects seeded from a Labels layer (e.g. Cellpose or StarDist output) or by
SAM2's automatic masks on the shown slice, cell tracking that follows divisions, a napari Tracks layer kept up to date,
a review list of frames where an object's identity may have slipped, and export (CTC, GEFF, CSV).

Seeds are mask prompts held here (the user's Labels layer is never changed); the widget adds them to the prompts of
its layers whenever it hands prompts to the controller. Tracks are built from the SAM2 labels layer as it is (so the
user's edits count), with the parent links of the last tracking run.
"""

from __future__ import annotations

import time

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton, SpinBox
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from ...core.lineage import Lineage, build_lineage
from ...core.prompts import Prompt
from ...core.seeding import seed_prompts
from ...errors import InputError
from ..controller import CORRECTIONS, PROPAGATE, RETRACK, TRACK
from ..layer_prompts import LayerPrompts
from ..stack_plane import axis_letters

TRACKS_NAME = "SAM2 tracks"
TRACKS_REFRESH_S = 2.0  # the Tracks layer is rebuilt at most this often while a run writes
PROPAGATION_KINDS = (PROPAGATE, CORRECTIONS, RETRACK)


class TimelapsePanel(Container):
    """Time-lapse controls of a Sam2Widget (``widget``): see the module's doc."""

    def __init__(self, widget):
        super().__init__(labels=True)
        self._owner = widget
        self.seeds: dict[tuple[int, int], Prompt] = {}  # (frame, obj_id) -> mask prompt
        self.parents: dict[int, int] = {}  # daughter id -> mother id, from the last tracking run
        self.lineage: Lineage | None = None
        self._tracks_shown_at = 0.0
        self._tracks_every = TRACKS_REFRESH_S

        self.seed_layer = ComboBox(label="Seed layer", choices=self._labels_choices, nullable=True)
        self.seed_button = PushButton(text="Seed from Labels layer")
        self.points_per_side = SpinBox(label="Points per side", min=2, max=64, value=32)
        # SAM2's automatic mask generator's filters, with Meta's defaults
        self.iou_thresh = FloatSpinBox(label="IoU ≥", min=0.0, max=1.0, step=0.05, value=0.8,
                                       tooltip="keep masks whose predicted IoU is at least this (pred_iou_thresh)")
        self.stability_thresh = FloatSpinBox(label="Stability ≥", min=0.0, max=1.0, step=0.05, value=0.95,
                                             tooltip="keep masks that change little with the threshold "
                                             "(stability_score_thresh)")
        self.min_area = SpinBox(label="Min area", min=0, max=1_000_000, value=0,
                                tooltip="remove specks and fill holes smaller than this, in pixels "
                                "(min_mask_region_area)")
        self.find_button = PushButton(text="Find all objects on this frame")
        self.clear_button = PushButton(text="Clear seeds")
        self.seed_info = Label(value="")
        self.follow_divisions = CheckBox(text="Follow divisions (daughters get new ids)", value=True)
        self.track_button = PushButton(text="Track cells")
        self.review_label = Label(value="Review: frames where an object jumps or changes size")
        self.review = QListWidget()
        self.review.setMaximumHeight(120)
        self.review.itemClicked.connect(self._go_to_flag)
        self.export_folder = FileEdit(label="Export to", mode="d")
        self.export_button = PushButton(text="Export tracks (CTC, GEFF, CSV)")

        self.extend([
            Container(widgets=[self.seed_layer, self.seed_button], layout="horizontal", labels=False),
            Container(widgets=[self.points_per_side, self.find_button], layout="horizontal", labels=True),
            Container(widgets=[self.iou_thresh, self.stability_thresh, self.min_area], layout="horizontal",
                      labels=True),
            Container(widgets=[self.clear_button, self.seed_info], layout="horizontal", labels=False),
            Container(widgets=[self.follow_divisions, self.track_button], layout="horizontal", labels=False),
            review := Container(widgets=[self.review_label], labels=False),
            self.export_folder, self.export_button,
        ])
        review.native.layout().addWidget(self.review)
        self.run_controls = [self.seed_layer, self.seed_button, self.points_per_side, self.iou_thresh,
                             self.stability_thresh, self.min_area, self.find_button,
                             self.clear_button, self.follow_divisions, self.track_button, self.export_button]

        self.seed_button.clicked.connect(lambda: self.seed_from_labels())
        self.find_button.clicked.connect(lambda: self.find_objects())
        self.clear_button.clicked.connect(lambda: self.clear_seeds())
        self.track_button.clicked.connect(lambda: self.track_cells())
        self.export_button.clicked.connect(lambda: self.export_tracks())

    # ---- seeds ---------------------------------------------------------------------------------------------------

    def add_seeds_to(self, found: LayerPrompts) -> None:
        """The seeds join the prompts read from the layers (a seed's mask and clicks on its slice combine)."""
        found.prompts.extend(self.seeds.values())

    def seed_from_labels(self, layer=None) -> int:
        """Every label value on the shown slice of ``layer`` (default: the chosen Seed layer) becomes an object with
        that id, prompted by its mask. Returns the number of objects seeded."""
        widget = self._owner
        layer = self.seed_layer.value if layer is None else layer
        if layer is None:
            show_error("Choose a Labels layer to seed from (e.g. a Cellpose or StarDist result).")
            return 0
        target = widget.target_for_seeds()
        if target is None:
            return 0
        try:
            labels = _slice_of(layer, target.plane, target.frame)
            prompts = seed_prompts(labels, target.frame, target.plane.n_frames, labels.shape)
        except InputError as error:
            show_error(f"{layer.name!r}: {error}")
            return 0
        return self._set_seeds(target.frame, prompts, f"from {layer.name!r}")

    def find_objects(self) -> bool:
        """SAM2's automatic mask generator on the shown slice (in the background); the objects it finds become seeds
        with new ids."""
        return self._owner.find_objects({
            "points_per_side": int(self.points_per_side.value), "pred_iou_thresh": float(self.iou_thresh.value),
            "stability_score_thresh": float(self.stability_thresh.value),
            "min_mask_region_area": int(self.min_area.value),
        })

    def objects_found(self, frame: int, labels: np.ndarray) -> int:
        """Seeds from the automatic masks of ``frame``: ids after every id in use."""
        first = self._owner.next_free_id()
        shifted = np.where(labels > 0, labels.astype(np.int64) + first - 1, 0)
        prompts = seed_prompts(shifted, frame, self._owner.n_frames(), labels.shape)
        return self._set_seeds(frame, prompts, "found by SAM2")

    def clear_seeds(self) -> None:
        self.seeds.clear()
        self.seed_info.value = ""
        self._owner.seeds_changed()

    def _set_seeds(self, frame: int, prompts: list[Prompt], source: str) -> int:
        for prompt in prompts:
            self.seeds[(prompt.frame, prompt.obj_id)] = prompt
        self.seed_info.value = f"{len(self.seeds)} seed(s)"
        show_info(f"{len(prompts)} object(s) seeded on frame {frame} {source}.")
        self._owner.seeds_changed(frame)
        return len(prompts)

    def _labels_choices(self, _widget=None):
        widget = self._owner
        own = widget.prompt_layers.labels if widget.prompt_layers is not None else None
        return [(layer.name, layer) for layer in widget.viewer.layers if isinstance(layer, Labels) and layer is not own]

    # ---- tracking ------------------------------------------------------------------------------------------------

    def track_cells(self) -> bool:
        return self._owner.track_cells(divisions=bool(self.follow_divisions.value))

    @property
    def active(self) -> bool:
        """Whether the user works on a time-lapse here: seeds given, a Tracks layer shown, or the tracked axis is t.
        Then every propagation (not only Track cells) keeps the Tracks layer up to date."""
        owner = self._owner
        if self.seeds or any(layer.name == TRACKS_NAME for layer in owner.viewer.layers):
            return True
        image = owner.image.value
        return image is not None and owner.axis.value is not None and axis_letters(image)[owner.axis.value] == "t"

    def frame_written(self, kind: str) -> None:
        """A run wrote a frame: refresh the Tracks layer now and then (see ``active``)."""
        if kind == TRACK or (kind in PROPAGATION_KINDS and self.active):
            self.show_tracks()

    def run_finished(self, kind: str) -> None:
        if kind in PROPAGATION_KINDS and self.active:
            self.show_tracks(force=True)

    def tracked(self, result) -> None:
        """A tracking run ended: its parent links, then the Tracks layer and the review list from the labels."""
        self.parents = {daughter: mother for mother, (_, daughters) in result.divisions.items()
                        for daughter in daughters}
        self.show_tracks(force=True)

    def show_tracks(self, force: bool = False) -> None:
        """Rebuild the lineage from the SAM2 labels layer and show it as a Tracks layer (throttled while a run
        writes, unless ``force``), with the review list of flagged frames."""
        now = time.monotonic()
        if not force and now - self._tracks_shown_at < self._tracks_every:
            return
        self._tracks_shown_at = now
        try:
            self._rebuild_tracks()
        finally:
            # On a big stack a rebuild takes a while: refreshes then come more seldom, so that they never take more
            # than a tenth of the run's time.
            self._tracks_every = max(TRACKS_REFRESH_S, 10 * (time.monotonic() - now))

    def _rebuild_tracks(self) -> None:
        series = self._owner.label_series()
        if series is None:
            return
        labels, plane, layer = series
        present = set(np.unique(labels).tolist())
        parents = {d: m for d, m in self.parents.items() if d in present and m in present}
        try:
            self.lineage = build_lineage(labels, parents, infer_divisions=False)
        except InputError as error:
            show_warning(f"No tracks: {error}")
            return
        self._show_layer(self.lineage, plane, layer)
        self._fill_review(self.lineage)

    def _show_layer(self, lineage: Lineage, plane, labels_layer) -> None:
        viewer = self._owner.viewer
        if not len(lineage.tracks):
            return
        data = lineage.tracks
        scale = np.asarray(labels_layer.scale)[[plane.frame_axis, *plane.spatial_axes]]
        existing = next((layer for layer in viewer.layers if layer.name == TRACKS_NAME), None)
        graph = {int(k): [int(p) for p in v] for k, v in lineage.graph.items()}
        if existing is None:
            viewer.add_tracks(data, graph=graph, name=TRACKS_NAME, scale=scale, tail_length=10)
        else:
            existing.data = data
            existing.graph = graph

    def _fill_review(self, lineage: Lineage) -> None:
        self.review.clear()
        for flag in lineage.flags:
            item = QListWidgetItem(f"frame {flag.frame}: {flag.text}")
            item.setData(256, (flag.frame, flag.label))  # Qt.UserRole
            self.review.addItem(item)
        self.review_label.value = f"Review: {len(lineage.flags)} frame(s) where an object jumps or changes size"

    def _go_to_flag(self, item) -> None:
        frame, label = item.data(256)
        self._owner.go_to(int(frame), int(label))

    # ---- export --------------------------------------------------------------------------------------------------

    def export_tracks(self, folder=None) -> list:
        """Write the tracks of the SAM2 labels layer (with the last run's parent links) into ``folder`` (default:
        the Export to field): RES/ (Cell Tracking Challenge), tracks.geff, tracks.csv and flags.csv."""
        from ...io.track_export import write_tracking

        folder = self.export_folder.value if folder is None else folder
        if folder is None or str(folder) in ("", "."):
            show_error("Choose a folder to export the tracks to.")
            return []
        self.show_tracks(force=True)
        series = self._owner.label_series()
        if series is None or self.lineage is None:
            show_error("Nothing to export: track cells (or propagate) first.")
            return []
        formats = ("ctc", "geff", "csv")
        try:
            import geff  # noqa: F401
        except ImportError:
            formats = ("ctc", "csv")
            show_warning("GEFF not written: pip install geff")
        try:
            written = write_tracking(series[0], self.lineage, folder, formats, overwrite=True)
        except (InputError, OSError) as error:
            show_error(str(error))
            return []
        show_info(f"Tracks written to {folder}.")
        return written


def _slice_of(layer, plane, frame: int) -> np.ndarray:
    """The (H, W) labels of ``frame`` in a Labels layer with the image's dims, or a 2D one of the frame's size."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    height, width = (plane.shape[axis] for axis in plane.spatial_axes)
    if tuple(data.shape) == (height, width):
        return np.asarray(data)
    if tuple(data.shape) == tuple(plane.shape):
        return np.asarray(data[plane.frame_index(frame)])
    raise InputError(
        f"its shape {tuple(data.shape)} is neither the image's {tuple(plane.shape)} nor one frame's "
        f"({height}, {width})."
    )
