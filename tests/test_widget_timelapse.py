"""The widget's time-lapse section, headless: seed from a Labels layer (the user's layer unchanged), find all objects
(SAM2's automatic masks), track cells with divisions, the Tracks layer and review list, export; SAM2 itself (the
miniature 128-px model of conftest, every code path of the real one) on a small synthetic time-lapse.

Run under Xvfb: QT_API=pyqt6 PYTEST_QT_API=pyqt6 xvfb-run -a -s "-screen 0 1280x1024x24 -nolisten tcp" python -m pytest tests/test_widget_timelapse.py
"""

import numpy as np
import pytest
from test_widget import open_widget, save_png, wait_idle

from napari_sam2._napari._qt.timelapse_panel import TRACKS_NAME
from napari_sam2._napari.controller import FIND, TRACK
from napari_sam2.core.timelapse import TimelapseTracks
from napari_sam2.io.tracking_samples import make_tracking_timelapse

pytestmark = pytest.mark.gui

SEED_FRAME = 2


@pytest.fixture(scope="module")
def timelapse():
    image, truth, _ = make_tracking_timelapse(shape=(16, 64, 80), seed=3)
    return image[:10], truth[:10]  # 10 frames: room for a division (3 frames) and quick


def open_timelapse(make_napari_viewer, mini_model, timelapse, show=False):
    image, truth = timelapse
    viewer = make_napari_viewer(show=show)
    viewer.add_image(image, name="cells")
    cellpose = viewer.add_labels(truth.copy(), name="cellpose")
    widget = open_widget(viewer, mini_model)
    viewer.dims.set_current_step(0, SEED_FRAME)
    return viewer, widget, cellpose


def test_seed_track_review_and_export(make_napari_viewer, qtbot, mini_model, timelapse, messages, tmp_path):
    image, truth = timelapse
    viewer, widget, cellpose = open_timelapse(make_napari_viewer, mini_model, timelapse, show=True)
    before = cellpose.data.copy()
    panel = widget.timelapse
    assert [name for name, _ in panel._labels_choices()] == ["cellpose"]  # not the SAM2 labels layer
    panel.seed_layer.value = cellpose

    seeded = panel.seed_from_labels()
    wait_idle(qtbot, widget)

    ids = sorted(set(np.unique(truth[SEED_FRAME]).tolist()) - {0})
    assert seeded == len(ids) and sorted(obj_id for _, obj_id in panel.seeds) == ids
    np.testing.assert_array_equal(cellpose.data, before)  # the user's layer is never changed
    written = widget.prompt_layers.labels.data[SEED_FRAME]
    for obj_id in ids:  # the seed's mask is its label on the seed frame (at the model's resolution)
        ours, given = written == obj_id, truth[SEED_FRAME] == obj_id
        assert (ours & given).sum() / (ours | given).sum() > 0.8, obj_id
    assert set(ids) <= {row.obj_id for row in widget.objects.rows}  # the seeds are objects in the list

    kinds = []
    widget.controller.events.started.connect(lambda kind, total, description: kinds.append(kind))
    results = []
    widget.controller.events.tracked.connect(results.append)
    assert panel.track_cells()
    wait_idle(qtbot, widget)
    assert not messages["error"], messages["error"]
    assert kinds == [TRACK] and len(results) == 1 and isinstance(results[0], TimelapseTracks)
    labels = np.asarray(widget.prompt_layers.labels.data)
    # What the run tracked is in the layer, except where the layer's rule kept another object's pixels (a run never
    # writes over other objects' labels unless "Overwrite other objects' labels" is on).
    assert set(np.unique(labels).tolist()) <= set(np.unique(results[0].labels).tolist())
    assert (labels == results[0].labels).mean() > 0.97
    tracks = next(layer for layer in viewer.layers if layer.name == TRACKS_NAME)
    np.testing.assert_array_equal(tracks.data[:, 1:], panel.lineage.tracks[:, 1:])
    assert panel.review.count() == len(panel.lineage.flags)
    if panel.review.count():
        item = panel.review.item(0)
        panel._go_to_flag(item)
        frame, label = item.data(256)
        assert viewer.dims.current_step[0] == frame and widget.obj_id.value == label

    viewer.reset_view()
    save_png(viewer.screenshot(canvas_only=False, flash=False), tmp_path / "widget_timelapse.png")

    written = panel.export_tracks(tmp_path / "export")
    names = sorted(path.name for path in written)
    assert names == ["RES", "flags.csv", "tracks.csv", "tracks.geff"]
    assert len(list((tmp_path / "export" / "RES").glob("mask*.tif"))) == len(image)


def test_find_all_objects_seeds_new_ids_with_progress(make_napari_viewer, qtbot, mini_model, timelapse, messages):
    viewer, widget, _ = open_timelapse(make_napari_viewer, mini_model, timelapse)
    panel = widget.timelapse
    panel.points_per_side.value = 4  # a small grid: quick
    widget.obj_id.value = 5
    found, started, done = [], [], []
    widget.controller.events.objects_found.connect(lambda frame, labels: found.append((frame, labels)))
    widget.controller.events.started.connect(lambda kind, total, description: started.append((kind, total)))
    widget.controller.events.frame_done.connect(lambda labels, count, total: done.append((labels, count, total)))
    assert panel.find_objects()  # the button: Meta's default thresholds, which the random weights may not pass
    wait_idle(qtbot, widget)
    assert started == [(FIND, 1)]  # 4 x 4 points in one batch of 64: a progress bar of one step
    assert done == [(None, 1, 1)]
    assert found or "No object found" in messages["error"][0]

    found.clear()
    messages["error"].clear()
    # No filtering: the random-weight model's masks become seeds.
    panel.iou_thresh.value = panel.stability_thresh.value = 0.0
    assert panel.find_objects()
    wait_idle(qtbot, widget)
    assert not messages["error"], messages["error"]
    ((frame, labels),) = found
    assert frame == SEED_FRAME and labels.shape == timelapse[0].shape[1:]
    seeded = sorted(obj_id for _, obj_id in panel.seeds)
    assert len(seeded) == len(set(np.unique(labels).tolist()) - {0}) > 0
    assert seeded[0] > 5  # after every id in use
    written = widget.prompt_layers.labels.data[SEED_FRAME]
    assert set(np.unique(written).tolist()) - {0} <= set(seeded)  # the seeds were segmented on their slice
    panel.clear_seeds()
    assert not panel.seeds


def test_seeding_from_a_layer_of_another_shape_says_why(make_napari_viewer, qtbot, mini_model, timelapse, messages):
    viewer, widget, _ = open_timelapse(make_napari_viewer, mini_model, timelapse)
    other = viewer.add_labels(np.ones((3, 10, 10), np.uint8), name="other")
    assert widget.timelapse.seed_from_labels(other) == 0
    assert "neither the image's" in messages["error"][-1]
    assert not widget.timelapse.seeds


def test_after_seeding_propagate_keeps_a_tracks_layer(make_napari_viewer, qtbot, mini_model, timelapse, messages):
    """Seeds make the widget a time-lapse tracker: a plain Propagate (no divisions) also gives the Tracks layer, built
    from what the labels layer holds."""
    viewer, widget, cellpose = open_timelapse(make_napari_viewer, mini_model, timelapse)
    assert not widget.timelapse.active  # a plain stack without seeds: no Tracks layer after a run
    widget.timelapse.seed_from_labels(cellpose)
    wait_idle(qtbot, widget)
    assert widget.timelapse.active
    widget.propagate()
    wait_idle(qtbot, widget)
    assert not messages["error"], messages["error"]
    tracks = next(layer for layer in viewer.layers if layer.name == TRACKS_NAME)
    labels = np.asarray(widget.prompt_layers.labels.data)
    present = set(np.unique(labels).tolist()) - {0}
    assert {int(i) for i in np.unique(tracks.data[:, 0])} >= present  # one track (or more, across gaps) per object
    t, obj = int(tracks.data[0, 1]), int(tracks.data[0, 0])
    if obj in present:  # a first segment keeps the label's id: its centroid is that label's on that frame
        np.testing.assert_allclose(tracks.data[0, 2:], np.argwhere(labels[t] == obj).mean(axis=0))
