"""The layers the SAM2 widget makes for an image: a Points layer for clicks, a Shapes layer for boxes and the
Labels layer the masks go to, all aligned with the image (same scale, translate and rotation).

Points carry two features: ``positive`` (True / False) and ``obj_id``. A point is filled with its object's label
colour and ringed green (positive, a disc) or magenta (negative, a cross). A plain click adds a positive point,
a Shift-click a negative one (the other way round for one click after ``toggle_next_polarity``). Boxes carry
``obj_id`` and are outlined in their object's colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .layer_prompts import OBJ_ID, POSITIVE
from .stack_plane import layer_array

ROLE = "napari_sam2_role"  # metadata key marking the widget's layers ...
FOR_IMAGE = "napari_sam2_image"  # ... and the image (by name) they belong to
NEXT_INVERTED = "napari_sam2_next_click_inverted"  # points metadata: the next click has the other polarity
POSITIVE_BORDER = (0.0, 1.0, 0.0, 1.0)
NEGATIVE_BORDER = (1.0, 0.0, 1.0, 1.0)
POSITIVE_SYMBOL, NEGATIVE_SYMBOL = "disc", "x"


@dataclass
class PromptLayers:
    points: object  # napari.layers.Points
    boxes: object  # napari.layers.Shapes
    labels: object  # napari.layers.Labels


def find_or_create_prompt_layers(viewer, image_layer) -> PromptLayers:
    """The widget's layers for ``image_layer``, made (and added to the viewer) where missing."""
    labels = _find(viewer, image_layer, "labels") or viewer.add_layer(_new_labels(image_layer))
    boxes = _find(viewer, image_layer, "boxes")
    if boxes is None:
        boxes = viewer.add_layer(_new_boxes(image_layer))
        boxes.events.data.connect(lambda event: style_boxes(boxes, labels))
    points = _find(viewer, image_layer, "points")
    if points is None:
        points = viewer.add_layer(_new_points(image_layer))
        points.mouse_drag_callbacks.insert(0, polarity_from_click)
        points.events.data.connect(lambda event: style_points(points, labels))
    return PromptLayers(points, boxes, labels)


def polarity_from_click(layer, event) -> None:
    """Before napari's add-point handler runs: Shift held -> the next point is negative, else positive; after
    ``toggle_next_polarity`` the next click is the other way round (once)."""
    if str(layer.mode) != "add":
        return
    positive = "Shift" not in event.modifiers
    if layer.metadata.get(NEXT_INVERTED):
        positive = not positive
        layer.metadata[NEXT_INVERTED] = False
    defaults = layer.feature_defaults
    if POSITIVE in defaults and bool(defaults[POSITIVE].iloc[0]) == positive:
        return
    layer.feature_defaults = {**_defaults_dict(layer), POSITIVE: positive}


def toggle_next_polarity(points) -> bool:
    """Make the next click on ``points`` the other polarity (a plain click negative, a Shift-click positive), or
    undo that; returns whether the next plain click is now negative."""
    inverted = not points.metadata.get(NEXT_INVERTED, False)
    points.metadata[NEXT_INVERTED] = inverted
    return inverted


def set_current_object(layers: PromptLayers, obj_id: int) -> None:
    """New points and boxes belong to ``obj_id``; the labels layer paints with it too."""
    layers.points.feature_defaults = {**_defaults_dict(layers.points), OBJ_ID: int(obj_id)}
    layers.boxes.feature_defaults = {**_defaults_dict(layers.boxes), OBJ_ID: int(obj_id)}
    layers.labels.selected_label = int(obj_id)


def style_points(points, labels) -> None:
    """Colour every point from its features: object colour inside, green / magenta ring, disc / cross."""
    if not len(points.data):
        return
    features = points.features
    positive = features[POSITIVE].to_numpy(bool) if POSITIVE in features else np.ones(len(points.data), bool)
    obj_ids = features[OBJ_ID].to_numpy() if OBJ_ID in features else np.ones(len(points.data), int)
    points.face_color = np.array([object_colour(labels, obj_id) for obj_id in obj_ids])
    points.border_color = np.where(positive[:, None], POSITIVE_BORDER, NEGATIVE_BORDER)
    points.symbol = [POSITIVE_SYMBOL if p else NEGATIVE_SYMBOL for p in positive]


def style_boxes(boxes, labels) -> None:
    """Outline every box in its object's label colour."""
    if not len(boxes.data) or OBJ_ID not in boxes.features:
        return
    boxes.edge_color = np.array([object_colour(labels, obj_id) for obj_id in boxes.features[OBJ_ID].to_numpy()])


def object_colour(labels, obj_id) -> np.ndarray:
    """RGBA colour of a label value in the labels layer."""
    return np.asarray(labels.colormap.map(int(obj_id)), dtype=np.float32).reshape(-1)[:4]


def _find(viewer, image_layer, role: str):
    for layer in viewer.layers:
        metadata = getattr(layer, "metadata", {}) or {}
        if metadata.get(ROLE) == role and metadata.get(FOR_IMAGE) == image_layer.name:
            return layer
    return None


def _placement(image_layer, role: str) -> dict:
    """Keyword arguments that put a new layer exactly over the image."""
    return dict(
        name=f"{image_layer.name} SAM2 {role}",
        scale=image_layer.scale,
        translate=image_layer.translate,
        rotate=image_layer.rotate,
        shear=image_layer.shear,
        affine=image_layer.affine,
        metadata={ROLE: role, FOR_IMAGE: image_layer.name},
    )


def _new_labels(image_layer):
    from napari.layers import Labels

    shape = layer_array(image_layer).shape[: image_layer.ndim]
    return Labels(np.zeros(shape, np.int32), opacity=0.6, **_placement(image_layer, "labels"))


def _new_boxes(image_layer):
    from napari.layers import Shapes

    return Shapes(
        ndim=image_layer.ndim,
        features=pd.DataFrame({OBJ_ID: pd.Series([], dtype=np.int64)}),
        feature_defaults={OBJ_ID: 1},
        face_color="transparent",
        edge_color="yellow",
        edge_width=_marker_size(image_layer) / 4,
        **_placement(image_layer, "boxes"),
    )


def _new_points(image_layer):
    from napari.layers import Points

    points = Points(
        ndim=image_layer.ndim,
        features=pd.DataFrame({POSITIVE: pd.Series([], dtype=bool), OBJ_ID: pd.Series([], dtype=np.int64)}),
        feature_defaults={POSITIVE: True, OBJ_ID: 1},
        size=_marker_size(image_layer),
        border_width=0.25,
        border_color="lime",
        symbol=POSITIVE_SYMBOL,
        **_placement(image_layer, "points"),
    )
    return points


def _marker_size(image_layer) -> float:
    height, width = layer_array(image_layer).shape[image_layer.ndim - 2 : image_layer.ndim]
    return float(max(3.0, min(height, width) / 40))


def _defaults_dict(layer) -> dict:
    defaults = layer.feature_defaults
    return {name: defaults[name].iloc[0] for name in defaults.columns}
