"""TIFF reading and label writing (tiff_io) and the napari reader built on them."""

import numpy as np
import pytest
import tifffile

from napari_sam2._napari.reader import get_reader, layer_name, read_tiff_layers
from napari_sam2.errors import InputError
from napari_sam2.io.tiff import TiffStack, physical_scale, read_tiff, write_labels_tiff


def labels_stack(shape=(5, 24, 20), largest=9, seed=0):
    return np.random.default_rng(seed).integers(0, largest + 1, shape).astype(np.int32)


def sizes_close(found, expected):
    assert set(found) == set(expected)
    for axis, size in expected.items():
        assert found[axis] == pytest.approx(size, rel=1e-9)


# --- write_labels_tiff -> read_tiff ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "axes, shape, pixel_sizes",
    [
        ("ZYX", (5, 24, 20), {"Z": 2.0, "Y": 0.3, "X": 0.3}),
        ("ZYX", (3, 24, 20), {"Z": 1.5, "Y": 0.123, "X": 0.2}),  # 3 planes must not become RGB
        ("TYX", (4, 16, 18), {"Y": 0.65, "X": 0.65}),
        ("TZYX", (2, 3, 16, 18), {"Z": 0.5, "Y": 0.1, "X": 0.1}),
        ("YX", (16, 18), {}),
        ("ZYX", (4, 16, 18), {"Z": 3.0}),  # z alone: ImageJ would invent x/y, so it is stored as JSON
    ],
)
def test_labels_round_trip_keeps_axes_and_pixel_sizes(tmp_path, axes, shape, pixel_sizes):
    labels = labels_stack(shape)
    path = tmp_path / "labels.tif"
    write_labels_tiff(path, labels, axes, pixel_sizes)
    stack = read_tiff(path)
    assert isinstance(stack, TiffStack)
    assert stack.axes == axes
    sizes_close(stack.pixel_sizes, pixel_sizes)
    assert stack.unit == ("µm" if pixel_sizes else None)
    assert stack.data.dtype == np.uint16
    np.testing.assert_array_equal(stack.data, labels)


def test_labels_are_an_imagej_hyperstack_fiji_can_calibrate(tmp_path):
    path = tmp_path / "labels.tif"
    write_labels_tiff(path, labels_stack(), "ZYX", {"Z": 2.0, "Y": 0.5, "X": 0.5})
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["spacing"] == 2.0 and tif.imagej_metadata["unit"] == "micron"
        assert tif.pages[0].tags["XResolution"].value == (2, 1)


def test_many_labels_are_written_as_uint32(tmp_path):
    labels = labels_stack((3, 8, 8), largest=3)
    labels[0, 0, 0] = 70000
    path = tmp_path / "many.tif"
    write_labels_tiff(path, labels, "TYX", {"Y": 0.4, "X": 0.4})
    stack = read_tiff(path)
    assert stack.data.dtype == np.uint32 and stack.axes == "TYX"
    sizes_close(stack.pixel_sizes, {"Y": 0.4, "X": 0.4})
    np.testing.assert_array_equal(stack.data, labels)


def test_bool_labels_are_accepted(tmp_path):
    write_labels_tiff(tmp_path / "mask.tif", np.eye(8, dtype=bool)[None].repeat(2, 0), "ZYX")
    assert read_tiff(tmp_path / "mask.tif").data.max() == 1


@pytest.mark.parametrize(
    "labels, axes, pixel_sizes, message",
    [
        (np.zeros((2, 8, 8), np.float32), "ZYX", {}, "must be integers"),
        (np.zeros((2, 8, 8), np.int32), "YX", {}, "name 2 axes"),
        (-np.ones((2, 8, 8), np.int32), "ZYX", {}, "negative"),
        (np.zeros((2, 8, 8), np.int32), "ZYX", {"Z": 0.0}, "positive"),
    ],
)
def test_bad_labels_are_refused(tmp_path, labels, axes, pixel_sizes, message):
    with pytest.raises(InputError, match=message):
        write_labels_tiff(tmp_path / "bad.tif", labels, axes, pixel_sizes)


# --- reading microscope files -------------------------------------------------------------------------------------


def test_ome_tiff_physical_sizes_become_the_scale(tmp_path):
    image = np.arange(2 * 4 * 16 * 20, dtype=np.uint16).reshape(2, 4, 16, 20)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(
        path, image, metadata={"axes": "TZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 1.5}
    )
    assert get_reader(str(path)) is read_tiff_layers
    [(data, kwargs, layer_type)] = get_reader(str(path))(str(path))
    assert layer_type == "image" and kwargs["name"] == "cells"
    assert isinstance(data, np.memmap)
    np.testing.assert_array_equal(data, image)
    assert kwargs["metadata"]["axes"] == "TZYX"
    assert kwargs["metadata"]["path"] == str(path)
    sizes_close(kwargs["metadata"]["physical_pixel_sizes"], {"Z": 1.5, "Y": 0.25, "X": 0.2})
    assert kwargs["scale"] == pytest.approx((1.0, 1.5, 0.25, 0.2))
    assert "channel_axis" not in kwargs


def test_ome_units_are_converted_to_micrometres(tmp_path):
    path = tmp_path / "nm.ome.tif"
    metadata = {"axes": "ZYX", "PhysicalSizeX": 100, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 100,
                "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 0.5}
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint8), metadata=metadata)
    stack = read_tiff(path)
    sizes_close(stack.pixel_sizes, {"Z": 0.5, "Y": 0.1, "X": 0.1})
    assert stack.unit == "µm"


def test_imagej_hyperstack_with_channels_is_split(tmp_path):
    image = np.arange(3 * 2 * 16 * 20, dtype=np.uint16).reshape(3, 2, 16, 20)
    path = tmp_path / "two colours.tif"
    tifffile.imwrite(
        path, image, imagej=True, resolution=(1 / 0.5, 1 / 0.5), metadata={"axes": "ZCYX", "spacing": 2.0, "unit": "um"}
    )
    [(data, kwargs, _)] = read_tiff_layers([str(path)])
    assert kwargs["metadata"]["axes"] == "ZCYX" and kwargs["metadata"]["layer_axes"] == "ZYX"
    assert kwargs["channel_axis"] == 1
    assert kwargs["name"] == ["two colours [C0]", "two colours [C1]"]
    assert kwargs["scale"] == pytest.approx((2.0, 0.5, 0.5))  # for Z, Y, X: the channel axis has no scale
    np.testing.assert_array_equal(data, image)


def test_imagej_without_spacing_assumes_isotropic_z(tmp_path):
    path = tmp_path / "xy_only.tif"
    metadata = {"axes": "ZYX", "unit": "micron"}
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint8), imagej=True, resolution=(4, 4), metadata=metadata)
    [(_, kwargs, _)] = read_tiff_layers(str(path))
    assert kwargs["scale"] == pytest.approx((0.25, 0.25, 0.25))


def test_plain_tiff_has_no_scale_and_inch_resolution_is_ignored(tmp_path):
    path = tmp_path / "plain.tiff"
    tifffile.imwrite(path, np.zeros((4, 8, 8), np.uint8), resolution=(72, 72), resolutionunit="INCH")
    [(data, kwargs, _)] = read_tiff_layers(str(path))
    assert "scale" not in kwargs and kwargs["metadata"]["physical_pixel_sizes"] == {}
    assert data.shape == (4, 8, 8) and kwargs["name"] == "plain"


def test_centimetre_resolution_is_used(tmp_path):
    path = tmp_path / "cm.tif"
    tifffile.imwrite(path, np.zeros((4, 8, 8), np.uint8), resolution=(20000, 20000), resolutionunit="CENTIMETER")
    sizes_close(read_tiff(path).pixel_sizes, {"Y": 0.5, "X": 0.5})


def test_compressed_file_is_read_into_memory(tmp_path):
    image = np.arange(3 * 16 * 16, dtype=np.uint16).reshape(3, 16, 16)
    path = tmp_path / "zipped.tif"
    tifffile.imwrite(path, image, compression="zlib")
    stack = read_tiff(path)
    assert not isinstance(stack.data, np.memmap)
    np.testing.assert_array_equal(stack.data, image)


# --- which paths the reader takes, and broken files ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["a.tif", "a.TIFF", "b.ome.tif", "b.ome.tiff", ["c.tif"]])
def test_reader_claims_tiff_paths(path):
    assert get_reader(path) is read_tiff_layers


@pytest.mark.parametrize("path", ["a.png", "a.zarr", "tif", ["a.tif", "b.tif"], [], None])
def test_reader_declines_other_paths(path):
    assert get_reader(path) is None


def test_layer_names_drop_the_extension():
    assert layer_name("/data/embryo.ome.tiff") == "embryo"
    assert layer_name("x/y/Stack.TIF") == "Stack"


@pytest.mark.parametrize("content", [b"this is not a tiff" * 20, b"II*\x00\xff\xff\xff\xff", b""])
def test_corrupt_file_gives_an_input_error_with_the_path(tmp_path, content):
    path = tmp_path / "broken.tif"
    path.write_bytes(content)
    with pytest.raises(InputError, match="broken.tif"):
        read_tiff_layers(str(path))


def test_truncated_file_gives_an_input_error(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.ones((4, 64, 64), np.uint16))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(InputError, match="cut.tif.*complete"):
        read_tiff(path)


def test_missing_file_gives_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_tiff(tmp_path / "absent.tif")


def test_physical_scale():
    assert physical_scale("ZYX", {}) is None
    assert physical_scale("TZYX", {"Z": 2.0, "Y": 0.5, "X": 0.5}) == (1.0, 2.0, 0.5, 0.5)
    assert physical_scale("ZYX", {"Z": 3.0}) == (3.0, 3.0, 3.0)
