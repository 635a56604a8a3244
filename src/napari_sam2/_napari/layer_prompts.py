"""napari layers -> SAM2 prompts: the points and boxes a user drew, as Prompts in the image's (row, col) pixels.

Prompt layers may have their own scale and translate: every position goes from the prompt layer's data
coordinates to world coordinates and from there to the image layer's data coordinates (``to_image_data``),
so what lines up on screen lines up for SAM2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.prompts import Prompt, object_id
from ..errors import InputError
from .stack_plane import StackPlane

POSITIVE = "positive"  # Points feature: True for a positive click, False for a negative one
OBJ_ID = "obj_id"  # Points and Shapes feature: the object (= label value) a prompt belongs to


@dataclass
class LayerPrompts:
    """The prompts found on one plane, and how many were skipped because they lie on another plane (4D data) or
    are not rectangles."""

    prompts: list[Prompt] = field(default_factory=list)
    off_plane: int = 0
    not_rectangles: int = 0

    @property
    def obj_ids(self) -> set[int]:
        return {prompt.obj_id for prompt in self.prompts}

    def on_frame(self, frame: int) -> list[Prompt]:
        return [prompt for prompt in self.prompts if prompt.frame == frame]


def to_image_data(image_layer, source_layer, positions) -> np.ndarray:
    """(N, D) positions in ``source_layer``'s data coordinates -> (N, image ndim) in ``image_layer``'s."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.size == 0:
        return np.empty((0, image_layer.ndim))
    if source_layer.ndim < image_layer.ndim:
        raise InputError(
            f"The layer {source_layer.name!r} has {source_layer.ndim} dimensions but the image {image_layer.name!r} "
            f"has {image_layer.ndim}: draw prompts on a layer with the image's dimensions (the SAM2 widget makes one)."
        )
    if source_layer is image_layer:
        return positions
    return np.array([image_layer.world_to_data(source_layer.data_to_world(p)) for p in positions])


def prompts_from_layers(image_layer, plane: StackPlane, points_layer=None, shapes_layer=None) -> LayerPrompts:
    """Every point and rectangle of the prompt layers that lies on ``plane``, as Prompts (one per point or box)."""
    found = LayerPrompts()
    if points_layer is not None and len(points_layer.data):
        _add_points(found, image_layer, plane, points_layer)
    if shapes_layer is not None and len(shapes_layer.data):
        _add_boxes(found, image_layer, plane, shapes_layer)
    return found


def _feature_column(layer, name: str, default, count: int) -> np.ndarray:
    features = layer.features
    if name in features:
        return features[name].to_numpy()
    return np.full(count, default)


def _add_points(found: LayerPrompts, image_layer, plane: StackPlane, layer) -> None:
    positions = to_image_data(image_layer, layer, layer.data)
    positive = _feature_column(layer, POSITIVE, True, len(positions))
    obj_ids = _feature_column(layer, OBJ_ID, 1, len(positions))
    for position, is_positive, obj_id in zip(positions, positive, obj_ids):
        frame = plane.frame_of(position)
        if frame is None:
            found.off_plane += 1
            continue
        label = 1 if bool(is_positive) else 0
        found.prompts.append(Prompt(frame, object_id(obj_id), points=[plane.row_col(position)], labels=[label]))


def _add_boxes(found: LayerPrompts, image_layer, plane: StackPlane, layer) -> None:
    obj_ids = _feature_column(layer, OBJ_ID, 1, len(layer.data))
    for vertices, shape_type, obj_id in zip(layer.data, layer.shape_type, obj_ids):
        if shape_type != "rectangle":
            found.not_rectangles += 1
            continue
        corners = to_image_data(image_layer, layer, vertices)
        frames = {plane.frame_of(corner) for corner in corners}
        if len(frames) != 1 or None in frames:
            found.off_plane += 1  # drawn on another plane, or tilted through several frames
            continue
        rows_cols = np.array([plane.row_col(corner) for corner in corners])
        (row0, col0), (row1, col1) = rows_cols.min(axis=0), rows_cols.max(axis=0)
        found.prompts.append(Prompt(frames.pop(), object_id(obj_id), box=(row0, col0, row1, col1)))
