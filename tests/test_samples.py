"""Synthetic sample data: shapes, ground truth, the division, determinism, napari layer tuples."""

import numpy as np
import pytest
from skimage.measure import label as connected_components
from skimage.measure import regionprops

from napari_sam2._napari.samples import (
    NUCLEI_Z_STEP,
    cell_timelapse_sample,
    make_cell_timelapse,
    make_nuclei_stack,
    nuclei_3d_sample,
)
from napari_sam2.errors import InputError


@pytest.fixture(scope="module")
def nuclei():
    return make_nuclei_stack()


@pytest.fixture(scope="module")
def timelapse():
    return make_cell_timelapse()


def centroid(mask):
    return np.argwhere(mask).mean(axis=0)


def test_nuclei_shapes_and_labels(nuclei):
    image, labels = nuclei
    assert image.shape == labels.shape == (24, 192, 256)
    assert image.dtype == np.uint16 and labels.dtype == np.int32
    np.testing.assert_array_equal(np.unique(labels), np.arange(13))
    for region in regionprops(labels):  # each nucleus is one solid piece, not cut by the stack's edges
        assert connected_components(region.image).max() == 1
        assert region.area > 200


def test_nuclei_are_separate_and_brighter_than_background(nuclei):
    image, labels = nuclei
    touching = connected_components(labels > 0)
    assert touching.max() == 12  # no two nuclei touch
    inside = image[labels > 0].mean()
    far_outside = image[(labels == 0) & (image < np.percentile(image, 50))].mean()
    assert inside > 3 * far_outside
    assert len(np.unique(image)) > 100  # noisy, not flat


def test_nuclei_are_squashed_in_z_like_the_scale_says(nuclei):
    _, labels = nuclei
    extents = np.array([[s.stop - s.start for s in region.slice] for region in regionprops(labels)])
    z_extent_physical = extents[:, 0] * NUCLEI_Z_STEP
    assert 0.5 < np.median(z_extent_physical / extents[:, 1:].max(axis=1)) < 1.5


def test_timelapse_shapes_and_labels(timelapse):
    image, labels = timelapse
    assert image.shape == labels.shape == (20, 192, 256)
    assert image.dtype == np.uint16 and labels.dtype == np.int32
    for t in range(20):
        expected = 7 if t >= 10 else 6
        np.testing.assert_array_equal(np.unique(labels[t]), np.arange(expected + 1))
        assert connected_components(labels[t] > 0).max() == expected  # cells never touch


def test_one_cell_divides_mid_sequence(timelapse):
    _, labels = timelapse
    division = 10
    daughter = 7
    assert not (labels[:division] == daughter).any()
    assert all((labels[t] == daughter).any() and (labels[t] == 1).any() for t in range(division, 20))
    mother = centroid(labels[division - 1] == 1)
    first, second = centroid(labels[division] == 1), centroid(labels[division] == daughter)
    np.testing.assert_allclose((first + second) / 2, mother, atol=2)  # born where the mother was
    assert np.linalg.norm(first - second) > 10
    # the mother elongates before dividing; the daughters are smaller than her
    assert (labels[division - 1] == 1).sum() > 1.2 * (labels[division] == daughter).sum()


def test_cells_move_smoothly(timelapse):
    _, labels = timelapse
    for cell in range(2, 7):
        track = np.array([centroid(labels[t] == cell) for t in range(20)])
        steps = np.linalg.norm(np.diff(track, axis=0), axis=1)
        assert steps.max() < 8 and np.ptp(track, axis=0).max() > 3  # moves, by less than half a cell per frame
        assert np.abs(np.diff(track, n=2, axis=0)).max() < 3  # speed changes gradually


def test_samples_are_deterministic():
    first, second = make_nuclei_stack(seed=3), make_nuclei_stack(seed=3)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(make_nuclei_stack(seed=4)[1], first[1])
    a, b = make_cell_timelapse(seed=1), make_cell_timelapse(seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(make_cell_timelapse(seed=2)[0], a[0])


def test_other_sizes():
    image, labels = make_nuclei_stack(shape=(12, 64, 80), n_nuclei=3, seed=1)
    assert image.shape == (12, 64, 80) and labels.max() == 3
    image, labels = make_cell_timelapse(shape=(5, 60, 40), n_cells=2, seed=1)  # taller than wide
    assert image.shape == (5, 60, 40)
    assert set(np.unique(labels[-1])) == {0, 1, 2, 3}


@pytest.mark.parametrize(
    "make, kwargs",
    [
        (make_nuclei_stack, {"shape": (4, 16, 16), "n_nuclei": 50}),
        (make_nuclei_stack, {"shape": (24, 192)}),
        (make_nuclei_stack, {"n_nuclei": 0}),
        (make_cell_timelapse, {"shape": (2, 64, 64)}),
        (make_cell_timelapse, {"shape": (10, 16, 16), "n_cells": 20}),
    ],
)
def test_impossible_requests_say_why(make, kwargs):
    with pytest.raises(InputError):
        make(**kwargs)


def test_napari_layer_tuples():
    (image, image_kwargs, image_type), (labels, labels_kwargs, labels_type) = nuclei_3d_sample()
    assert (image_type, labels_type) == ("image", "labels")
    assert image_kwargs["metadata"]["axes"] == "zyx"
    assert image_kwargs["scale"] == labels_kwargs["scale"] == (NUCLEI_Z_STEP, 1.0, 1.0)
    assert labels_kwargs["visible"] is False and image.shape == labels.shape

    (image, image_kwargs, _), (labels, labels_kwargs, _) = cell_timelapse_sample()
    assert image_kwargs["metadata"]["axes"] == "tyx" and labels_kwargs["visible"] is False
    assert image.shape == labels.shape == (20, 192, 256)
