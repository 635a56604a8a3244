"""A Cell Tracking Challenge ground-truth folder written straight from a generator's truth (tifffile and a
man_track.txt, independent of napari_sam2.io.track_export), and traccuracy's scores of a result folder against it."""

import numpy as np
import tifffile


def write_truth_folder(labels, parents, folder):
    """man_seg%03d.tif + man_track.txt of (T, Y, X) labels with {daughter: mother}; labels absent on some frames are
    split into segments linked across the gap (CTC needs a track on every frame from its first to its last)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames_of: dict[int, list[int]] = {}
    for t, frame in enumerate(labels):
        for value in np.unique(frame[frame > 0]).tolist():
            frames_of.setdefault(value, []).append(t)
    next_id = max(frames_of) + 1
    runs: dict[int, list[tuple[int, int, int]]] = {}  # label -> [(track id, first, last)], split at gaps
    for value, frames in sorted(frames_of.items()):
        pieces = [[frames[0], frames[0]]]
        for t in frames[1:]:
            if t == pieces[-1][1] + 1:
                pieces[-1][1] = t
            else:
                pieces.append([t, t])
        ids = [value] + list(range(next_id, next_id + len(pieces) - 1))
        next_id += len(pieces) - 1
        runs[value] = [(i, first, last) for i, (first, last) in zip(ids, pieces)]
    masks = labels.astype(np.uint16)
    lines = []
    for value, pieces in runs.items():
        for k, (track_id, first, last) in enumerate(pieces):
            parent = pieces[k - 1][0] if k else (runs[parents[value]][-1][0] if value in parents else 0)
            lines.append(f"{track_id} {first} {last} {parent}")
            masks[first : last + 1][labels[first : last + 1] == value] = track_id
    for t, mask in enumerate(masks):
        tifffile.imwrite(folder / f"man_seg{t:03d}.tif", mask)
    (folder / "man_track.txt").write_text("\n".join(lines) + "\n")
    return folder


def score(gt_folder, pred_folder, frame_buffer=0):
    """traccuracy's CTC metrics (TRA, DET, ...) and division metrics (a division counts as found up to
    ``frame_buffer`` frames off) of pred against gt."""
    from traccuracy import run_metrics
    from traccuracy.loaders import load_ctc_data
    from traccuracy.matchers import CTCMatcher
    from traccuracy.metrics import CTCMetrics, DivisionMetrics

    gt = load_ctc_data(str(gt_folder), name="gt")
    pred = load_ctc_data(str(pred_folder), name="pred")
    results, _ = run_metrics(gt, pred, CTCMatcher(), [CTCMetrics(), DivisionMetrics(max_frame_buffer=frame_buffer)])
    ctc, divisions = (r["results"] for r in results)
    return ctc, divisions[f"Frame Buffer {frame_buffer}"]
