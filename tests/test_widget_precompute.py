"""The widget's Precompute: every slice's image features stored on disk (with progress), after which runs on the
stack skip the image encoder and give the same labels.

Runs SAM2 itself (the 256-px random-weight fast model) on a 4-slice stack in a real (headless) napari viewer. Each
test stores features in a folder of its own (NAPARI_SAM2_FEATURES).

Run under Xvfb: QT_API=pyqt6 PYTEST_QT_API=pyqt6 xvfb-run -a -s "-screen 0 1280x1024x24 -nolisten tcp" python -m pytest tests/test_widget_precompute.py
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import SMALL_STACK_FRAME, clear_feature_memory
from napari.utils import progress
from test_widget import open_widget, wait_idle

from napari_sam2._napari.controller import PRECOMPUTE
from napari_sam2._napari.layer_prompts import OBJ_ID, POSITIVE
from napari_sam2._napari.prompt_layers import polarity_from_click
from napari_sam2.api import Prompt, segment_stack
from napari_sam2.core.feature_store import shared_feature_cache
from napari_sam2.core.tensor_store import ZarrTensorStore

pytestmark = pytest.mark.gui

FRAME = SMALL_STACK_FRAME
SCRATCH = Path("/tmp/scratch")  # a copy of the screenshot, to look at


def record_runs(widget):
    """The controller's events of each run, and the totals of the progress bars open at each slice done."""
    seen = SimpleNamespace(started=[], frames=[], bar_totals=[], finished=[], failed=[])
    events = widget.controller.events
    events.started.connect(lambda kind, total, description: seen.started.append((kind, total)))

    def frame_done(labels, done, total):
        seen.frames.append((labels, done, total))
        seen.bar_totals.append([bar.total for bar in progress._all_instances])

    events.frame_done.connect(frame_done)
    events.finished.connect(lambda kind, done: seen.finished.append((kind, done)))
    events.failed.connect(seen.failed.append)
    return seen


def precompute(widget, qtbot):
    widget.precompute_button.clicked.emit()  # what pressing the button does
    assert widget.busy, "Precompute started no run"
    wait_idle(qtbot, widget)


def add_point(widget, qtbot, position, obj_id, positive=True):
    """A (shift-)click of object ``obj_id`` in add mode: our polarity callback first, then napari adds the point."""
    widget.obj_id.value = obj_id
    points = widget.prompt_layers.points
    polarity_from_click(points, SimpleNamespace(modifiers=() if positive else ("Shift",)))
    points.add(list(position))
    wait_idle(qtbot, widget)


def test_precompute_stores_every_slice_with_progress_and_writes_no_labels(make_napari_viewer, qtbot, fast_model,
                                                                          small_stack, features, messages,
                                                                          encoder_calls):
    n = small_stack.shape[0]
    clear_feature_memory()
    viewer = make_napari_viewer()
    viewer.add_image(small_stack, name="nuclei")
    widget = open_widget(viewer, fast_model)
    assert widget.features.value == ""  # no session yet
    seen = record_runs(widget)

    precompute(widget, qtbot)

    assert not messages["error"] and not seen.failed
    assert seen.started == [(PRECOMPUTE, n)]
    assert [(labels, done, total) for labels, done, total in seen.frames] == [(None, i, n) for i in range(1, n + 1)]
    assert seen.bar_totals and all(n in totals for totals in seen.bar_totals), seen.bar_totals  # a progress bar of n
    assert not list(progress._all_instances), "the progress bar is closed at the end"
    assert seen.finished == [(PRECOMPUTE, n)]
    assert "stored" in widget.status.value, widget.status.value
    assert widget.features.value == f"features cached: {n} / {n} slices"
    assert len(ZarrTensorStore(features).keys()) == n
    assert len(encoder_calls) == n
    assert not widget.prompt_layers.labels.data.any(), "Precompute writes no labels"
    assert widget.precompute_button.enabled and widget.propagate_button.enabled and not widget.cancel_button.enabled

    # Again: everything is stored already, so nothing is computed (the memory cleared: it is the disk's doing).
    clear_feature_memory()
    precompute(widget, qtbot)
    assert len(encoder_calls) == n
    assert widget.features.value == f"features cached: {n} / {n} slices"
    assert len(ZarrTensorStore(features).keys()) == n


def test_after_precompute_propagate_skips_the_encoder_and_gives_the_same_labels(
        make_napari_viewer, qtbot, monkeypatch, tmp_path, fast_model, small_stack, small_stack_clicks, features,
        messages, encoder_calls):
    (r1, c1), (r2, c2) = small_stack_clicks
    prompts = [Prompt(FRAME, 1, [(r1, c1), (90, 2)], [1, 0]), Prompt(FRAME, 2, [(r2, c2)], [1])]
    # The labels without any cache: nothing in memory, an empty store (and left empty).
    empty = tmp_path / "no_features"
    monkeypatch.setenv("NAPARI_SAM2_FEATURES", str(empty))
    clear_feature_memory()
    expected = segment_stack(small_stack, prompts, model=fast_model)
    assert set(np.unique(expected)) == {0, 1, 2}
    assert ZarrTensorStore(empty).keys() == []
    assert len(encoder_calls) >= small_stack.shape[0]  # the encoder ran (the counting works)
    monkeypatch.setenv("NAPARI_SAM2_FEATURES", str(features))

    clear_feature_memory()
    viewer = make_napari_viewer()
    viewer.add_image(small_stack, name="nuclei")
    widget = open_widget(viewer, fast_model)
    widget.live.value = False
    before = len(encoder_calls)
    precompute(widget, qtbot)
    n = small_stack.shape[0]
    assert len(ZarrTensorStore(features).keys()) == n and len(encoder_calls) - before == n

    clear_feature_memory()  # the features must come from disk
    before = len(encoder_calls)
    for prompt in prompts:
        for (row, col), label in zip(prompt.points, prompt.labels):
            add_point(widget, qtbot, (prompt.frame, row, col), prompt.obj_id, positive=bool(label))
    points = widget.prompt_layers.points
    assert points.features[OBJ_ID].tolist() == [1, 1, 2] and points.features[POSITIVE].tolist() == [True, False, True]
    widget.propagate()
    wait_idle(qtbot, widget)

    assert not messages["error"], messages["error"]
    assert widget.status.value == f"Done: {n} slice(s).", widget.status.value
    assert len(encoder_calls) == before, "Propagate ran the image encoder on slices whose features are stored"
    assert shared_feature_cache().store_hits >= n
    np.testing.assert_array_equal(widget.prompt_layers.labels.data, expected)
    assert widget.features.value == f"features cached: {n} / {n} slices"


def test_precompute_on_a_2d_image_says_there_are_no_slices_and_starts_nothing(make_napari_viewer, qtbot, fast_model,
                                                                               small_stack, features, messages,
                                                                               encoder_calls):
    viewer = make_napari_viewer()
    viewer.add_image(small_stack[FRAME], name="flat")
    widget = open_widget(viewer, fast_model)
    assert widget.image.value is viewer.layers["flat"]
    seen = record_runs(widget)

    widget.precompute_button.clicked.emit()

    assert len(messages["error"]) == 1 and "no slices" in messages["error"][0], messages
    assert not widget.busy and widget.controller.session is None
    assert not seen.started and not seen.frames and not seen.finished
    assert encoder_calls == []
    assert not features.exists() or not any(features.iterdir())
    assert widget.precompute_button.enabled


def test_screenshot_after_precompute(make_napari_viewer, qtbot, fast_model, small_stack, features, messages, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(small_stack, name="nuclei")
    widget = open_widget(viewer, fast_model)
    precompute(widget, qtbot)
    n = small_stack.shape[0]
    assert widget.features.value == f"features cached: {n} / {n} slices"
    qtbot.wait(50)  # let the labels repaint

    path = tmp_path / "precompute_widget.png"
    picture = widget.native.grab()
    assert picture.save(str(path))
    assert path.stat().st_size > 0
    assert picture.width() > 100 and picture.height() > 100
    assert not messages["error"]
    SCRATCH.mkdir(parents=True, exist_ok=True)
    picture.save(str(SCRATCH / "precompute_widget.png"))
