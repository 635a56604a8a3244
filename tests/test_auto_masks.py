"""The automatic mask generator (engine/auto_masks.py) against Meta's SAM2AutomaticMaskGenerator semantics.

With synthetic weights the masks mean nothing, so what is checked is the machinery: the geometry (point grids,
crop boxes) and the pure-torch pieces against Meta's sam2/utils/amg.py, NMS / stability / clean-up against
hand-computed cases, and, end to end, the whole pipeline against Meta's own `SAM2AutomaticMaskGenerator` run on
the same model. Meta's generator imports torchvision (not installed here): the test gives it a stand-in whose NMS is
a naive reference written below, and whose image transforms are never used (the crops are embedded by this
engine's encoder in both runs, so the comparison is of everything after the encoder). Meta's package comes from
/work/sam2ref or $SAM2_REFERENCE_SRC; the oracle tests skip without it.
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_sam2.engine.auto_masks import (
    AutoMask,
    AutomaticMaskGenerator,
    box_iou,
    crop_boxes,
    layer_point_grids,
    masks_to_boxes,
    near_crop_edge,
    nms,
    point_grid,
    postprocess_small_regions,
    remove_small_regions,
    stability_score,
    to_label_image,
)
from napari_sam2.engine.preprocess import model_input
from napari_sam2.errors import InputError

META_SRC = Path(os.environ.get("SAM2_REFERENCE_SRC", "/work/sam2ref"))
SKIP_META = f"Meta's sam2 package not found at {META_SRC} (set SAM2_REFERENCE_SRC)"


# ---- Meta's code as an oracle ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def meta_amg():
    """Meta's sam2.utils.amg (pure numpy / torch)."""
    if not (META_SRC / "sam2" / "utils" / "amg.py").exists():
        pytest.skip(SKIP_META)
    added = str(META_SRC) not in sys.path
    if added:
        sys.path.insert(0, str(META_SRC))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = pytest.importorskip("sam2.utils.amg", reason=SKIP_META)
    yield module
    if added:
        sys.path.remove(str(META_SRC))


class _Identity(torch.nn.Module):
    """Stands in for torchvision's ToTensor / Resize / Normalize, which the oracle never calls on an image."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _reference_iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else float("nan")


def _reference_batched_nms(boxes, scores, idxs, iou_threshold):
    """torchvision's batched_nms, naively: by descending score, a box is kept unless a kept box of its category
    overlaps it by IoU > iou_threshold."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept = []
    for i in order:
        if all(int(idxs[j]) != int(idxs[i]) or not _reference_iou(boxes[i], boxes[j]) > iou_threshold for j in kept):
            kept.append(i)
    return torch.tensor(kept, dtype=torch.int64)


def _reference_connected_components(mask):
    """Meta's CUDA extension `get_connected_componnets`: 8-connected labels and, per pixel, its component's area."""
    from scipy import ndimage

    flat = mask.cpu().numpy().astype(bool)
    labels = np.zeros(flat.shape, dtype=np.int32)
    counts = np.zeros(flat.shape, dtype=np.int32)
    for i in range(flat.shape[0]):
        lab, _ = ndimage.label(flat[i, 0], structure=np.ones((3, 3)))
        labels[i, 0] = lab
        counts[i, 0] = np.where(lab > 0, np.bincount(lab.ravel())[lab], 0)
    return torch.from_numpy(labels), torch.from_numpy(counts)


@pytest.fixture(scope="module")
def meta_generator(meta_amg):
    """Meta's SAM2AutomaticMaskGenerator class, importable without torchvision and the CUDA extension (stand-ins
    installed for the module's lifetime and removed afterwards)."""
    stubs = {}
    try:
        import torchvision  # noqa: F401
    except ImportError:
        tv = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")
        boxes = types.ModuleType("torchvision.ops.boxes")
        boxes.batched_nms = _reference_batched_nms
        boxes.box_area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        transforms = types.ModuleType("torchvision.transforms")
        transforms.ToTensor = transforms.Resize = transforms.Normalize = _Identity
        tv.ops, ops.boxes, tv.transforms = ops, boxes, transforms
        stubs.update({"torchvision": tv, "torchvision.ops": ops, "torchvision.ops.boxes": boxes,
                      "torchvision.transforms": transforms})
    ext = types.ModuleType("sam2._C")
    ext.get_connected_componnets = _reference_connected_components
    stubs["sam2._C"] = ext
    before = set(sys.modules)
    sys.modules.update(stubs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        yield SAM2AutomaticMaskGenerator
    finally:
        for name in set(sys.modules) - before | set(stubs):
            if name in stubs or name.startswith(("sam2.automatic", "sam2.sam2_image", "sam2.utils.transforms")):
                sys.modules.pop(name, None)


def run_meta(generator_class, model, image, **kwargs):
    """Meta's generator on `model`, each crop embedded by this engine's encoder (model_input of the crop)."""
    generator = generator_class(model, **kwargs)
    predictor = generator.predictor

    def set_image(crop):
        predictor.reset_predictor()
        x = model_input(torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1), model.image_size)
        features = model.encode_image(x[None])
        predictor._features = {"image_embed": model.features_without_memory(features),
                               "high_res_feats": list(features.high_res)}
        predictor._orig_hw = [crop.shape[:2]]
        predictor._is_image_set = True

    predictor.set_image = set_image
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return generator.generate(image)


def assert_same_as_meta(ours: list[AutoMask], meta: list[dict]):
    assert len(ours) == len(meta)
    for a, m in zip(ours, meta):
        np.testing.assert_array_equal(a.mask, m["segmentation"])
        assert a.area == m["area"]
        assert a.bbox == tuple(int(v) for v in m["bbox"])
        assert a.predicted_iou == pytest.approx(m["predicted_iou"], abs=1e-6)
        assert a.stability_score == pytest.approx(m["stability_score"], abs=1e-6)
        assert a.point == pytest.approx(tuple(m["point_coords"][0]), abs=1e-4)
        x, y, w, h = (int(v) for v in m["crop_box"])
        assert a.crop_box == (x, y, x + w, y + h)


# ---- images ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blobs_image():
    """96 x 128 RGB in [0, 1]: a dozen discs of various brightness on a dark, slightly noisy background."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:96, :128]
    image = 0.1 + 0.05 * rng.random((96, 128))
    for _ in range(12):
        cy, cx, r = rng.integers(0, 96), rng.integers(0, 128), rng.integers(4, 20)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.uniform(0.4, 0.9)
    return np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2).astype(np.float32)


# The synthetic models' masks score low and are mostly huge at a 0 threshold: with these settings several masks of
# various sizes pass every stage (some from crops).
LOOSE = {"pred_iou_thresh": 0.3, "stability_score_thresh": 0.3, "stability_score_offset": 0.1, "mask_threshold": 2.0}


# ---- geometry ------------------------------------------------------------------------------------------------------

def test_point_grid_by_hand():
    np.testing.assert_array_equal(point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    np.testing.assert_array_equal(point_grid(1), [[0.5, 0.5]])
    grids = layer_point_grids(8, 2, 2)
    assert [len(g) for g in grids] == [64, 16, 4]


@pytest.mark.parametrize("n, layers, factor", [(32, 0, 1), (32, 2, 2), (7, 3, 1), (10, 2, 3), (1, 0, 1)])
def test_point_grids_match_meta(meta_amg, n, layers, factor):
    ours = layer_point_grids(n, layers, factor)
    meta = meta_amg.build_all_layer_point_grids(n, layers, factor)
    assert len(ours) == len(meta)
    for a, m in zip(ours, meta):
        np.testing.assert_array_equal(a, m)


def test_crop_boxes_by_hand():
    # short side 100, 2 crops per side overlapping int(0.25 * 100 * 2 / 2) = 25 px:
    # width ceil((25 + 200) / 2) = 113, height ceil((25 + 100) / 2) = 63; starts 0, 88 and 0, 38
    boxes, layers = crop_boxes((100, 200), 1, 0.25)
    assert boxes == [[0, 0, 200, 100], [0, 0, 113, 63], [0, 38, 113, 100], [88, 0, 200, 63], [88, 38, 200, 100]]
    assert layers == [0, 1, 1, 1, 1]


@pytest.mark.parametrize("hw, layers, ratio", [
    ((96, 128), 1, 512 / 1500), ((1000, 1500), 3, 512 / 1500), ((37, 301), 2, 0.1), ((512, 512), 2, 0.0),
    ((333, 200), 1, 0.9),
])
def test_crop_boxes_match_meta(meta_amg, hw, layers, ratio):
    assert crop_boxes(hw, layers, ratio) == meta_amg.generate_crop_boxes(hw, layers, ratio)
    generator = AutomaticMaskGenerator.__new__(AutomaticMaskGenerator)
    generator.crop_n_layers, generator.crop_overlap_ratio = layers, ratio
    assert generator.crops(hw) == meta_amg.generate_crop_boxes(hw, layers, ratio)


# ---- pure pieces -----------------------------------------------------------------------------------------------------

def test_stability_score_by_hand():
    logits = torch.tensor([[[2.0, 0.5, -0.5], [-2.0, 1.5, 0.0], [3.0, -1.5, 0.9]]])
    # > +1: 2.0, 1.5, 3.0 (3 px); > -1: all but -2.0 and -1.5 (7 px)
    assert stability_score(logits, 0.0, 1.0).tolist() == pytest.approx([3 / 7])
    # threshold 0.5, offset 0.5: > 1.0: 3 px; > 0.0: 2.0, 0.5, 1.5, 3.0, 0.9 (5 px)
    assert stability_score(logits, 0.5, 0.5).tolist() == pytest.approx([3 / 5])
    assert torch.isnan(stability_score(torch.full((1, 4, 4), -5.0), 0.0, 1.0)).all()  # nothing above: 0 / 0


def test_stability_score_matches_meta(meta_amg):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 3, 40, 50, generator=gen) * 4
    logits[0, 0] = -10.0
    for threshold, offset in ((0.0, 1.0), (0.3, 0.05), (-1.0, 2.0)):
        ours = stability_score(logits, threshold, offset)
        meta = meta_amg.calculate_stability_score(logits, threshold, offset)
        torch.testing.assert_close(ours, meta.float(), equal_nan=True)


def test_masks_to_boxes():
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 1:4, 2:7] = True
    masks[1, 5, 0] = True
    boxes = masks_to_boxes(masks)
    assert boxes.tolist() == [[2, 1, 6, 3], [0, 5, 0, 5], [0, 0, 0, 0]]
    assert boxes.dtype == torch.int64


def test_masks_to_boxes_matches_meta(meta_amg):
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(4, 5, 30, 41, generator=gen) > 0.995
    masks[0, 0] = False
    masks[1, 1] = True
    torch.testing.assert_close(masks_to_boxes(masks), meta_amg.batched_mask_to_box(masks))


def test_box_iou_and_nms_by_hand():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 12, 12]], dtype=torch.float32)
    iou = box_iou(boxes, boxes)
    assert iou[0, 1].item() == pytest.approx(81 / 119)
    assert iou[0, 2].item() == 0.0
    assert iou[0, 3].item() == pytest.approx(64 / 136)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]  # 1 goes (0.68 with 0), 3 stays (0.47 with 0)
    assert nms(boxes, scores, 0.4).tolist() == [0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2, 3]  # nothing above 0.7
    # greedy: 1 is suppressed by 0, so it cannot suppress 3 (IoU(1, 3) = 0.68 > 0.6 > IoU(0, 3) = 0.47)
    assert nms(boxes, scores, 0.6).tolist() == [0, 2, 3]
    assert nms(boxes[1:], scores[1:], 0.6).tolist() == [0, 1]  # without 0, 1 suppresses 3
    # kept in descending score; equal scores keep their order
    assert nms(boxes, torch.tensor([0.1, 0.2, 0.9, 0.2]), 0.9).tolist() == [2, 1, 3, 0]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []
    # zero-area boxes (one-pixel masks) never suppress each other (IoU 0 / 0)
    dots = torch.tensor([[5, 5, 5, 5], [5, 5, 5, 5]], dtype=torch.float32)
    assert nms(dots, torch.tensor([1.0, 0.5]), 0.1).tolist() == [0, 1]


def test_nms_matches_naive_reference():
    gen = torch.Generator().manual_seed(2)
    xy = torch.randint(0, 50, (200, 2), generator=gen)
    wh = torch.randint(0, 30, (200, 2), generator=gen)
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(200, generator=gen)
    for threshold in (0.0, 0.3, 0.7):
        expected = _reference_batched_nms(boxes, scores, torch.zeros(200), threshold)
        assert nms(boxes, scores, threshold).tolist() == expected.tolist()


def test_near_crop_edge_matches_meta(meta_amg):
    gen = torch.Generator().manual_seed(3)
    crop, image = [40, 30, 140, 110], [0, 0, 200, 110]
    local = torch.randint(0, 100, (300, 2), generator=gen)
    local_boxes = torch.cat([local, local + torch.randint(0, 60, (300, 2), generator=gen)], dim=1)
    offset = torch.tensor([40, 30, 40, 30])
    ours = near_crop_edge(local_boxes + offset, crop, image)
    meta = meta_amg.is_box_near_crop_edge(local_boxes, crop, image)
    assert ours.tolist() == meta.tolist()
    assert 0 < int(ours.sum()) < len(ours)


def _speck_and_hole_mask():
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:20, 5:20] = True
    mask[10:12, 10:12] = False  # a 4-px hole
    mask[25, 25:28] = True  # a 3-px speck
    return mask


def test_remove_small_regions_by_hand():
    mask = _speck_and_hole_mask()
    filled, changed = remove_small_regions(mask, 10, "holes")
    assert changed and filled[10:12, 10:12].all() and filled[25, 25:28].all()
    assert filled.sum() == mask.sum() + 4
    cleaned, changed = remove_small_regions(filled, 10, "islands")
    assert changed and not cleaned[25].any() and cleaned.sum() == 15 * 15
    # nothing below the threshold: the same mask, unchanged
    same, changed = remove_small_regions(mask, 3, "islands")
    assert not changed and np.array_equal(same, mask)
    # every island small: the largest stays (and the mask counts as changed, as Meta's)
    specks = np.zeros((10, 10), dtype=bool)
    specks[1, 1:3] = True
    specks[5:7, 5:7] = True
    kept, changed = remove_small_regions(specks, 10, "islands")
    assert changed and kept.sum() == 4 and kept[5:7, 5:7].all()
    # 8-connectivity: a diagonal pair is one region
    diag = np.zeros((5, 5), dtype=bool)
    diag[1, 1] = diag[2, 2] = True
    assert not remove_small_regions(diag, 2, "islands")[1]
    with pytest.raises(InputError):
        remove_small_regions(mask, 10, "specks")


def _auto_mask(mask, iou, point=(0.0, 0.0)):
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())) if len(xs) else (0,) * 4
    return AutoMask(mask, int(mask.sum()), bbox, iou, 0.97, point, (0, 0, mask.shape[1], mask.shape[0]))


def test_postprocess_small_regions():
    dirty = _speck_and_hole_mask()
    clean = np.zeros((30, 30), dtype=bool)
    clean[5:20, 5:20] = True
    other = np.zeros((30, 30), dtype=bool)
    other[22:29, 0:7] = True
    masks = [_auto_mask(dirty, 0.9, (1.0, 2.0)), _auto_mask(other, 0.8), _auto_mask(clean, 0.7)]
    out = postprocess_small_regions(masks, 10, 0.7)
    # the dirty mask becomes the clean one: a duplicate, and NMS prefers the mask that needed no change
    assert len(out) == 2
    assert out[0] is masks[1] and out[1] is masks[2]
    # without the duplicate, the cleaned mask stays, after the unchanged one, with its area and box recomputed
    out = postprocess_small_regions(masks[:2], 10, 0.7)
    assert [m.predicted_iou for m in out] == [0.8, 0.9]
    fixed = out[1]
    assert np.array_equal(fixed.mask, clean) and fixed.area == 225 and fixed.bbox == (5, 5, 14, 14)
    assert fixed.point == (1.0, 2.0)
    assert postprocess_small_regions([], 10, 0.7) == []
    assert AutomaticMaskGenerator.postprocess_small_regions is postprocess_small_regions


# ---- to_label_image ------------------------------------------------------------------------------------------------

def test_to_label_image():
    big = np.zeros((20, 20), dtype=bool)
    big[2:15, 2:15] = True
    top = np.zeros((20, 20), dtype=bool)
    top[10:18, 10:18] = True
    hidden = np.zeros((20, 20), dtype=bool)
    hidden[3:5, 3:5] = True
    apart = np.zeros((20, 20), dtype=bool)
    apart[18:20, 0:3] = True
    masks = [_auto_mask(big, 0.8), _auto_mask(hidden, 0.5), _auto_mask(top, 0.95), _auto_mask(apart, 0.6)]
    labels = to_label_image(masks, (20, 20))
    assert labels.dtype == np.int32 and labels.shape == (20, 20)
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2, 3]  # the hidden mask left no pixel: dropped
    assert (labels[top] == 1).all()  # the highest predicted IoU wins the overlap
    assert (labels[big & ~top] == 2).all()
    assert (labels[apart] == 3).all()
    assert (labels[~(big | top | apart)] == 0).all()
    assert to_label_image([], (4, 5)).tolist() == np.zeros((4, 5), dtype=np.int32).tolist()
    with pytest.raises(InputError, match="shape"):
        to_label_image(masks, (20, 21))


# ---- parameters ----------------------------------------------------------------------------------------------------

def test_defaults_are_meta_sam2_defaults(mini_model):
    import inspect

    generator = AutomaticMaskGenerator(mini_model)
    expected = {
        "points_per_side": 32, "points_per_batch": 64, "pred_iou_thresh": 0.8, "stability_score_thresh": 0.95,
        "stability_score_offset": 1.0, "mask_threshold": 0.0, "box_nms_thresh": 0.7, "crop_n_layers": 0,
        "crop_nms_thresh": 0.7, "crop_overlap_ratio": 512 / 1500, "crop_n_points_downscale_factor": 1,
        "min_mask_region_area": 0, "multimask_output": True, "use_m2m": False,
    }
    for name, value in expected.items():
        assert getattr(generator, name) == value, name
    if (META_SRC / "sam2" / "automatic_mask_generator.py").exists():  # Meta's signature, read without importing
        import ast

        tree = ast.parse((META_SRC / "sam2" / "automatic_mask_generator.py").read_text())
        init = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "__init__")
        names = [a.arg for a in init.args.args[-len(init.args.defaults):]]
        meta = {k: ast.literal_eval(v) if not isinstance(v, ast.BinOp) else eval(ast.unparse(v), {"__builtins__": {}})
                for k, v in zip(names, init.args.defaults)}
        for name, value in expected.items():
            assert meta[name] == value, name
    ours = inspect.signature(AutomaticMaskGenerator).parameters
    assert {k: ours[k].default for k in expected} == expected


@pytest.mark.parametrize("kwargs", [
    {"points_per_side": 0}, {"points_per_side": 2.5}, {"points_per_side": True}, {"points_per_batch": 0},
    {"pred_iou_thresh": 1.5}, {"pred_iou_thresh": -0.1}, {"pred_iou_thresh": "high"},
    {"stability_score_thresh": 2.0}, {"stability_score_offset": -1.0}, {"mask_threshold": float("nan")},
    {"box_nms_thresh": 1.2}, {"crop_n_layers": -1}, {"crop_nms_thresh": -0.5}, {"crop_overlap_ratio": 1.0},
    {"crop_n_points_downscale_factor": 0}, {"min_mask_region_area": -5}, {"multimask_output": "yes"},
    {"use_m2m": 1}, {"points_per_side": 3, "crop_n_layers": 2, "crop_n_points_downscale_factor": 2},
])
def test_bad_parameters_raise_input_error(mini_model, kwargs):
    with pytest.raises(InputError):
        AutomaticMaskGenerator(mini_model, **kwargs)


def test_bad_model_and_images(mini_model):
    with pytest.raises(InputError, match="model"):
        AutomaticMaskGenerator(object())
    generator = AutomaticMaskGenerator(mini_model, points_per_side=2)
    for image, match in [
        (np.zeros((10, 10), np.float32), "shape"), (np.zeros((10, 10, 4), np.float32), "shape"),
        (np.zeros((10, 10, 3), np.uint8), "float"), (np.full((10, 10, 3), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((10, 10, 3), np.nan, np.float32), "NaN"), (np.zeros((0, 10, 3), np.float32), "shape"),
    ]:
        with pytest.raises(InputError, match=match):
            generator.generate(image)
    tiny = AutomaticMaskGenerator(mini_model, points_per_side=8, crop_n_layers=3)
    with pytest.raises(InputError, match="too small"):
        tiny.generate(np.zeros((6, 6, 3), np.float32))


# ---- the generator on a model ----------------------------------------------------------------------------------------

def _key(m: AutoMask):
    return (m.point, m.crop_box, m.bbox, m.area)


def _check_records(masks, image_hw, generator):
    h, w = image_hw
    for m in masks:
        assert m.mask.dtype == bool and m.mask.shape == (h, w)
        assert m.area == int(m.mask.sum()) > 0
        ys, xs = np.nonzero(m.mask)
        assert m.bbox == (xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min())
        x0, y0, x1, y1 = m.crop_box
        assert m.mask[y0:y1, x0:x1].sum() == m.area  # inside its crop
        assert x0 <= m.point[0] < x1 and y0 <= m.point[1] < y1
        assert m.predicted_iou > generator.pred_iou_thresh
        assert m.stability_score >= generator.stability_score_thresh


def test_generate_records_batching_progress_and_encodes(mini_model, blobs_image):
    encodes = []
    real = mini_model.encode_image

    def counting(images):
        encodes.append(tuple(images.shape))
        return real(images)

    kwargs = dict(points_per_side=6, crop_n_layers=1, crop_n_points_downscale_factor=2, **LOOSE)
    generator = AutomaticMaskGenerator(mini_model, points_per_batch=4, **kwargs)
    calls = []
    mini_model.encode_image = counting
    try:
        small = generator.generate(blobs_image, progress=lambda done, total: calls.append((done, total)))
    finally:
        del mini_model.encode_image
    boxes, _ = generator.crops((96, 128))
    assert len(boxes) == 5 and len(encodes) == 5  # each crop encoded once
    assert all(shape == (1, 3, 128, 128) for shape in encodes)
    total = 9 + 4 * 3  # 36 points in 4-point batches for the image, 9 points per crop
    assert generator.num_batches((96, 128)) == total
    assert calls == [(i, total) for i in range(1, total + 1)]

    big = AutomaticMaskGenerator(mini_model, points_per_batch=64, **kwargs).generate(torch.from_numpy(blobs_image))
    assert len(small) >= 3 and len(small) == len(big)
    for a, b in zip(small, big):
        assert _key(a) == _key(b) and np.array_equal(a.mask, b.mask)
        assert a.predicted_iou == pytest.approx(b.predicted_iou, abs=1e-5)
        assert a.stability_score == pytest.approx(b.stability_score, abs=1e-5)
    _check_records(small, (96, 128), generator)
    # Meta's order across crops: smaller crops first
    areas = [(c[2] - c[0]) * (c[3] - c[1]) for c in (m.crop_box for m in small)]
    assert areas == sorted(areas)
    assert {m.crop_box for m in small} != {(0, 0, 128, 96)}  # crops contributed


def test_raising_thresholds_never_adds_masks(mini_model, blobs_image):
    def run(**kwargs):
        args = dict(points_per_side=8, box_nms_thresh=1.0, **LOOSE)  # no NMS: a stricter filter keeps a subset
        args.update(kwargs)
        generator = AutomaticMaskGenerator(mini_model, **args)
        masks = generator.generate(blobs_image)
        _check_records(masks, (96, 128), generator)
        order = [m.predicted_iou for m in masks]
        assert order == sorted(order, reverse=True)  # one crop: descending predicted IoU
        return {_key(m) for m in masks}

    base = run()
    assert len(base) >= 5
    stricter_iou = run(pred_iou_thresh=0.45)
    stricter_stability = run(stability_score_thresh=0.6)
    assert stricter_iou <= base and stricter_stability <= base
    assert len(stricter_iou) < len(base) and len(stricter_stability) < len(base)
    assert run(pred_iou_thresh=0.45, stability_score_thresh=0.6) <= stricter_iou & stricter_stability
    assert run(pred_iou_thresh=1.0) == set()


def test_label_image_from_generated_masks(mini_model, blobs_image):
    masks = AutomaticMaskGenerator(mini_model, points_per_side=6, box_nms_thresh=0.95, **LOOSE).generate(blobs_image)
    labels = to_label_image(masks, blobs_image.shape[:2])
    values = np.unique(labels)
    assert values[0] == 0 and values.tolist() == list(range(int(labels.max()) + 1))
    assert 1 <= labels.max() <= len(masks)
    best = max(masks, key=lambda m: m.predicted_iou)
    assert (labels[best.mask] == 1).all()


# ---- end to end against Meta's generator ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(points_per_side=6, points_per_batch=16, crop_n_layers=1, crop_n_points_downscale_factor=2,
         box_nms_thresh=0.8, **LOOSE),
    dict(points_per_side=5, use_m2m=True, min_mask_region_area=30, **LOOSE),
    {"points_per_side": 6, "multimask_output": False, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
     "mask_threshold": 1.0, "crop_n_layers": 1, "crop_overlap_ratio": 0.2},
    dict(LOOSE, points_per_side=8, crop_n_layers=2, crop_nms_thresh=0.5),
], ids=["crops", "m2m-cleanup", "single-mask", "two-layers"])
def test_generate_matches_meta_on_mini_model(meta_generator, mini_model, blobs_image, kwargs):
    ours = AutomaticMaskGenerator(mini_model, **kwargs).generate(blobs_image)
    meta = run_meta(meta_generator, mini_model, blobs_image, **kwargs)
    assert len(meta) >= 2
    if kwargs.get("crop_n_layers"):
        assert len({m.crop_box for m in ours}) > 1  # masks from crops too
    assert_same_as_meta(ours, meta)


def test_generate_matches_meta_on_fast_model(meta_generator, fast_model, blobs_image):
    kwargs = dict(LOOSE, points_per_side=4, mask_threshold=3.0)
    ours = AutomaticMaskGenerator(fast_model, **kwargs).generate(blobs_image)
    meta = run_meta(meta_generator, fast_model, blobs_image, **kwargs)
    assert len(meta) >= 2
    assert_same_as_meta(ours, meta)
