"""napari's *File > Open Sample > napari-sam2* entries: the synthetic data of ``napari_sam2.io.sample_data`` as
napari layer-data tuples (so this module does not need napari)."""

from __future__ import annotations

from ..io.sample_data import NUCLEI_Z_STEP, make_cell_timelapse, make_nuclei_stack

__all__ = ["cell_timelapse_sample", "make_cell_timelapse", "make_nuclei_stack", "nuclei_3d_sample"]


def nuclei_3d_sample() -> list[tuple]:
    """napari sample: synthetic 3D nuclei and their (hidden) ground truth."""
    image, labels = make_nuclei_stack()
    scale = (NUCLEI_Z_STEP, 1.0, 1.0)
    metadata = {"axes": "zyx"}
    return [
        (image, {"name": "nuclei 3D", "metadata": metadata, "scale": scale}, "image"),
        (labels, {"name": "nuclei 3D ground truth", "metadata": metadata, "scale": scale, "visible": False}, "labels"),
    ]


def cell_timelapse_sample() -> list[tuple]:
    """napari sample: a synthetic time-lapse of moving cells (one divides) and its (hidden) ground truth."""
    image, labels = make_cell_timelapse()
    metadata = {"axes": "tyx"}
    return [
        (image, {"name": "cell time-lapse", "metadata": metadata}, "image"),
        (labels, {"name": "cell time-lapse ground truth", "metadata": metadata, "visible": False}, "labels"),
    ]
