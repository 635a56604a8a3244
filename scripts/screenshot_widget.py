"""Make the README screenshot: napari with the SAM2 widget on the synthetic nuclei sample, after two objects were
clicked on slice 12 (one of them with a negative click too) and propagated through slices 8 to 16; the widget's
object list shows both.

By default the model is the official tiny architecture with deterministic random weights (napari_sam2.engine.synthetic_checkpoints),
so the picture needs no download and is the same on every machine. Such weights do not find nuclei (a mask tends
to cover the bright cores of many), so the picture shows what the widget does, not how well SAM2 segments; the
script clicks the centres of the two nuclei whose masks can be seen side by side. Pass --checkpoint with an
official checkpoint for a picture of real segmentation.

    QT_API=pyqt6 xvfb-run -a -s "-screen 0 1600x1000x24 -nolisten tcp" python scripts/screenshot_widget.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SLICE = 12
SLICE_RANGE = (8, 16)
SYNTHETIC_CHECKPOINT = REPO / ".cache" / "screenshot" / "sam2.1_hiera_t_seed0.pt"
NEGATIVE_STEPS = ((0, 30), (0, -30), (30, 0), (-30, 0), (25, 25), (-25, -25))  # tried for the negative click
MAX_COVER = 0.25  # the two objects' masks may cover at most this part of the slice


def choose_prompts(model, image, truth):
    """Clicks (row, col, positive) per object id on SLICE: the centres of the two nuclei whose single-click masks
    are both well visible side by side (as the widget writes them: each object's mask decoded from its own clicks,
    the second one only where the first is not), and for the second one a negative click nearby that leaves it
    visible."""
    from napari_sam2 import Prompt
    from napari_sam2.core.tracking import TrackingSession

    session = TrackingSession(image, model=model, prefetch=0)

    def mask_of(obj_id, clicks):
        prompt = Prompt(SLICE, obj_id, points=[(row, col) for row, col, _ in clicks],
                        labels=[int(p) for _, _, p in clicks])
        results = session.set_prompts([prompt])  # also clears the object tried before
        return [result for result in results if obj_id in result.obj_ids][-1].mask(obj_id)

    def visible(a, b):
        """Pixels each of two objects shows when the second is written only where the first is not."""
        return int(a.sum()), int((b & ~a).sum())

    candidates = []
    for obj_id, label in enumerate(np.unique(truth[SLICE])[1:], start=1):
        rows, cols = np.nonzero(truth[SLICE] == label)
        click = (int(round(rows.mean())), int(round(cols.mean())), True)
        candidates.append((obj_id, click, mask_of(obj_id, [click])))
    best, best_score = None, 0
    for i, (_, _, a) in enumerate(candidates):
        for j, (_, _, b) in enumerate(candidates):
            if i != j and (a | b).mean() <= MAX_COVER and min(visible(a, b)) > best_score:
                best, best_score = (i, j), min(visible(a, b))
    if best is None:
        raise RuntimeError("no two nuclei give masks that can be shown side by side with this model")
    (_, first, first_mask), (second_id, second, _) = candidates[best[0]], candidates[best[1]]
    objects = {1: [first], 2: [second]}
    height, width = truth.shape[1:]
    for d_row, d_col in NEGATIVE_STEPS:
        negative = (second[0] + d_row, second[1] + d_col, False)
        if 0 <= negative[0] < height and 0 <= negative[1] < width:
            if min(visible(first_mask, mask_of(second_id, [second, negative]))) > 0:
                objects[2].append(negative)
                break
    session.close()
    return objects


def wait_until_idle(widget, app, timeout_s: float = 900.0) -> None:
    start = time.monotonic()
    while widget.busy:
        if time.monotonic() - start > timeout_s:
            raise TimeoutError("the SAM2 widget did not finish in time")
        app.processEvents()
        time.sleep(0.02)
    app.processEvents()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "widget.png")
    parser.add_argument(
        "--checkpoint", type=Path, default=None,
        help="a SAM2 checkpoint to use (e.g. the official sam2.1_hiera_tiny.pt) instead of synthetic weights",
    )
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication, QDialog

    from napari_sam2._napari._qt.widget import CHECKPOINT_FILE
    from napari_sam2._napari.prompt_layers import polarity_from_click
    from napari_sam2.engine.synthetic_checkpoints import write_synthetic_checkpoint
    from napari_sam2.models.loaded import get_model

    checkpoint = args.checkpoint or write_synthetic_checkpoint("sam2.1_hiera_t", 0, SYNTHETIC_CHECKPOINT)
    model = get_model(checkpoint, device="cpu")  # cached: the widget below gets this same model
    viewer = napari.Viewer(title="napari-sam2", show=True)
    viewer.window._qt_window.resize(1500, 920)
    viewer.open_sample("napari-sam2", "nuclei-3d")
    objects = choose_prompts(model, viewer.layers["nuclei 3D"].data, viewer.layers["nuclei 3D ground truth"].data)
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "Segment & track")
    app = QApplication.instance()

    widget.model.value = CHECKPOINT_FILE
    widget.checkpoint.value = checkpoint
    widget.device.value = "cpu"
    widget.limit.value = True
    widget.first.value, widget.last.value = SLICE_RANGE
    image = widget.image.value
    viewer.dims.set_point(0, image.data_to_world([SLICE, 0, 0])[0])

    points = widget.prompt_layers.points
    for obj_id, clicks in objects.items():
        widget.obj_id.value = obj_id
        for row, col, positive in clicks:
            event = type("Click", (), {"modifiers": () if positive else ("Shift",)})()
            polarity_from_click(points, event)  # what a (shift-)click does before napari adds the point
            points.add([SLICE, row, col])
            wait_until_idle(widget, app)

    widget.propagate()
    wait_until_idle(widget, app)
    viewer.layers.selection.active = points
    viewer.reset_view()
    for dialog in viewer.window._qt_window.findChildren(QDialog):
        if type(dialog).__name__ == "NapariQtNotification":
            dialog.close()  # no notification toast over the picture
    app.processEvents()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.output), canvas_only=False, flash=False)
    print(f"{widget.status.value} Saved {args.output}")
    viewer.close()


if __name__ == "__main__":
    main()
