"""Read image stacks from TIFF / OME-TIFF / ImageJ TIFF with their axes and pixel sizes; write label TIFFs.

No napari here: the napari reader and the command line share these functions.

Pixel sizes are a dict from axis letter ("X", "Y", "Z") to the physical size of one pixel, in micrometres when
the file's unit is a known length unit. They come from, in order of preference: OME-XML PhysicalSizeX/Y/Z;
ImageJ ``spacing`` (z) and the resolution tags (x, y); napari-sam2's own JSON metadata; resolution tags in
centimetres. Resolution tags in inches are ignored: they are a print setting, not a microscope calibration.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from ..core.frame_labels import smallest_label_dtype
from ..errors import InputError

MICROMETRE = "µm"

# Length units as OME and ImageJ spell them, in micrometres.
_MICROMETRES_PER_UNIT = {
    "pm": 1e-6,
    "nm": 1e-3,
    "µm": 1.0,
    "μm": 1.0,  # Greek mu, as some writers use
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}

# Axis order of an ImageJ hyperstack; any axes in this order (a subsequence of it) can be written as ImageJ.
_IMAGEJ_AXES = "TZCYXS"
_RESOLUTION_UNIT_CENTIMETER = 3


# Longest first: "cells.ome.tif" is the stack "cells", not "cells.ome".
TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")


def is_tiff(path) -> bool:
    """Whether ``path`` names a TIFF file (.tif, .tiff, .ome.tif, .ome.tiff; any case)."""
    return str(path).lower().endswith(TIFF_SUFFIXES)


def tiff_stem(path) -> str:
    """The file name without its TIFF / OME-TIFF extension: "a/cells.ome.tif" -> "cells"."""
    name = Path(path).name
    for suffix in TIFF_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


@dataclass(frozen=True)
class TiffStack:
    """An image read from a TIFF file: the pixels, tifffile's axes letters, and the physical pixel sizes found."""

    data: np.ndarray  # a numpy memmap when the file is uncompressed and contiguous, else in memory
    axes: str  # one letter per axis of ``data``, e.g. "ZYX", "TZCYX", "YXS" (S = RGB samples)
    pixel_sizes: dict[str, float] = field(default_factory=dict)  # e.g. {"Z": 2.0, "Y": 0.5, "X": 0.5}
    unit: str | None = None  # unit of pixel_sizes, "µm" when the file's unit is a known length unit


def read_tiff(path, pixels: bool = True) -> TiffStack:
    """Read the first image series of a TIFF file, memory-mapped where the file allows it.

    With ``pixels=False`` only the layout is read: ``data`` then has the right shape and dtype but no pixels (all
    zeros, taking no memory), for checking many files before reading any of them.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"Cannot read {path}: no such file.")
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(f"Cannot read {path}: the TIFF file holds no image.")
            series = tif.series[0]
            axes = series.axes
            pixel_sizes, unit = _pixel_sizes(tif)
            data = _memmap_or_load(path, tif) if pixels else np.broadcast_to(np.zeros((), series.dtype), series.shape)
    except InputError:
        raise
    except Exception as error:  # a corrupt file can fail anywhere in the parser; the user needs the reason
        raise InputError(
            f"Cannot read {path} as a TIFF image ({type(error).__name__}: {error}). "
            "Check that the file is a complete, uncorrupted TIFF."
        ) from error
    if data.ndim != len(axes):
        raise InputError(f"Cannot read {path}: its axes {axes!r} do not match its shape {data.shape}.")
    pixel_sizes = {axis: pixel_sizes[axis] for axis in axes if axis in pixel_sizes}
    return TiffStack(data, axes, pixel_sizes, unit if pixel_sizes else None)


def write_labels_tiff(path, labels, axes: str, pixel_sizes=None, unit: str = MICROMETRE) -> None:
    """Write an integer label image (uint16, or uint32 when a label is above 65535) with its axes and pixel sizes.

    Axes in ImageJ order (e.g. "ZYX", "TYX", "TZYX") with uint16 labels give an ImageJ hyperstack that Fiji opens
    calibrated; otherwise the axes and sizes are stored in tifffile's JSON metadata. ``read_tiff`` reads either
    back with the same axes and pixel sizes.
    """
    labels = np.asarray(labels)
    axes = str(axes).upper()
    pixel_sizes = {str(axis).upper(): float(size) for axis, size in (pixel_sizes or {}).items()}
    if labels.dtype.kind not in "biu":
        raise InputError(f"Labels must be integers (one value per object); got pixels of type {labels.dtype}.")
    if len(axes) != labels.ndim:
        raise InputError(
            f"axes {axes!r} name {len(axes)} axes but the labels have {labels.ndim} (shape {labels.shape})."
        )
    if labels.size and labels.min() < 0:
        raise InputError("Labels must not be negative: 0 is background and objects are 1, 2, 3, ...")
    largest = int(labels.max()) if labels.size else 0
    if largest > np.iinfo(np.uint32).max:
        raise InputError(
            f"Label {largest} is too large to store: label TIFFs hold values up to {np.iinfo(np.uint32).max}. "
            "Renumber the objects from 1."
        )
    if any(size <= 0 or not np.isfinite(size) for size in pixel_sizes.values()):
        raise InputError(f"Pixel sizes must be positive numbers; got {pixel_sizes}.")
    # Chosen from the largest label, so that every label is stored exactly.
    labels = labels.astype(smallest_label_dtype(largest, smallest=np.uint16), copy=False)

    # ImageJ reads a missing x/y calibration as 1 unit per pixel, so z alone goes to the JSON metadata instead; and
    # an ImageJ file loses an axis of length 1 (a stack of one slice reads back as a 2D image), so such labels too.
    xy_known_or_nothing = not pixel_sizes or "X" in pixel_sizes or "Y" in pixel_sizes
    no_single_slice = all(size > 1 for axis, size in zip(axes, labels.shape) if axis not in "YX")
    if labels.dtype == np.uint16 and _in_imagej_order(axes) and xy_known_or_nothing and no_single_slice:
        _write_imagej(path, labels, axes, pixel_sizes, unit)
    else:
        tifffile.imwrite(
            path,
            labels,
            photometric="minisblack",  # never guess RGB from a length-3 axis
            metadata={"axes": axes, "physical_pixel_sizes": pixel_sizes, "unit": unit},
        )


def physical_scale(axes: str, pixel_sizes: dict[str, float]) -> tuple[float, ...] | None:
    """napari ``scale`` for ``axes`` (None when no size is known).

    A spatial axis without a size takes the mean known size of the others (assumed isotropic); other axes get 1.
    """
    spatial = [axis for axis in "ZYX" if axis in pixel_sizes]
    if not spatial:
        return None
    typical = float(np.mean([pixel_sizes[axis] for axis in spatial]))
    return tuple(float(pixel_sizes.get(axis, typical if axis in "ZYX" else 1.0)) for axis in axes)


def _memmap_or_load(path: str, tif: tifffile.TiffFile) -> np.ndarray:
    try:
        return tifffile.memmap(path, mode="r")
    except ValueError:  # compressed, tiled or scattered data cannot be mapped: read it into memory
        return tif.series[0].asarray()


def _pixel_sizes(tif: tifffile.TiffFile) -> tuple[dict[str, float], str | None]:
    if tif.is_ome and tif.ome_metadata:
        sizes, unit = _ome_pixel_sizes(tif.ome_metadata)
        if sizes:
            return sizes, unit
    if tif.is_imagej and tif.imagej_metadata is not None:
        sizes, unit = _imagej_pixel_sizes(tif)
        if sizes:
            return sizes, unit
    if tif.is_shaped and tif.shaped_metadata:
        metadata = tif.shaped_metadata[0]
        sizes = {str(k).upper(): float(v) for k, v in (metadata.get("physical_pixel_sizes") or {}).items()}
        if sizes:
            return _in_micrometres(sizes, metadata.get("unit"))
    return _centimetre_resolution_sizes(tif.pages[0])


def _ome_pixel_sizes(ome_xml: str) -> tuple[dict[str, float], str | None]:
    pixels = ElementTree.fromstring(ome_xml).find(".//{*}Image/{*}Pixels")
    if pixels is None:
        return {}, None
    sizes: dict[str, float] = {}
    units: set[str | None] = set()
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        if value is not None and float(value) > 0:
            # OME allows a different unit per axis: bring each to micrometres when the unit is known.
            raw_unit = pixels.get(f"PhysicalSize{axis}Unit", MICROMETRE)
            (sizes[axis],), unit = _in_micrometres_list([float(value)], raw_unit)
            units.add(unit)
    return sizes, units.pop() if len(units) == 1 else None


def _imagej_pixel_sizes(tif: tifffile.TiffFile) -> tuple[dict[str, float], str | None]:
    metadata = tif.imagej_metadata
    sizes: dict[str, float] = {}
    spacing = metadata.get("spacing")
    if spacing:
        sizes["Z"] = float(spacing)
    page = tif.pages[0]
    for axis, tag_name in (("X", "XResolution"), ("Y", "YResolution")):
        pixels_per_unit = _rational(page.tags.get(tag_name))
        # ImageJ leaves 1 pixel per unit in uncalibrated images
        if pixels_per_unit and not (pixels_per_unit == 1 and "unit" not in metadata):
            sizes[axis] = 1.0 / pixels_per_unit
    return _in_micrometres(sizes, metadata.get("unit"))


def _centimetre_resolution_sizes(page) -> tuple[dict[str, float], str | None]:
    unit_tag = page.tags.get("ResolutionUnit")
    if unit_tag is None or int(unit_tag.value) != _RESOLUTION_UNIT_CENTIMETER:
        return {}, None
    sizes = {}
    for axis, tag_name in (("X", "XResolution"), ("Y", "YResolution")):
        pixels_per_cm = _rational(page.tags.get(tag_name))
        if pixels_per_cm:
            sizes[axis] = 1.0 / pixels_per_cm
    return _in_micrometres(sizes, "cm")


def _rational(tag) -> float | None:
    if tag is None:
        return None
    value = tag.value
    numerator, denominator = value if isinstance(value, tuple) else (value, 1)
    if not numerator or not denominator:
        return None
    return numerator / denominator


def _in_micrometres(sizes: dict[str, float], unit) -> tuple[dict[str, float], str | None]:
    values, unit = _in_micrometres_list(list(sizes.values()), unit)
    return dict(zip(sizes, values)), unit


def _in_micrometres_list(values: list[float], unit) -> tuple[list[float], str | None]:
    name = _unit_name(unit)
    factor = _MICROMETRES_PER_UNIT.get(name) if name else None
    if factor is None:
        return values, name
    # Rounding to 12 significant digits removes the noise of rational resolution tags (1 / 3.3333... etc.).
    return [float(f"{value * factor:.12g}") for value in values], MICROMETRE


def _unit_name(unit) -> str | None:
    if unit is None:
        return None
    # ImageJ escapes µ as \u00B5 in its description text.
    name = str(unit).strip().replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    return name.lower() if name.lower() in _MICROMETRES_PER_UNIT else name or None


def _in_imagej_order(axes: str) -> bool:
    positions = [_IMAGEJ_AXES.find(axis) for axis in axes]
    return -1 not in positions and positions == sorted(set(positions)) and axes.endswith("YX")


def _write_imagej(path, labels: np.ndarray, axes: str, pixel_sizes: dict[str, float], unit: str) -> None:
    metadata: dict = {"axes": axes}
    if pixel_sizes:
        # ImageJ spells micrometres "micron"
        metadata["unit"] = "micron" if _unit_name(unit) in ("µm", "μm", "um", "micron") else unit
    if "Z" in pixel_sizes:
        metadata["spacing"] = pixel_sizes["Z"]
    resolution = None
    if "X" in pixel_sizes or "Y" in pixel_sizes:
        size_x = pixel_sizes.get("X", pixel_sizes.get("Y"))
        size_y = pixel_sizes.get("Y", size_x)
        resolution = (1.0 / size_x, 1.0 / size_y)
    tifffile.imwrite(path, labels, imagej=True, metadata=metadata, resolution=resolution)
