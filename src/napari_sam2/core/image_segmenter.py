"""Prompted segmentation of one frame at a time, without tracking: the image embedding of a frame is computed once and
every further click on it only runs the (fast) prompt decoder."""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

from ..engine import ImagePredictor, Sam2Model
from .frame_labels import FrameLabels, highest_logit_wins
from .frames import StackFrames
from .prompts import EnginePrompt


class ImageSegmenter:
    """Masks for the objects prompted on one frame of a StackFrames.

    Objects do not overlap, by the rule of the video tracker (Meta's non-overlapping constraint): a pixel two
    objects claim goes to the object with the highest mask logit there.
    """

    def __init__(self, model: Sam2Model):
        self._predictor = ImagePredictor(model)
        self._frame_key: Hashable | None = None
        self._frame_size = (0, 0)

    def set_frame(self, frames: StackFrames, index: int, key: Hashable | None = None) -> None:
        """Encode frame ``index`` unless the frame named ``key`` (default: this frames object and index) is set."""
        key = (id(frames), index) if key is None else key
        if key != self._frame_key:
            self._frame_key = None  # a failure below must not leave a stale frame marked as set
            # The model is given model_frame_size (a padded square when the preprocessing pads); masks are cropped back.
            self._predictor.set_model_input(frames[index], frames.model_frame_size)
            self._frame_key = key
            self._frame_size = frames.original_size

    def segment(self, prompts: Sequence[EnginePrompt]) -> FrameLabels:
        """One mask per object of ``prompts`` (all on the frame that was set), in the order of the prompts."""
        if self._frame_key is None:
            raise RuntimeError("set_frame must be called before segment")
        if not prompts:
            return FrameLabels(-1, (), np.zeros((0, *self._frame_size), bool))
        logits = np.stack([self._object_logits(prompt) for prompt in prompts])
        frame = prompts[0].frame
        return FrameLabels(frame, tuple(prompt.obj_id for prompt in prompts), highest_logit_wins(logits))

    def _object_logits(self, prompt: EnginePrompt) -> np.ndarray:
        # One click is ambiguous (a nucleus or the whole cell?): ask for three masks and keep the most confident one,
        # as SAM2's video predictor does for a single point.
        single_click = prompt.box_xy is None and prompt.points_xy is not None and len(prompt.points_xy) == 1
        logits, scores, _ = self._predictor.predict(
            point_coords=prompt.points_xy,
            point_labels=prompt.labels,
            box=prompt.box_xy,
            multimask_output=single_click,
            return_logits=True,
        )
        h, w = self._frame_size
        return logits[int(np.argmax(scores))][:h, :w]
