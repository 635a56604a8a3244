"""The SAM2 dock widget end to end in a real (headless) napari viewer, with the fast model.

Run under Xvfb: QT_API=pyqt5 xvfb-run -a -s "-screen 0 1280x1024x24 -nolisten tcp" python -m pytest tests/test_widget.py
"""

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from napari_sam2._napari import widget as widget_module
from napari_sam2._napari.layers import OBJ_ID, POSITIVE
from napari_sam2._napari.prompt_layers import NEGATIVE_BORDER, POSITIVE_BORDER, object_colour, polarity_from_click
from napari_sam2.sample_data import make_nuclei_stack
from napari_sam2._napari.widget import CHECKPOINT_FILE, Sam2Widget
from sam2_clicks import confident_clicks

pytestmark = pytest.mark.gui

SLICE = 3  # the slice clicked on
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def nuclei():
    return make_nuclei_stack(shape=(6, 96, 128))[0]


@pytest.fixture(scope="module")
def clicks(nuclei, fast_model):
    """Two clicks on SLICE that the random-weight model answers with masks."""
    return confident_clicks(fast_model, nuclei, SLICE)


@pytest.fixture
def messages(monkeypatch):
    """Notifications the widget shows, by kind."""
    shown = {"error": [], "warning": [], "info": []}
    for kind in shown:
        monkeypatch.setattr(widget_module, f"show_{kind}", shown[kind].append)
    return shown


def open_widget(viewer, fast_model) -> Sam2Widget:
    widget = Sam2Widget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM2")
    widget.add_model_choice("fast test model", fast_model)
    return widget


def wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


def click(widget, qtbot, position, shift=False):
    """What a click in add mode does: our polarity callback first, then napari adds the point."""
    points = widget.prompt_layers.points
    polarity_from_click(points, SimpleNamespace(modifiers=("Shift",) if shift else ()))
    points.add(list(position))
    wait_idle(qtbot, widget)


def test_click_segment_propagate_correct_undo_and_a_second_object(make_napari_viewer, qtbot, fast_model, nuclei,
                                                                  clicks, messages):
    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei, name="nuclei", metadata={"axes": "zyx"}, scale=(2.0, 1.0, 1.0))
    widget = open_widget(viewer, fast_model)
    layers = widget.prompt_layers
    assert widget.axis.value == 0 and widget.channels.native.isHidden()
    assert viewer.layers.selection.active is layers.points and str(layers.points.mode) == "add"
    assert np.allclose(layers.labels.scale, image.scale) and layers.labels.data.shape == nuclei.shape

    viewer.dims.set_point(0, SLICE * 2.0)  # world z of slice 3
    click(widget, qtbot, (SLICE, *clicks[0]))
    live = layers.labels.data.copy()
    assert (live[SLICE] == 1).sum() > 100, "the slice is segmented live"
    assert not np.delete(live, SLICE, axis=0).any()

    widget.propagate()
    wait_idle(qtbot, widget)
    propagated = layers.labels.data.copy()
    assert all((frame == 1).any() for frame in propagated), widget.status.value
    assert widget.status.value == "Done: 6 slice(s)."
    layers.labels.undo()  # the whole run is one undo step
    np.testing.assert_array_equal(layers.labels.data, live)
    layers.labels.redo()
    np.testing.assert_array_equal(layers.labels.data, propagated)

    assert widget.next_object() == 2
    click(widget, qtbot, (SLICE, 60, 100), shift=True)  # a negative point of object 2 ...
    click(widget, qtbot, (SLICE, *clicks[1]))  # ... and a positive one
    features = layers.points.features
    assert features[POSITIVE].tolist() == [True, False, True] and features[OBJ_ID].tolist() == [1, 2, 2]
    assert np.allclose(layers.points.border_color, [POSITIVE_BORDER, NEGATIVE_BORDER, POSITIVE_BORDER])
    assert np.allclose(layers.points.face_color[1], object_colour(layers.labels, 2))

    widget.propagate()  # re-tracks object 2 from slice 3 only
    wait_idle(qtbot, widget)
    final = layers.labels.data
    assert (final == 2).any()
    assert np.all(final[propagated == 1] == 1), "object 1 keeps its pixels: overwrite is off"
    assert not messages["error"]


def test_cancel_keeps_finished_slices_and_undoes_in_one_step(make_napari_viewer, qtbot, fast_model, nuclei, clicks,
                                                             messages):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = open_widget(viewer, fast_model)
    widget.live.value = False
    layers = widget.prompt_layers
    layers.points.add([SLICE, *clicks[0]])
    widget.propagate()
    widget.worker.yielded.connect(lambda item: widget.cancel() if hasattr(item, "frame") else None)
    wait_idle(qtbot, widget)
    written = [bool(frame.any()) for frame in layers.labels.data]
    assert written[SLICE] and not written[0], written  # forward first from slice 3; cancelled before going back
    assert widget.status.value.startswith("Cancelled")
    layers.labels.undo()
    assert not layers.labels.data.any()
    assert not messages["error"]


def test_4d_stack_propagates_along_t_at_the_current_z_of_a_scaled_layer(make_napari_viewer, qtbot, fast_model,
                                                                         nuclei, messages):
    viewer = make_napari_viewer()
    data = np.stack([nuclei[2:5], nuclei[1:4]], axis=1)  # (t=3, z=2, y, x)
    row, col = confident_clicks(fast_model, data[:, 1], 1, n=1)[0]
    image = viewer.add_image(data, name="tz", metadata={"axes": "tzyx"}, scale=(1, 3, 0.5, 0.5), translate=(0, 0, 7, -4))
    widget = open_widget(viewer, fast_model)
    assert widget.axis.value == 1  # z is preferred ...
    widget.axis.value = 0  # ... but this is tracked along t
    widget.live.value = False
    layers = widget.prompt_layers
    viewer.dims.set_point(1, 1 * 3.0)  # z = 1 in world units
    layers.points.add([1, 1, row, col])
    world = image.data_to_world([1, 1, row, col])
    assert np.allclose(layers.points.data_to_world(layers.points.data[0]), world)
    widget.propagate()
    wait_idle(qtbot, widget)
    labels = layers.labels.data
    assert labels[:, 1].any() and not labels[:, 0].any(), "only the plane at z = 1 is segmented"
    assert np.allclose(layers.labels.translate, image.translate)
    assert not messages["error"]


def test_problems_are_notifications_that_say_what_to_do(make_napari_viewer, qtbot, fast_model, nuclei, clicks,
                                                        messages, tmp_path):
    viewer = make_napari_viewer()
    widget = open_widget(viewer, fast_model)
    widget.propagate()
    assert "Choose an image layer" in messages["error"].pop()

    viewer.add_image(nuclei[SLICE], name="flat")
    widget.image.value = viewer.layers["flat"]
    widget.propagate()
    assert "single 2D image" in messages["error"].pop()
    widget.segment_slice()
    assert "No points" in messages["warning"].pop()
    click(widget, qtbot, confident_clicks(fast_model, nuclei[SLICE][None], 0, n=1)[0])  # 2D: segmented live too
    assert (widget.prompt_layers.labels.data == 1).sum() > 100

    viewer.add_image(nuclei, name="stack")
    widget.image.value = viewer.layers["stack"]
    widget.propagate()
    assert "at least one point" in messages["warning"].pop()

    widget.model.value = CHECKPOINT_FILE
    widget.checkpoint.value = tmp_path / "missing.pt"
    widget.live.value = False
    widget.prompt_layers.points.add([SLICE, *clicks[0]])
    widget.propagate()
    wait_idle(qtbot, widget)
    assert "missing.pt does not exist" in messages["error"].pop()
    assert widget.status.value.startswith("Failed")
    assert not widget.prompt_layers.labels.data.any()


def test_a_rectangle_is_a_box_prompt_of_the_current_object(make_napari_viewer, qtbot, fast_model, nuclei, messages):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = open_widget(viewer, fast_model)
    widget.obj_id.value = 4
    boxes = widget.prompt_layers.boxes
    boxes.add_rectangles(np.array([[SLICE, 10, 20], [SLICE, 10, 60], [SLICE, 50, 60], [SLICE, 50, 20]], float))
    wait_idle(qtbot, widget)
    assert boxes.features[OBJ_ID].tolist() == [4]
    assert np.allclose(boxes.edge_color[0], object_colour(widget.prompt_layers.labels, 4))
    assert widget._session.prompted_pairs == ((SLICE, 4),)
    assert set(np.unique(widget.prompt_layers.labels.data)) <= {0, 4}
    assert not messages["error"]


def test_plugin_manifest_gives_the_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    rgb = np.zeros((3, 32, 40, 3), np.uint8)
    viewer.add_image(rgb, name="rgb", rgb=True)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "Segment & track (SAM2)")
    assert isinstance(widget, Sam2Widget)
    assert not widget.channels.native.isHidden() and widget.channels.value is None  # "RGB"
    assert widget.prompt_layers.labels.data.shape == (3, 32, 40)


def test_screenshot_shows_the_labels(make_napari_viewer, qtbot, fast_model, nuclei, clicks, messages, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(nuclei, name="nuclei")
    widget = open_widget(viewer, fast_model)
    viewer.dims.set_point(0, SLICE)
    click(widget, qtbot, (SLICE, *clicks[0]))
    layers = widget.prompt_layers
    layers.points.visible = layers.boxes.visible = False
    layers.labels.opacity = 1.0
    viewer.reset_view()
    with_labels = viewer.screenshot(canvas_only=True, flash=False)
    layers.labels.visible = False
    without_labels = viewer.screenshot(canvas_only=True, flash=False)
    save_png(with_labels, tmp_path / "widget_labels.png")

    colour = object_colour(layers.labels, 1)[:3] * 255
    near_label_colour = np.abs(with_labels[..., :3].astype(float) - colour).max(axis=-1) < 40
    assert near_label_colour.sum() > 500, "the object's colour is on the canvas"
    assert (np.abs(without_labels[..., :3].astype(float) - colour).max(axis=-1) < 40).sum() < 50


def save_png(rgba, path: Path):
    from skimage.io import imsave

    imsave(path, rgba, check_contrast=False)
    keep = os.environ.get("NAPARI_SAM2_SCREENSHOT_DIR")  # to look at the picture after a run
    if keep:
        imsave(Path(keep) / path.name, rgba, check_contrast=False)
