"""napari reader (npe2 contribution) for TIFF, OME-TIFF and ImageJ TIFF stacks, memory-mapped where possible.

The layer gets the file's physical pixel sizes as its ``scale`` (so anisotropic z looks right) and, in its
metadata, the file's axes letters (``axes``) and those of the layer's own dims (``layer_axes``: without the channel
axis, which napari splits into one layer per channel, nor RGB samples).
"""

from __future__ import annotations

import os

from ..io.tiff import is_tiff, physical_scale, read_tiff, tiff_stem


def get_reader(path):
    """The reader function when ``path`` is one TIFF file (or a list holding one), else None."""
    single = _single_path(path)
    if single is None or not is_tiff(single):
        return None
    return read_tiff_layers


def read_tiff_layers(path) -> list[tuple]:
    """napari layer-data tuples for one TIFF file: ``[(data, kwargs, "image")]``."""
    single = _single_path(path)
    stack = read_tiff(single)
    kwargs: dict = {
        "name": layer_name(single),
        "metadata": {
            "axes": stack.axes,
            "path": str(single),
            "physical_pixel_sizes": dict(stack.pixel_sizes),
            "unit": stack.unit,
        },
    }
    layer_axes = stack.axes
    if "C" in stack.axes and stack.data.shape[stack.axes.index("C")] > 1:
        channel_axis = stack.axes.index("C")
        kwargs["channel_axis"] = channel_axis
        kwargs["name"] = [f"{kwargs['name']} [C{c}]" for c in range(stack.data.shape[channel_axis])]
        layer_axes = layer_axes.replace("C", "")
    if layer_axes.endswith("S") and stack.data.shape[-1] in (3, 4):
        layer_axes = layer_axes[:-1]  # napari shows RGB(A) samples as colour, not as an axis with a scale
    kwargs["metadata"]["layer_axes"] = layer_axes  # the dims of each layer as napari shows them
    scale = physical_scale(layer_axes, stack.pixel_sizes)
    if scale is not None:
        kwargs["scale"] = scale
    return [(stack.data, kwargs, "image")]


def layer_name(path) -> str:
    """File name without its TIFF / OME-TIFF extension."""
    return tiff_stem(path)


def _single_path(path) -> str | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, (str, os.PathLike)):
        return None
    return os.fspath(path)
