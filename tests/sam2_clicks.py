"""Clicks the test model answers with a real mask.

The tests run a model with random weights: whether a click yields a mask (object score above 0) depends on the
weights and on details of the engine, not on the image. Rather than hard-coding lucky pixels, tests ask here for
clicks that give a mask on the frame they use.
"""

from napari_sam2.core.frames import StackFrames
from napari_sam2.engine import Tracker

MIN_PIXELS = 100


def candidate_clicks(shape, step=24):
    """A grid of (row, col) clicks over a frame of ``shape``, away from the border."""
    height, width = shape
    return [(row, col) for row in range(step, height - step // 2, step) for col in range(step, width - step // 2, step)]


def confident_clicks(model, stack, frame, n=2, candidates=None):
    """The first ``n`` clicks (row, col) on ``frame`` of ``stack`` whose mask, as the tracker gives it for a
    newly prompted object, has at least MIN_PIXELS pixels and leaves most of the frame empty (random weights put
    it anywhere, not necessarily around the click)."""
    frames = StackFrames(stack, image_size=model.image_size, prefetch=0)
    tracker = Tracker(model, frames)
    height, width = frames.original_size
    chosen = []
    for obj_id, (row, col) in enumerate(candidates or candidate_clicks((height, width)), start=1):
        result = tracker.add_prompt(frame, obj_id, points=[(col, row)], labels=[1])
        mask = result.mask_logits[result.obj_ids.index(obj_id)].numpy() > 0
        if MIN_PIXELS <= mask.sum() <= 0.5 * mask.size:
            chosen.append((row, col))
            if len(chosen) == n:
                return chosen
    raise AssertionError(f"no {n} clicks on frame {frame} give a mask with this model")
