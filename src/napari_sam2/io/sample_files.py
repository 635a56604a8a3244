"""The synthetic samples as files, to try the command line: the stack (TIFF), its ground truth (label TIFF) and a
prompts CSV in the format napari's Points layer saves, with one positive click per object.

    napari-sam2 sample nuclei --out demo
    napari-sam2 segment demo/nuclei.tif --prompts demo/nuclei.csv --out demo/nuclei_labels.tif
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile

from ..errors import InputError
from .sample_data import NUCLEI_Z_STEP, make_cell_timelapse, make_nuclei_stack
from .tiff import write_labels_tiff

# kind -> (make the data, axes, pixel sizes in µm, prompt every object on its largest slice, or on the first frame)
SAMPLES = {
    "nuclei": (make_nuclei_stack, "ZYX", {"Z": NUCLEI_Z_STEP, "Y": 1.0, "X": 1.0}, "largest"),
    "timelapse": (make_cell_timelapse, "TYX", {}, "first"),
}


def write_sample(kind: str, folder, overwrite: bool = False) -> list[Path]:
    """Write ``KIND.tif``, ``KIND_truth.tif`` and ``KIND.csv`` into ``folder`` (created if needed); returns them."""
    if kind not in SAMPLES:
        raise InputError(f"Unknown sample {kind!r}; choose one of {', '.join(SAMPLES)}.")
    make, axes, pixel_sizes, where = SAMPLES[kind]
    folder = Path(folder)
    paths = [folder / f"{kind}.tif", folder / f"{kind}_truth.tif", folder / f"{kind}.csv"]
    existing = [str(path) for path in paths if path.exists()]
    if existing and not overwrite:
        raise InputError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or choose another --out.")
    folder.mkdir(parents=True, exist_ok=True)

    image, truth = make()
    metadata = {"axes": axes}
    resolution = None
    if pixel_sizes:
        metadata.update(unit="micron", spacing=pixel_sizes["Z"])
        resolution = (1 / pixel_sizes["X"], 1 / pixel_sizes["Y"])
    tifffile.imwrite(paths[0], image, imagej=True, metadata=metadata, resolution=resolution)
    write_labels_tiff(paths[1], truth, axes, pixel_sizes)
    write_points_csv(paths[2], one_click_per_object(truth, where))
    return paths


def one_click_per_object(truth: np.ndarray, where: str) -> list[tuple[int, float, float, int]]:
    """(frame, row, col, obj_id): a click inside each object of frame 0 ("first"), or of the frame where it is
    largest ("largest"), at its pixel nearest to its centroid."""
    clicks = []
    for obj_id in np.unique(truth[truth > 0]):
        if where == "first":
            frame = 0
            if not (truth[0] == obj_id).any():
                continue  # born later (a daughter cell): it is tracked from its mother
        else:
            frame = int(np.argmax((truth == obj_id).sum(axis=(1, 2))))
        rows, cols = np.nonzero(truth[frame] == obj_id)
        nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
        clicks.append((frame, float(rows[nearest]), float(cols[nearest]), int(obj_id)))
    return clicks


def write_points_csv(path, clicks) -> None:
    """Positive clicks (frame, row, col, obj_id) as napari's Points layer of a 3D image saves them."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "axis-0", "axis-1", "axis-2", "positive", "obj_id"])
        for index, (frame, row, col, obj_id) in enumerate(clicks):
            writer.writerow([index, float(frame), row, col, True, obj_id])
