"""The SAM2 dock widget end to end in a real (headless) napari viewer.

Most tests run the widget over a stand-in session (tests/fake_session.py: discs at the clicks, no model), which
makes every state of a run quick and exact to check; the tests marked "fast model" run SAM2 itself (the 256-px
random-weight model).

Run under Xvfb: QT_API=pyqt6 PYTEST_QT_API=pyqt6 xvfb-run -a -s "-screen 0 1280x1024x24 -nolisten tcp" python -m pytest tests/test_widget.py
"""

import os
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fake_session import FakeSession
from napari.utils import progress
from sam2_clicks import confident_clicks

from napari_sam2._napari._qt.widget import CHECKPOINT_FILE, SHORTCUTS, Sam2Widget
from napari_sam2._napari.layer_prompts import OBJ_ID, POSITIVE
from napari_sam2._napari.prompt_layers import NEGATIVE_BORDER, POSITIVE_BORDER, object_colour, polarity_from_click
from napari_sam2.io.sample_data import make_nuclei_stack

pytestmark = pytest.mark.gui

SLICE = 3  # the slice clicked on
TIMEOUT_MS = 120_000
FAKE_MODEL = object()  # the model "loaded" for the fake session


@pytest.fixture(scope="module")
def nuclei():
    return make_nuclei_stack(shape=(6, 96, 128))[0]


@pytest.fixture(scope="module")
def clicks(nuclei, fast_model):
    """Two clicks on SLICE that the random-weight model answers with masks."""
    return confident_clicks(fast_model, nuclei, SLICE)


def open_widget(viewer, model, session_factory=None) -> Sam2Widget:
    from qtpy.QtWidgets import QApplication

    widget = Sam2Widget(viewer, session_factory=session_factory)
    viewer.window.add_dock_widget(widget, name="SAM2")
    widget.add_model_choice("test model", model)
    QApplication.processEvents()  # the widget makes its points layer ready for clicks once the GUI is idle
    return widget


def open_fake(viewer, delay=0.0, session=FakeSession) -> Sam2Widget:
    return open_widget(viewer, FAKE_MODEL, partial(session, delay=delay))


def wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


def click(widget, qtbot, position, shift=False):
    """What a click in add mode does: our polarity callback first, then napari adds the point."""
    points = widget.prompt_layers.points
    polarity_from_click(points, SimpleNamespace(modifiers=("Shift",) if shift else ()))
    points.add(list(position))
    wait_idle(qtbot, widget)


def open_bars():
    return list(progress._all_instances)


def run_controls(widget):
    return [widget.image, widget.model, widget.device, widget.axis, widget.contrast, widget.direction, widget.limit,
            widget.overwrite, widget.segment_button, widget.propagate_button, widget.remove_button,
            widget.retrack_button]


# ---- SAM2 itself (fast model) ------------------------------------------------------------------------------------


def test_click_segment_propagate_correct_undo_and_a_second_object(make_napari_viewer, qtbot, fast_model, nuclei,
                                                                  clicks, messages):
    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei, name="nuclei", metadata={"axes": "zyx"}, scale=(2.0, 1.0, 1.0))
    widget = open_widget(viewer, fast_model)
    layers = widget.prompt_layers
    assert widget.axis.value == 0 and widget.channels.native.isHidden()
    qtbot.waitUntil(lambda: viewer.layers.selection.active is layers.points)
    assert str(layers.points.mode) == "add"
    assert np.allclose(layers.labels.scale, image.scale) and layers.labels.data.shape == nuclei.shape

    viewer.dims.set_point(0, SLICE * 2.0)  # world z of slice 3
    click(widget, qtbot, (SLICE, *clicks[0]))
    live = layers.labels.data.copy()
    assert (live[SLICE] == 1).sum() > 100, "the slice is segmented live"
    assert not np.delete(live, SLICE, axis=0).any()
    widget.segment_slice()  # the same prompts: the same mask
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(layers.labels.data, live)

    widget.propagate()
    wait_idle(qtbot, widget)
    propagated = layers.labels.data.copy()
    assert all((frame == 1).any() for frame in propagated), widget.status.value
    assert widget.status.value == "Done: 6 slice(s)." and not open_bars()
    layers.labels.undo()  # the whole run is one undo step
    np.testing.assert_array_equal(layers.labels.data, live)
    layers.labels.redo()
    np.testing.assert_array_equal(layers.labels.data, propagated)

    assert widget.next_object() == 2
    click(widget, qtbot, (SLICE, 60, 100), shift=True)  # a negative point of object 2 ...
    assert any("only negative clicks" in message for message in messages["warning"])
    click(widget, qtbot, (SLICE, *clicks[1]))  # ... and a positive one
    features = layers.points.features
    assert features[POSITIVE].tolist() == [True, False, True] and features[OBJ_ID].tolist() == [1, 2, 2]
    assert np.allclose(layers.points.border_color, [POSITIVE_BORDER, NEGATIVE_BORDER, POSITIVE_BORDER])
    assert np.allclose(layers.points.face_color[1], object_colour(layers.labels, 2))
    assert [row.obj_id for row in widget.objects.rows] == [1, 2]

    widget.propagate()  # re-tracks object 2 from slice 3 only
    wait_idle(qtbot, widget)
    final = layers.labels.data
    assert (final == 2).any()
    assert np.all(final[propagated == 1] == 1), (
        "object 1 keeps its pixels: overwrite is off (this fails while TrackingSession.propagate_corrections names "
        "objects it does not re-track: object 1 comes with every frame of object 2's run)"
    )
    assert not messages["error"]


def test_cancel_keeps_finished_slices_and_undoes_in_one_step(make_napari_viewer, qtbot, fast_model, nuclei, clicks,
                                                             messages):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = open_widget(viewer, fast_model)
    widget.live.value = False
    layers = widget.prompt_layers
    layers.points.add([SLICE, *clicks[0]])
    widget.direction.value = "forward"
    widget.controller.events.frame_done.connect(lambda labels, done, total: widget.cancel() if done == 2 else None)
    widget.propagate()
    wait_idle(qtbot, widget)
    written = [bool(frame.any()) for frame in layers.labels.data]
    assert written[SLICE] and not any(written[:SLICE]), written  # forward from slice 3, stopped early
    assert widget.status.value.startswith("Cancelled") and not open_bars()
    assert all(control.enabled for control in run_controls(widget)) and not widget.cancel_button.enabled
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
    error = messages["error"].pop()
    assert "missing.pt does not exist" in error and "Model → “checkpoint file…”" in error
    assert widget.status.value.startswith("Failed")
    assert not widget.prompt_layers.labels.data.any()
    widget.segment_slice()
    assert not widget.status.value.startswith("Failed"), "a new action never shows an earlier failure"
    wait_idle(qtbot, widget)


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
    assert dict(widget.controller.session.prompted_frames) == {4: (SLICE,)}
    assert set(np.unique(widget.prompt_layers.labels.data)) <= {0, 4}
    assert not messages["error"]


def test_plugin_manifest_gives_the_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    rgb = np.zeros((3, 32, 40, 3), np.uint8)
    viewer.add_image(rgb, name="rgb", rgb=True)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "Segment & track")
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


# ---- the run's state, its writes and undo (fake session) -------------------------------------------------------------


def test_a_one_slice_run_and_a_cancelled_run_end_final_with_no_progress_bar_left(make_napari_viewer, qtbot, nuclei,
                                                                                  messages):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = open_fake(viewer, delay=0.05)
    widget.live.value = False
    widget.prompt_layers.points.add([SLICE, 40, 40])
    widget.limit.value = True
    widget.first.value = widget.last.value = SLICE
    widget.propagate()
    wait_idle(qtbot, widget)
    assert widget.status.value == "Done: 1 slice(s)." and not open_bars()
    assert widget.prompt_layers.labels.data[SLICE].any()

    widget.limit.value = False
    widget.prompt_layers.points.add([1, 40, 40])  # a correction: re-tracks from slice 1
    widget.controller.events.frame_done.connect(lambda labels, done, total: widget.cancel())
    widget.propagate()
    qtbot.waitUntil(lambda: widget.status.value.startswith("Cancel"), timeout=TIMEOUT_MS)
    wait_idle(qtbot, widget)
    assert widget.status.value.startswith("Cancelled:") and not open_bars()
    assert all(control.enabled for control in run_controls(widget)) and not widget.cancel_button.enabled
    assert not messages["error"]


def paint_stroke(labels, coords, value):
    with labels.block_history():
        for coord in coords:
            labels.paint(coord, value, refresh=False)


def test_a_run_locks_the_labels_and_its_controls_and_is_one_undo_step(make_napari_viewer, qtbot, nuclei, messages):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = open_fake(viewer, delay=0.02)
    widget.live.value = False
    labels = widget.prompt_layers.labels
    labels.brush_size = 1
    paint_stroke(labels, [(0, 5, 5), (0, 5, 6)], 9)  # the user's own labels, before the run
    before_run = labels.data.copy()
    labels.mode = "paint"
    widget.prompt_layers.points.add([SLICE, 40, 40])
    during = []

    def look(frame_labels, done, total):
        labels.undo()  # Ctrl-Z during the run: nothing to undo
        during.append((labels.editable, str(labels.mode), [c.enabled for c in run_controls(widget)],
                       widget.cancel_button.enabled, widget.obj_id.enabled))

    widget.controller.events.frame_done.connect(look)
    widget.propagate()
    wait_idle(qtbot, widget)
    assert during and all(state == (False, "pan_zoom", [False] * 12, True, True) for state in during)
    assert labels.editable and str(labels.mode) == "paint"
    after_run = labels.data.copy()
    assert (after_run == 1).sum() > 6 * 40 and np.all(after_run[before_run == 9] == 9)

    paint_stroke(labels, [(5, 90, 120), (5, 90, 121)], 9)  # a stroke after the run
    labels.undo()
    np.testing.assert_array_equal(labels.data, after_run)  # only the stroke goes
    labels.undo()
    np.testing.assert_array_equal(labels.data, before_run)  # the run, six slices, is one Ctrl-Z
    labels.redo()
    np.testing.assert_array_equal(labels.data, after_run)
    labels.undo()
    labels.undo()
    assert not labels.data.any(), "the stroke before the run is still undoable"
    assert not messages["error"]


@pytest.mark.parametrize("what", ["remove labels", "reshape labels", "remove image", "reshape image"])
def test_a_run_whose_layer_goes_away_stops_with_a_message_and_writes_nothing_more(make_napari_viewer, qtbot, nuclei,
                                                                                    messages, what):
    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei, name="nuclei")
    widget = open_fake(viewer, delay=0.05)
    widget.live.value = False
    labels = widget.prompt_layers.labels
    widget.prompt_layers.points.add([0, 40, 40])
    widget.direction.value = "forward"
    writes = []

    def on_frame(frame_labels, done, total):
        writes.append(int((labels.data > 0).sum()))
        if done == 2:
            if what == "remove labels":
                viewer.layers.remove(labels)
            elif what == "reshape labels":
                labels.data = np.zeros((6, 50, 50), np.int32)
            elif what == "reshape image":
                image.data = nuclei[:, :50]
            else:
                viewer.layers.remove(image)

    widget.controller.events.frame_done.connect(on_frame)
    widget.propagate()
    wait_idle(qtbot, widget)
    error = messages["error"][-1]
    expected = {"remove labels": "removed", "remove image": "removed", "reshape labels": "changed shape",
                "reshape image": "was replaced"}[what]
    assert expected in error and "stopped" in error
    assert widget.status.value.startswith("Failed") and not open_bars()
    assert labels.editable
    if what in ("remove image", "reshape image"):
        assert (labels.data > 0).any(axis=(1, 2)).tolist() == [True, True, False, False, False, False]
    elif what == "reshape labels":
        assert not labels.data.any()


def test_label_values_never_wrap_and_ids_always_fit(make_napari_viewer, qtbot, nuclei, messages):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = open_fake(viewer)
    widget.live.value = False
    layers = widget.prompt_layers
    layers.labels.data = layers.labels.data.astype(np.uint8)
    assert widget.obj_id.max == 255
    for obj_id in (300, 256):
        layers.points.add([SLICE, 40, 40])
        layers.points.features.loc[len(layers.points.data) - 1, OBJ_ID] = obj_id
        widget.propagate()
        wait_idle(qtbot, widget)
        error = messages["error"].pop()
        assert f"Object id {obj_id} does not fit" in error and "Convert data type" in error
        assert not layers.labels.data.any(), "nothing written, nothing wrapped"
        layers.points.data = np.empty((0, 3))

    layers.labels.data[0, 0, 0] = 255  # the largest uint8 id is used: New object finds a free one
    widget.obj_id.value = 255
    assert widget.next_object() == 1
    layers.labels.data = np.zeros(nuclei.shape, np.int64)
    layers.labels.data[0, 0, :3] = [1, 2, 2**40]  # an id beyond the box's range, painted by hand
    assert widget.obj_id.max == 2**31 - 1
    assert widget.next_object() == 3 and not messages["error"]


# ---- objects: the list, select, remove, re-track; shortcuts (fake session) -------------------------------------------


def two_objects_propagated(viewer, qtbot, widget):
    widget.live.value = False
    points = widget.prompt_layers.points
    points.add([SLICE, 30, 30])
    widget.next_object()
    points.add([SLICE, 60, 90])
    points.add([1, 62, 92])
    widget.propagate()
    wait_idle(qtbot, widget)


def test_the_object_list_selects_removes_and_retracks(make_napari_viewer, qtbot, nuclei, messages):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = open_fake(viewer)
    two_objects_propagated(viewer, qtbot, widget)
    layers = widget.prompt_layers
    assert [(row.obj_id, row.slices) for row in widget.objects.rows] == [(1, (SLICE,)), (2, (1, SLICE))]
    assert widget.objects.table.item(1, 1).text() == "1, 3"
    assert np.allclose(widget.objects.rows[1].colour, object_colour(layers.labels, 2))
    widget.objects.table.selectRow(0)
    assert widget.obj_id.value == 1
    widget.objects.table.selectRow(1)
    assert widget.obj_id.value == 2

    session = widget.controller.session
    with_both = layers.labels.data.copy()
    assert (with_both == 2).any(axis=(1, 2)).all()
    widget.remove_object()  # the current object: 2
    assert layers.points.features[OBJ_ID].tolist() == [1]
    assert not (layers.labels.data == 2).any(), "its labels go from every slice"
    assert ("remove_object", 2) in session.calls and session.obj_ids == (1,)
    assert widget.controller.session is session, "the session was not restarted"
    assert [row.obj_id for row in widget.objects.rows] == [1, 2]  # 2 is still the current id, without clicks
    layers.labels.undo()  # one step brings them all back
    np.testing.assert_array_equal(layers.labels.data, with_both)

    widget.obj_id.value = 1
    widget.retrack_object()
    wait_idle(qtbot, widget)
    assert session.calls[-1] == ("propagate", "both", None, (1,))
    assert widget.status.value == "Done: 6 slice(s)."
    assert not messages["error"]


def widget_callbacks(emitter, widget):
    """The callbacks of a napari event emitter that lead to ``widget`` (bound methods, our layer callbacks, and
    closures over it)."""
    found = []
    for callback in emitter.callbacks:
        if isinstance(callback, tuple):  # (weak reference to an object, method name)
            owner = callback[0]() if callable(callback[0]) else callback[0]
        else:
            owner = getattr(callback, "__self__", None) or getattr(callback, "widget", None)
            cells = getattr(callback, "__closure__", None) or ()
            if owner is None and any(cell.cell_contents is widget for cell in cells):
                owner = widget
        if owner is widget:
            found.append(callback)
    return found


def test_shortcuts_work_while_the_widget_lives_and_everything_is_released_on_close(make_napari_viewer, qtbot, nuclei,
                                                                                   messages):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    viewer.add_image(nuclei, name="nuclei")
    widget = open_fake(viewer)
    layers = widget.prompt_layers
    assert set(widget.bound_keys) == set(SHORTCUTS) and all(key in widget.help.value for key in ("Shift-S", "T"))
    keymap = {str(key) for key in viewer.keymap}
    assert {"N", "Shift+S", "Shift+Enter", "T", "Shift+Delete"} <= keymap
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.keyClick(canvas, Qt.Key.Key_N)
    assert widget.obj_id.value == 2
    qtbot.keyClick(canvas, Qt.Key.Key_T)
    click(widget, qtbot, (SLICE, 40, 40))
    assert layers.points.features[POSITIVE].tolist() == [False], "T: the next click is negative"
    click(widget, qtbot, (SLICE, 40, 60))
    assert layers.points.features[POSITIVE].tolist() == [False, True], "... once"
    qtbot.keyClick(canvas, Qt.Key.Key_S, Qt.KeyboardModifier.ShiftModifier)
    wait_idle(qtbot, widget)
    qtbot.keyClick(canvas, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    wait_idle(qtbot, widget)
    assert widget.status.value == "Done: 6 slice(s)."
    qtbot.keyClick(canvas, Qt.Key.Key_Delete, Qt.KeyboardModifier.ShiftModifier)
    assert not len(layers.points.data) and not (layers.labels.data == 2).any()

    session = widget.controller.session
    emitters = [viewer.layers.events.inserted, viewer.layers.events.removed, layers.points.events.data,
                layers.boxes.events.data, layers.labels.events.data]
    assert all(widget_callbacks(emitter, widget) for emitter in emitters[:4])
    widget.close()
    assert widget.closed and widget.bound_keys == ()
    assert not {"N", "Shift+S", "Shift+Enter", "T", "Shift+Delete"} & {str(key) for key in viewer.keymap}
    assert not [widget_callbacks(emitter, widget) for emitter in emitters if widget_callbacks(emitter, widget)]
    assert session.closed and widget.controller.session is None
    layers.points.add([SLICE, 40, 40])  # nothing listens any more: no run starts
    assert not widget.busy
    assert not messages["error"]


def test_removing_the_dock_releases_the_widget_and_a_recreated_layer_is_reconnected(make_napari_viewer, qtbot,
                                                                                   nuclei, messages):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = open_fake(viewer)
    old_points = widget.prompt_layers.points
    viewer.layers.remove(old_points)
    del old_points
    widget.segment_slice()  # makes the points layer again (a new object, maybe at a recycled id())
    assert "No points" in messages["warning"].pop()
    points = widget.prompt_layers.points
    assert points in viewer.layers
    click(widget, qtbot, (SLICE, 40, 40))  # the new layer is listened to: the click is segmented live
    assert widget.prompt_layers.labels.data[SLICE].any()

    dock = viewer.window._dock_widgets["SAM2"]
    viewer.window.remove_dock_widget(dock)
    assert widget.closed and widget.bound_keys == ()
    points.add([SLICE, 10, 10])
    assert not widget.busy


# ---- the first minutes (fake session) -----------------------------------------------------------------------------


def test_opened_before_the_data_a_sample_is_ready_for_the_first_click(make_napari_viewer, qtbot, messages):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "Segment & track")
    viewer.open_sample("napari-sam2", "nuclei-3d")  # the image, then its hidden ground truth
    layers = widget.prompt_layers
    assert widget.image.value is viewer.layers["nuclei 3D"]

    def ready():
        return viewer.layers.selection.active is layers.points and str(layers.points.mode) == "add"

    qtbot.waitUntil(ready)
    names = [layer.name for layer in viewer.layers]
    assert names[-3:] == ["nuclei 3D SAM2 labels", "nuclei 3D SAM2 boxes", "nuclei 3D SAM2 points"], names
    assert names.index("nuclei 3D ground truth") < names.index("nuclei 3D SAM2 points")
    widget.close()


def test_a_click_that_cannot_be_a_prompt_says_why(make_napari_viewer, qtbot, nuclei, messages):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = open_fake(viewer)
    points = widget.prompt_layers.points
    points.add([SLICE, 40, 400])  # off the image
    wait_idle(qtbot, widget)
    assert any("outside the image 'nuclei'" in message for message in messages["warning"])
    assert not messages["error"]
    other = viewer.add_image(nuclei[:, :50], name="other")
    widget.image.value = other
    points.add([SLICE, 40, 40])  # on the first image's points layer
    assert "the prompts of image 'nuclei'" in messages["warning"][-1]
    viewer.layers.remove(other)
    viewer.layers.remove(viewer.layers["nuclei"])
    assert widget.image.value is None
    points.add([SLICE, 20, 20])
    assert "no image is chosen" in messages["warning"][-1]


def test_empty_masks_are_explained(make_napari_viewer, qtbot, nuclei, messages):
    class Blind(FakeSession):
        def _decode(self, group):
            return np.zeros(self.frame_size, bool)

    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = open_fake(viewer, session=Blind)
    click(widget, qtbot, (SLICE, 40, 40))
    assert messages["warning"][-1].startswith(f"SAM2 found nothing at these clicks on slice {SLICE}")


def test_a_saturated_stack_is_named_with_the_widgets_fix(make_napari_viewer, qtbot, fast_model, nuclei, clicks,
                                                          messages):
    # SAM2 may be shown nothing where 2 % of the pixels sit at the top of the automatic range: say so, and how
    saturated = nuclei.copy()
    saturated.reshape(-1)[:: 50] = np.iinfo(saturated.dtype).max
    viewer = make_napari_viewer()
    viewer.add_image(saturated, name="saturated")
    widget = open_widget(viewer, fast_model)
    viewer.dims.set_point(0, SLICE)
    click(widget, qtbot, (SLICE, *clicks[0]))
    warned = [message for message in messages["warning"] if "contrast limits" in message]
    assert len(warned) == 1 and "%" in warned[0]
    click(widget, qtbot, (SLICE, *clicks[1]))  # once per session, not per click
    assert len([message for message in messages["warning"] if "contrast limits" in message]) == 1


def test_cancel_answers_within_a_second_in_a_slice_with_many_objects(make_napari_viewer, qtbot, nuclei, messages):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = open_fake(viewer, delay=0.3)  # 0.3 s an object: 20 objects take 6 s
    widget.live.value = False
    viewer.dims.set_point(0, SLICE)
    points = widget.prompt_layers.points
    for obj_id in range(1, 21):
        widget.obj_id.value = obj_id
        points.add([SLICE, 4 * obj_id, 40])
    widget.segment_slice()
    qtbot.waitUntil(lambda: widget.prompt_layers.labels.data[SLICE].any(), timeout=10_000)
    start = time.monotonic()
    widget.cancel()
    assert widget.status.value == "Cancelling…" and not widget.cancel_button.enabled
    wait_idle(qtbot, widget)
    assert time.monotonic() - start < 1.0
    assert all(control.enabled for control in run_controls(widget))
    assert len(np.unique(widget.prompt_layers.labels.data[SLICE])) < 10
    assert widget.status.value == "Cancelled."


def test_offline_the_error_names_the_widgets_own_fix(make_napari_viewer, qtbot, nuclei, messages, monkeypatch,
                                                     tmp_path):
    from checkpoint_server import closed_port_url

    monkeypatch.setenv("NAPARI_SAM2_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NAPARI_SAM2_BASE_URL", closed_port_url().rsplit("/", 1)[0])
    from napari_sam2.models import downloads

    monkeypatch.setattr(downloads, "RETRY_DELAYS_S", (0.01, 0.01))
    viewer = make_napari_viewer()
    viewer.add_image(nuclei, name="nuclei")
    widget = Sam2Widget(viewer, session_factory=FakeSession)
    viewer.window.add_dock_widget(widget, name="SAM2")
    widget.model.value = "sam2.1_hiera_tiny"
    click(widget, qtbot, (SLICE, 40, 40))
    error = messages["error"][-1]
    assert "refused" in error and "Model → “checkpoint file…”" in error


def test_a_download_shows_its_progress_in_the_widget(make_napari_viewer, qtbot, nuclei, messages, monkeypatch,
                                                     tmp_path):
    from checkpoint_server import PAYLOAD, CheckpointServer

    from napari_sam2.models import registry as models

    monkeypatch.setenv("NAPARI_SAM2_CACHE", str(tmp_path / "cache"))
    with CheckpointServer() as server:
        info = models.ModelInfo("test_model", "sam2.1_hiera_t", server.url("good.pt"), None, 0.1, "test checkpoint")
        monkeypatch.setitem(models.MODELS, "test_model", info)
        viewer = make_napari_viewer()
        viewer.add_image(nuclei, name="nuclei")
        widget = Sam2Widget(viewer, session_factory=FakeSession)
        viewer.window.add_dock_widget(widget, name="SAM2")
        widget.model.reset_choices()
        widget.model.value = "test_model"
        shown = []
        widget.controller.events.status_changed.connect(lambda text: shown.append(widget.status.value))
        click(widget, qtbot, (SLICE, 40, 40))
    downloads = [text for text in shown if text.startswith("Downloading test_model:")]
    assert downloads and downloads[-1].endswith(f"{len(PAYLOAD) / 1e6:.0f} MB (100 %)"), shown
    assert widget.controller.session.model == str(tmp_path / "cache" / "test_model.pt")
    assert widget.prompt_layers.labels.data[SLICE].any() and not messages["error"]


def save_png(rgba, path: Path):
    from skimage.io import imsave

    imsave(path, rgba, check_contrast=False)
    keep = os.environ.get("NAPARI_SAM2_SCREENSHOT_DIR")  # to look at the picture after a run
    if keep:
        imsave(Path(keep) / path.name, rgba, check_contrast=False)
