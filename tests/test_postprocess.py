"""Hole filling (engine/postprocess.fill_holes), computed on the tensor's device without labelling, against its
definition: scikit-image's 8-connected components of the background, those of at most max_area pixels filled."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.measure import label as connected_components

from napari_sam2.engine.postprocess import HOLE_FILL_VALUE, fill_holes


def by_labelling(mask_logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Meta's `fill_holes_in_mask_scores` as its CUDA extension computes it: label, measure, fill."""
    out = mask_logits.clone()
    for b in range(mask_logits.shape[0]):
        comps = connected_components((mask_logits[b, 0] <= 0).numpy(), connectivity=2)
        areas = np.bincount(comps.ravel())
        small = areas <= max_area
        small[0] = False  # label 0: the foreground
        out[b, 0][torch.from_numpy(small[comps])] = HOLE_FILL_VALUE
    return out


@st.composite
def masks(draw):
    b, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed, density = draw(st.integers(0, 2**32 - 1)), draw(st.floats(0.1, 0.95))
    rng = np.random.default_rng(seed)
    values = rng.uniform(-5, 5, (b, 1, h, w)).astype(np.float32)
    values = np.where(rng.random((b, 1, h, w)) < density, np.abs(values) + 0.01, -np.abs(values))
    values[rng.random((b, 1, h, w)) < 0.05] = 0.0  # a logit of exactly 0 is background
    return torch.from_numpy(values.astype(np.float32))


@settings(max_examples=300, deadline=None)
@given(masks(), st.integers(0, 12))
def test_the_same_bits_as_labelling_the_components(mask_logits, max_area):
    expected = mask_logits if max_area <= 0 else by_labelling(mask_logits, max_area)
    assert torch.equal(fill_holes(mask_logits, max_area), expected)


def grid(rows) -> torch.Tensor:
    """'#' foreground (logit 1), '.' background (logit -1), as (1, 1, h, w)."""
    return torch.tensor([[1.0 if c == "#" else -1.0 for c in row] for row in rows]).view(1, 1, len(rows), -1)


def filled(rows, max_area) -> list:
    out = fill_holes(grid(rows), max_area)[0, 0]
    return ["".join("#" if v > 0 else "." for v in row) for row in out.tolist()]


def test_a_hole_of_at_most_max_area_is_filled_with_a_small_positive_logit():
    blob = ["#####", "#..##", "#..##", "#####"]
    assert filled(blob, 3) == blob
    assert filled(blob, 4) == ["#####"] * 4
    out = fill_holes(grid(blob), 4)
    assert out[0, 0, 1, 1] == HOLE_FILL_VALUE and out[0, 0, 0, 0] == 1.0  # only the hole changes


def test_components_connect_diagonally_and_may_touch_the_border():
    rows = ["#.###", "##.##", "###.#", "#####"]  # one background component of 3 pixels, corner to corner
    assert filled(rows, 2) == rows and filled(rows, 3) == ["#####"] * 4
    edge = ["..###", "#####"]
    assert filled(edge, 2) == ["#####"] * 2


def test_a_long_thin_component_just_over_max_area_stays():
    # 9 pixels in a row, farther across than max_area - 1 steps: never taken for two holes of its parts
    rows = ["###########", "#.........#", "###########"]
    assert filled(rows, 8) == rows
    assert filled(rows, 9) == ["#" * 11] * 3
