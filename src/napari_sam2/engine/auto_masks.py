"""Automatic mask generation ("segment everything"): the semantics of Meta's `SAM2AutomaticMaskGenerator`
(sam2/automatic_mask_generator.py and sam2/utils/amg.py), written for this engine.

    generator = AutomaticMaskGenerator(model, points_per_side=32)
    masks = generator.generate(rgb01)                 # (H, W, 3) float in [0, 1] -> list[AutoMask]
    labels = to_label_image(masks, rgb01.shape[:2])   # (H, W) int32, 0 = background

How masks are made (as Meta's):

1. Crops: the whole image (layer 0), then for each crop layer i = 1..crop_n_layers a (2^i x 2^i) set of overlapping
   crops (`crop_boxes`). Every crop is resized to the model input and encoded once.
2. Points: a regular grid of n x n points per crop (`layer_point_grids`; n = points_per_side for layer 0, divided by
   crop_n_points_downscale_factor^i for layer i), at the centres of an n x n tiling of the crop. They are decoded in
   batches of points_per_batch, one positive point per prompt, one batched decoder call per batch (3 masks per
   point with multimask_output, else 1).
3. Filters, per mask: predicted IoU > pred_iou_thresh (when > 0); stability score >= stability_score_thresh (when
   > 0), the stability score being computed on the low-res logits bilinearly upscaled to the crop's pixels; masks
   whose box lies within 20 px of a crop edge that is not an image edge are dropped.
4. Duplicates: box NMS (box_nms_thresh) within a crop, highest predicted IoU first; then, with several crops, box
   NMS across crops (crop_nms_thresh) preferring masks from smaller crops.
5. min_mask_region_area > 0: as SAM2's generator (which hands it to its image predictor as max_hole_area and
   max_sprinkle_area), holes of at most that many pixels are filled and specks of at most that many pixels removed
   in the low-res (model grid) logits of every mask, before upscaling and filtering (8-connectivity; regions split
   at logit 0, the threshold of Meta's image predictor, whatever mask_threshold is). SAM2's
   `generate` does not call `postprocess_small_regions` (SAM1's did); that full-resolution clean-up with a second
   NMS is `postprocess_small_regions` here, for callers that want it.

Output order (Meta's): with one crop (crop_n_layers=0), masks in descending predicted IoU (the order NMS keeps
them in); with several crops, masks of smaller crops first, each crop's in descending predicted IoU.

Differences from Meta's records: `crop_box` is (x0, y0, x1, y1) (Meta's record gives it as XYWH); `bbox` is Meta's
XYWH (x0, y0, x1 - x0, y1 - y0) with x1, y1 the last column / row of the mask (so w, h are one less than the pixel
extent, as Meta's); only binary masks are returned (no RLE output modes); explicit `point_grids` are not supported.
Each crop becomes the model input with `preprocess.model_input` (Meta's stretch to the square input), whatever
preprocessing profile the model was trained with.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .model import Sam2Model
from .preprocess import model_coords, model_input

CROP_EDGE_TOLERANCE = 20.0  # pixels: a box within this of a crop edge (not an image edge) touches it (Meta's atol)
LOW_RES_CLAMP = 32.0  # low-res logits fed back as a mask prompt (use_m2m) are clamped to +- this, as Meta's
HOLE_FILL_LOGIT = 10.0  # low-res clean-up: a filled hole becomes +10, a removed speck -10 (Meta's predictor)
PREDICTOR_MASK_THRESHOLD = 0.0  # the logit the low-res clean-up separates holes and specks at (Meta's predictor's)
UPSCALE_CHUNK = 32  # masks upscaled to crop size at a time (bounds memory for large images)


@dataclass
class AutoMask:
    """One automatically generated mask, in pixels of the original image."""

    mask: np.ndarray  # (H, W) bool
    area: int  # pixels in the mask
    bbox: tuple[int, int, int, int]  # (x0, y0, w, h) as Meta: w = x1 - x0, h = y1 - y0, x1 / y1 inclusive
    predicted_iou: float  # the decoder's IoU prediction
    stability_score: float  # IoU of the mask thresholded at mask_threshold +- stability_score_offset
    point: tuple[float, float]  # (x, y) the grid point that produced it
    crop_box: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the crop it was found in, x1 / y1 exclusive


# ---- geometry: point grids and crops -------------------------------------------------------------------------------

def point_grid(n_per_side: int) -> np.ndarray:
    """(n^2, 2) float64 (x, y) points in [0, 1]^2: the centres of an n x n tiling of the unit square, x varying
    fastest (Meta's `build_point_grid`)."""
    half_step = 1.0 / (2 * n_per_side)
    centres = np.linspace(half_step, 1.0 - half_step, n_per_side)
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def layer_point_grids(n_per_side: int, n_layers: int, downscale_factor: int) -> list[np.ndarray]:
    """The normalised point grid of crop layers 0..n_layers: layer i has int(n_per_side / downscale_factor^i) points
    per side (Meta's `build_all_layer_point_grids`)."""
    return [point_grid(int(n_per_side / downscale_factor**i)) for i in range(n_layers + 1)]


def crop_boxes(image_hw, n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes [x0, y0, x1, y1] (x1, y1 exclusive) and their layer indices (Meta's `generate_crop_boxes`).

    Layer 0 is the whole image. Layer i >= 1 has k = 2^i crops per side overlapping by
    int(overlap_ratio * short_side * 2 / k) pixels, each ceil((overlap * (k - 1) + side) / k) long (clipped to the
    image), listed column by column (x outer, y inner)."""
    h, w = (int(v) for v in image_hw)
    short_side = min(h, w)
    boxes, layers = [[0, 0, w, h]], [0]
    for layer in range(1, n_layers + 1):
        k = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / k))
        crop_w = -(-(overlap * (k - 1) + w) // k)  # ceil of the exact integer ratio
        crop_h = -(-(overlap * (k - 1) + h) // k)
        starts_x = [(crop_w - overlap) * i for i in range(k)]
        starts_y = [(crop_h - overlap) * i for i in range(k)]
        for x0 in starts_x:
            for y0 in starts_y:
                boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
                layers.append(layer)
    return boxes, layers


# ---- mask measures -------------------------------------------------------------------------------------------------

def stability_score(mask_logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """(..., H, W) logits -> (...) float32: pixels above mask_threshold + offset over pixels above mask_threshold -
    offset, i.e. the IoU of the two nested masks (Meta's `calculate_stability_score`; NaN when the looser mask is
    empty)."""
    inner = (mask_logits > mask_threshold + offset).flatten(-2).sum(-1)
    outer = (mask_logits > mask_threshold - offset).flatten(-2).sum(-1)
    return inner.float() / outer.float()


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., 4) int64 boxes (x0, y0, x1, y1) of the first / last column and row holding a pixel
    (inclusive); (0, 0, 0, 0) for an empty mask (Meta's `batched_mask_to_box`)."""
    h, w = masks.shape[-2:]
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=masks.device)
    rows = masks.any(dim=-1)  # (..., H)
    cols = masks.any(dim=-2)  # (..., W)
    row_idx = torch.arange(h, device=masks.device)
    col_idx = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, row_idx, h).amin(dim=-1)
    y1 = torch.where(rows, row_idx, -1).amax(dim=-1)
    x0 = torch.where(cols, col_idx, w).amin(dim=-1)
    x1 = torch.where(cols, col_idx, -1).amax(dim=-1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1)
    empty = ~rows.any(dim=-1)
    return torch.where(empty[..., None], torch.zeros_like(boxes), boxes)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(N, 4) x (M, 4) boxes (x0, y0, x1, y1) -> (N, M) IoU, areas (x1 - x0) * (y1 - y0) as torchvision's (NaN for
    two boxes of zero area)."""
    a = boxes1.float()
    b = boxes2.float()
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (torchvision's `nms` semantics): boxes in descending score (equal scores in
    their given order); a box is kept unless its IoU with a kept box is > iou_threshold. Returns the indices of the
    kept boxes (int64, on the CPU) in descending score."""
    n = int(boxes.shape[0])
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.sort(scores.detach().float().cpu(), descending=True, stable=True).indices
    ranked = boxes.detach().float().cpu()[order]
    suppressed = np.zeros(n, dtype=bool)
    kept = []
    for i in range(n):
        if suppressed[i]:
            continue
        kept.append(i)
        if i + 1 < n:
            overlaps = box_iou(ranked[i:i + 1], ranked[i + 1:])[0].numpy()
            suppressed[i + 1:] |= overlaps > iou_threshold
    return order[torch.tensor(kept, dtype=torch.int64)]


def near_crop_edge(boxes: torch.Tensor, crop_box, image_box, atol: float = CROP_EDGE_TOLERANCE) -> torch.Tensor:
    """(N, 4) boxes in image pixels -> (N,) bool: a side lies within atol of the crop's matching side while not
    within atol of the image's (Meta's `is_box_near_crop_edge`, on boxes already moved to image pixels)."""
    boxes = boxes.float()
    crop = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)[None]
    image = torch.as_tensor(image_box, dtype=torch.float32, device=boxes.device)[None]
    at_crop = (boxes - crop).abs() <= atol
    at_image = (boxes - image).abs() <= atol
    return (at_crop & ~at_image).any(dim=1)


def _connected_components(binary: np.ndarray) -> np.ndarray:
    """8-connected components of a 2-D bool array, labelled 1..n in raster order of their first pixel (0 = off).
    scikit-image is imported here, lazily: the only use of it in this module (the engine's postprocess uses it
    too)."""
    from skimage.measure import label

    return label(binary, connectivity=2, background=0)


def _clean_low_res(logits: torch.Tensor, mask_threshold: float, max_area: int) -> torch.Tensor:
    """(N, h, w) low-res logits with holes (8-connected regions <= mask_threshold, border ones included) of at most
    max_area pixels set to mask_threshold + 10 and specks (8-connected regions > mask_threshold) of at most max_area
    pixels set to mask_threshold - 10: SAM2's image-predictor post-processing (max_hole_area / max_sprinkle_area)
    that its automatic generator turns on with min_mask_region_area. As Meta's, both kinds of region are found in
    the logits as given (a speck is measured without the holes filled in it)."""
    original = logits.float().cpu().numpy()
    out = original.copy()
    for i in range(out.shape[0]):
        for fill_holes in (True, False):
            region = original[i] <= mask_threshold if fill_holes else original[i] > mask_threshold
            comps = _connected_components(region)
            if comps.max() == 0:
                continue
            small = np.bincount(comps.ravel()) <= max_area
            small[0] = False
            where = small[comps]
            if where.any():
                out[i][where] = mask_threshold + (HOLE_FILL_LOGIT if fill_holes else -HOLE_FILL_LOGIT)
    return torch.from_numpy(out).to(logits.device)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Meta's `remove_small_regions` (8-connectivity): mode "holes" fills holes (8-connected regions of background,
    border ones included) of fewer than area_thresh pixels; mode "islands" removes regions of fewer than area_thresh
    pixels, keeping the largest where all are that small. Returns the mask and whether any region was below the
    threshold (True even where keeping the largest leaves the mask as it was, as Meta's)."""
    if mode not in ("holes", "islands"):
        raise InputError(f"mode must be 'holes' or 'islands'; got {mode!r}.")
    mask = np.asarray(mask, dtype=bool)
    holes = mode == "holes"
    comps = _connected_components(~mask if holes else mask)
    sizes = np.bincount(comps.ravel())[1:]
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    if holes:
        return mask | np.isin(comps, np.flatnonzero(small) + 1), True
    large = np.flatnonzero(~small) + 1
    if len(large) == 0:
        large = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(comps, large), True


def postprocess_small_regions(masks: list[AutoMask], min_area: int, nms_thresh: float) -> list[AutoMask]:
    """Meta's `SAM2AutomaticMaskGenerator.postprocess_small_regions` on full-size masks: fill holes, then remove
    islands, of fewer than min_area pixels in every mask (`remove_small_regions`), recompute areas and boxes, and
    run box NMS again with unchanged masks preferred (score 1, changed ones 0). Returns new AutoMasks in Meta's
    order: unchanged masks first, then changed ones, each in their given order. Not called by `generate` (SAM2's
    generator does not call it either)."""
    if not masks:
        return []
    cleaned, scores = [], []
    for item in masks:
        mask, changed_holes = remove_small_regions(item.mask, min_area, "holes")
        mask, changed_islands = remove_small_regions(mask, min_area, "islands")
        cleaned.append(mask)
        scores.append(0.0 if (changed_holes or changed_islands) else 1.0)
    stacked = torch.from_numpy(np.stack(cleaned))
    boxes = masks_to_boxes(stacked)
    keep = nms(boxes, torch.tensor(scores), nms_thresh)
    out = []
    for i in keep.tolist():
        item = masks[i]
        if scores[i] == 1.0:
            out.append(item)
            continue
        x0, y0, x1, y1 = (int(v) for v in boxes[i])
        out.append(AutoMask(cleaned[i], int(cleaned[i].sum()), (x0, y0, x1 - x0, y1 - y0), item.predicted_iou,
                            item.stability_score, item.point, item.crop_box))
    return out


def to_label_image(masks: list[AutoMask], shape) -> np.ndarray:
    """Masks -> (H, W) int32 label image, 0 = background. Masks are ranked by descending predicted_iou (equal
    scores in list order); each pixel goes to the highest-ranked mask holding it; masks left with no pixel are
    dropped and the others numbered 1..n consecutively in rank order. InputError when a mask's shape is not
    `shape`."""
    try:
        h, w = (int(v) for v in tuple(shape)[:2])
    except (TypeError, ValueError):
        raise InputError(f"shape must be (height, width); got {shape!r}.") from None
    labels = np.zeros((h, w), dtype=np.int32)
    ranked = sorted(range(len(masks)), key=lambda i: -float(masks[i].predicted_iou))
    next_label = 1
    for i in ranked:
        mask = np.asarray(masks[i].mask, dtype=bool)
        if mask.shape != (h, w):
            raise InputError(f"mask {i} has shape {mask.shape}, not the label image's {(h, w)}.")
        free = mask & (labels == 0)
        if free.any():
            labels[free] = next_label
            next_label += 1
    return labels


# ---- the generator -------------------------------------------------------------------------------------------------

def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_float(name, value, low=-math.inf, high=math.inf, high_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number; got {value!r}.")
    value = float(value)
    if math.isfinite(value) and low <= value and (value < high if high_open else value <= high):
        return value
    if math.isfinite(high):
        wanted = f"in [{low:g}, {high:g}{')' if high_open else ']'}"
    elif math.isfinite(low):
        wanted = f">= {low:g}"
    else:
        wanted = "a finite number"
    raise InputError(f"{name} must be {wanted}; got {value!r}.")


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False; got {value!r}.")
    return bool(value)


@dataclass
class _Found:
    """Masks kept from one crop, in image pixels; each mask stored as the patch inside its box."""

    boxes: torch.Tensor  # (N, 4) int64 (x0, y0, x1, y1) inclusive
    ious: torch.Tensor  # (N,) float32
    stability: torch.Tensor  # (N,) float32
    points: torch.Tensor  # (N, 2) float32 (x, y)
    patches: list  # N bool arrays, mask[y0:y1 + 1, x0:x1 + 1]
    crop_box: list  # N crop boxes (x0, y0, x1, y1)

    @staticmethod
    def empty() -> _Found:
        return _Found(torch.zeros(0, 4, dtype=torch.int64), torch.zeros(0), torch.zeros(0), torch.zeros(0, 2), [], [])

    def select(self, index: torch.Tensor) -> _Found:
        idx = index.tolist()
        return _Found(self.boxes[index], self.ious[index], self.stability[index], self.points[index],
                      [self.patches[i] for i in idx], [self.crop_box[i] for i in idx])

    @staticmethod
    def cat(parts: list[_Found]) -> _Found:
        if not parts:
            return _Found.empty()
        return _Found(torch.cat([p.boxes for p in parts]), torch.cat([p.ious for p in parts]),
                      torch.cat([p.stability for p in parts]), torch.cat([p.points for p in parts]),
                      [x for p in parts for x in p.patches], [x for p in parts for x in p.crop_box])


class AutomaticMaskGenerator:
    """Masks for everything in an image, prompted by a grid of points (Meta's `SAM2AutomaticMaskGenerator`, with
    its SAM2 defaults and meanings; see the module docstring). Bad parameters raise InputError.

    points_per_side: grid points per side of the image (points_per_side^2 prompts in layer 0).
    points_per_batch: prompts decoded together (memory vs speed; results do not depend on it).
    pred_iou_thresh: keep masks whose predicted IoU is > this (0 turns the filter off), in [0, 1].
    stability_score_thresh: keep masks whose stability score is >= this (0 turns the filter off), in [0, 1].
    stability_score_offset: the logit shift (>= 0) of the two thresholds compared by the stability score.
    mask_threshold: the logit above which a pixel is in the mask.
    box_nms_thresh: box IoU above which the less confident of two masks of a crop is dropped, in [0, 1].
    crop_n_layers: extra layers of crops (layer i has 2^i x 2^i crops), >= 0.
    crop_nms_thresh: box IoU above which a mask of the larger crop is dropped, across crops, in [0, 1].
    crop_overlap_ratio: overlap of layer-1 crops as a fraction of the short image side, in [0, 1).
    crop_n_points_downscale_factor: layer i has points_per_side / factor^i points per side, >= 1.
    min_mask_region_area: holes and specks of at most this many low-res pixels are cleaned up (0 = off), >= 0.
    multimask_output: 3 masks per point (else 1).
    use_m2m: refine every mask once more with its own low-res logits as a mask prompt (single-mask output).
    """

    def __init__(self, model: Sam2Model, *, points_per_side: int = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.8, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, mask_threshold: float = 0.0, box_nms_thresh: float = 0.7,
                 crop_n_layers: int = 0, crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, min_mask_region_area: int = 0,
                 multimask_output: bool = True, use_m2m: bool = False):
        if not isinstance(model, Sam2Model):
            raise InputError(f"model must be a loaded SAM2 model (Sam2Model); got {type(model).__name__}.")
        self.model = model
        self.points_per_side = _check_int("points_per_side", points_per_side, 1)
        self.points_per_batch = _check_int("points_per_batch", points_per_batch, 1)
        self.pred_iou_thresh = _check_float("pred_iou_thresh", pred_iou_thresh, 0.0, 1.0)
        self.stability_score_thresh = _check_float("stability_score_thresh", stability_score_thresh, 0.0, 1.0)
        self.stability_score_offset = _check_float("stability_score_offset", stability_score_offset, 0.0)
        self.mask_threshold = _check_float("mask_threshold", mask_threshold)
        self.box_nms_thresh = _check_float("box_nms_thresh", box_nms_thresh, 0.0, 1.0)
        self.crop_n_layers = _check_int("crop_n_layers", crop_n_layers, 0)
        self.crop_nms_thresh = _check_float("crop_nms_thresh", crop_nms_thresh, 0.0, 1.0)
        self.crop_overlap_ratio = _check_float("crop_overlap_ratio", crop_overlap_ratio, 0.0, 1.0, high_open=True)
        self.crop_n_points_downscale_factor = _check_int(
            "crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1)
        self.min_mask_region_area = _check_int("min_mask_region_area", min_mask_region_area, 0)
        self.multimask_output = _check_bool("multimask_output", multimask_output)
        self.use_m2m = _check_bool("use_m2m", use_m2m)
        last = int(self.points_per_side / self.crop_n_points_downscale_factor**self.crop_n_layers)
        if last < 1:
            raise InputError(
                f"points_per_side={self.points_per_side} leaves no point in crop layer {self.crop_n_layers} "
                f"(divided by crop_n_points_downscale_factor={self.crop_n_points_downscale_factor} per layer): "
                "raise points_per_side or lower crop_n_layers / crop_n_points_downscale_factor."
            )
        self.point_grids = layer_point_grids(self.points_per_side, self.crop_n_layers,
                                             self.crop_n_points_downscale_factor)

    # ---- public --------------------------------------------------------------------------------------------------
    def crops(self, image_hw) -> tuple[list[list[int]], list[int]]:
        """The crop boxes (x0, y0, x1, y1) and layer indices used for an image of size (H, W)."""
        return crop_boxes(image_hw, self.crop_n_layers, self.crop_overlap_ratio)

    def num_batches(self, image_hw) -> int:
        """Decoder batches `generate` runs for an image of size (H, W): the `total` it reports to progress."""
        _, layers = self.crops(image_hw)
        return sum(math.ceil(len(self.point_grids[layer]) / self.points_per_batch) for layer in layers)

    @torch.inference_mode()
    def generate(self, image_rgb01, progress: Callable[[int, int], None] | None = None) -> list[AutoMask]:
        """Masks of an (H, W, 3) float RGB image in [0, 1] (numpy or torch). progress(done, total) is called after
        each decoder batch (total = `num_batches`). Returns AutoMasks in Meta's order (module docstring).
        InputError for an image of another shape, dtype or range, or too small for the crop layers."""
        image = self._check_image(image_rgb01)
        h, w = image.shape[-2:]
        boxes, layers = self.crops((h, w))
        for box in boxes:
            if box[2] <= box[0] or box[3] <= box[1]:
                raise InputError(
                    f"A {h} x {w} image is too small for crop_n_layers={self.crop_n_layers} (an empty crop "
                    f"{box}): lower crop_n_layers."
                )
        total = self.num_batches((h, w))
        state = {"done": 0, "total": total, "progress": progress}
        parts = [self._process_crop(image, box, layer, (h, w), state) for box, layer in zip(boxes, layers)]
        found = _Found.cat(parts)
        if len(boxes) > 1 and len(found.patches):
            areas = torch.tensor([float((b[2] - b[0]) * (b[3] - b[1])) for b in found.crop_box], dtype=torch.float64)
            found = found.select(nms(found.boxes, -areas, self.crop_nms_thresh))
        return self._records(found, (h, w))

    # ---- steps ---------------------------------------------------------------------------------------------------
    def _check_image(self, image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            tensor = image.detach()
        else:
            try:
                array = np.asarray(image)
            except (TypeError, ValueError):
                raise InputError(f"image must be an (H, W, 3) array; got {type(image).__name__}.") from None
            if array.dtype.kind != "f":
                raise InputError(f"image must be float RGB in [0, 1]; got {array.dtype}. Scale intensities to "
                                 "[0, 1] first (e.g. divide uint8 by 255).")
            tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if tensor.ndim != 3 or tensor.shape[2] != 3 or tensor.shape[0] < 1 or tensor.shape[1] < 1:
            raise InputError(f"image must be RGB of shape (H, W, 3); got shape {tuple(tensor.shape)}.")
        if not tensor.is_floating_point():
            raise InputError(f"image must be float RGB in [0, 1]; got {tensor.dtype}. Scale intensities to [0, 1] "
                             "first (e.g. divide uint8 by 255).")
        tensor = tensor.float()
        if not bool(torch.isfinite(tensor).all()):
            raise InputError("image holds NaN or infinite values.")
        low, high = float(tensor.min()), float(tensor.max())
        if low < 0.0 or high > 1.0:
            raise InputError(f"image values must lie in [0, 1]; got {low:g} to {high:g}. Scale intensities first.")
        return tensor.permute(2, 0, 1).to(self.model.device)

    def _decode(self, features, coords, labels, mask_input, multimask):
        """One batched decoder call: coords (B, 1, 2) model pixels -> low-res logits (B, M, h, w), IoUs (B, M)."""
        model = self.model
        image_embed, high_res = features
        with model.autocast():
            sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask_input)
            low_res, ious, _, _ = model.sam_mask_decoder(
                image_embed, model.sam_prompt_encoder.get_dense_pe(), sparse, dense,
                multimask_output=multimask, high_res_features=high_res,
            )
        return low_res.float(), ious.float()

    def _process_crop(self, image, crop_box, layer, image_hw, state) -> _Found:
        model = self.model
        x0, y0, x1, y1 = crop_box
        crop_hw = (y1 - y0, x1 - x0)
        with model.autocast():
            features = model.encode_image(model_input(image[:, y0:y1, x0:x1], model.image_size)[None])
        features = (model.features_without_memory(features), features.high_res)
        grid = self.point_grids[layer] * np.array([[crop_hw[1], crop_hw[0]]])
        points = torch.as_tensor(grid, dtype=torch.float32, device=model.device)
        parts = []
        for start in range(0, len(points), self.points_per_batch):
            parts.append(self._process_batch(features, points[start:start + self.points_per_batch], crop_box,
                                             image_hw))
            state["done"] += 1
            if state["progress"] is not None:
                state["progress"](state["done"], state["total"])
        found = _Found.cat(parts)
        found = found.select(nms(found.boxes, found.ious, self.box_nms_thresh))
        offset = torch.tensor([x0, y0], dtype=torch.int64)
        found.boxes = found.boxes + offset.repeat(2)[None]
        found.points = found.points + offset.float()[None]
        found.crop_box = [list(crop_box)] * len(found.patches)
        return found

    def _process_batch(self, features, points, crop_box, image_hw) -> _Found:
        """Masks of a batch of points (crop pixels), filtered; boxes and points still in crop pixels."""
        model = self.model
        crop_hw = (crop_box[3] - crop_box[1], crop_box[2] - crop_box[0])
        size = model.image_size
        coords = model_coords(points, crop_hw, size)[:, None, :]
        labels = torch.ones(len(points), 1, dtype=torch.int32, device=model.device)
        low_res, ious = self._decode(features, coords, labels, None, self.multimask_output)
        per_point = low_res.shape[1]
        low_res, ious = low_res.flatten(0, 1), ious.flatten(0, 1)
        points = points.repeat_interleave(per_point, dim=0)
        if self.use_m2m:  # every mask decoded again with its own (clamped) logits as the mask prompt
            prompts = low_res.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)[:, None]
            refined, refined_ious = [], []
            for start in range(0, len(points), self.points_per_batch):
                part = slice(start, start + self.points_per_batch)
                c = model_coords(points[part], crop_hw, size)[:, None, :]
                lab = torch.ones(len(c), 1, dtype=torch.int32, device=model.device)
                low, iou = self._decode(features, c, lab, prompts[part], False)
                refined.append(low[:, 0])
                refined_ious.append(iou[:, 0])
            low_res, ious = torch.cat(refined), torch.cat(refined_ious)
        if self.pred_iou_thresh > 0.0:
            keep = ious > self.pred_iou_thresh
            low_res, ious, points = low_res[keep], ious[keep], points[keep]
        if self.min_mask_region_area > 0 and len(low_res):
            # at logit 0 whatever mask_threshold is: Meta's generator leaves its image predictor's threshold at 0
            low_res = _clean_low_res(low_res, PREDICTOR_MASK_THRESHOLD, self.min_mask_region_area)

        kept = []
        for start in range(0, len(low_res), UPSCALE_CHUNK):
            part = slice(start, start + UPSCALE_CHUNK)
            logits = F.interpolate(low_res[part, None], size=crop_hw, mode="bilinear", align_corners=False)[:, 0]
            stability = stability_score(logits, self.mask_threshold, self.stability_score_offset)
            keep = stability >= self.stability_score_thresh if self.stability_score_thresh > 0.0 else \
                torch.ones_like(stability, dtype=torch.bool)
            masks = logits[keep] > self.mask_threshold
            boxes = masks_to_boxes(masks)
            offset = torch.tensor(crop_box[:2], device=boxes.device).repeat(2)[None]
            inside = ~near_crop_edge(boxes + offset, crop_box, [0, 0, image_hw[1], image_hw[0]])
            masks, boxes = masks[inside], boxes[inside]
            index = torch.nonzero(keep).flatten()[inside] + start
            patches = [m[b[1]:b[3] + 1, b[0]:b[2] + 1].cpu().numpy()
                       for m, b in zip(masks, boxes.cpu().tolist())]
            kept.append(_Found(boxes.cpu(), ious[index].cpu(), stability[keep][inside].cpu(),
                               points[index].cpu(), patches, [None] * len(patches)))
        return _Found.cat(kept)

    @staticmethod
    def _records(found: _Found, image_hw) -> list[AutoMask]:
        h, w = image_hw
        records = []
        for i, patch in enumerate(found.patches):
            x0, y0, x1, y1 = (int(v) for v in found.boxes[i])
            mask = np.zeros((h, w), dtype=bool)
            mask[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]] = patch
            x, y = (float(v) for v in found.points[i])
            records.append(AutoMask(
                mask=mask, area=int(patch.sum()), bbox=(x0, y0, x1 - x0, y1 - y0),
                predicted_iou=float(found.ious[i]), stability_score=float(found.stability[i]), point=(x, y),
                crop_box=tuple(int(v) for v in found.crop_box[i]),
            ))
        return records

    postprocess_small_regions = staticmethod(postprocess_small_regions)
