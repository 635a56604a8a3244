"""Tracking benchmark: cell tracking and lineage scored against ground truth with traccuracy. Prints JSON.

    python benchmarks/tracking_benchmark.py --seeds 0-2                       # the logic cases, 3 time-lapses
    python benchmarks/tracking_benchmark.py --seeds 0 --shape 15,128,160 --sam2 --image-size 512
    python benchmarks/tracking_benchmark.py --sam2 --checkpoint sam2.1_hiera_tiny.pt   # real weights: real scores

The time-lapses are napari_sam2.io.tracking_samples.make_tracking_timelapse(shape, seed), one per seed: moving cells,
two divisions (daughters with new ids), a cell that leaves the field of view and comes back, two cells that touch.
Their ground truth is written as a Cell Tracking Challenge (CTC) folder by this script's own writer (tifffile and a
man_track.txt, independent of napari_sam2.io.track_export). Each case's result goes through build_lineage and
write_ctc and is scored by traccuracy: CTC metrics (TRA, DET, LNK, AOGM and its error counts) and DivisionMetrics
(recall, precision, F1, true / false positive and false negative divisions; ``--frame-buffer`` frames of slack).

Cases:
- truth_through_export: the ground-truth labels and parents through build_lineage + write_ctc. Checks the export
  and the gap handling: must score TRA = 1 with every division found.
- oracle_pipeline: the pipeline's logic (core.timelapse.track_timelapse) on an oracle session that tracks like a
  perfect SAM2 (each object follows its ground-truth cell, and a dividing cell stays ONE object covering both
  daughters, as SAM2 keeps it), seeded from the frame-0 truth labels (core.seeding.seed_prompts). The division
  following must recover the lineage: TRA = 1, every division found.
- sam2 (with ``--sam2``): the real path, api.track_stack seeded from the frame-0 truth labels (``seed_labels``),
  with seconds per frame. Without ``--checkpoint`` the weights are the deterministic synthetic ones
  (napari_sam2.engine.synthetic_checkpoints: no real checkpoint can be downloaded on the benchmark machines):
  SAM2 then makes meaningless masks, so its scores are meaningless too and the run is a plumbing and speed figure
  only. With ``--checkpoint`` pointing at a real SAM2 / SAM2.1 checkpoint (its variant is read from the file) the
  scores are the real figures. Seconds per frame = the run's wall time (model loading excluded) over the frames
  tracked, daughter runs included.

Output: for each case, per seed the metrics and counts (tracks, divisions, frames), and their means over seeds
(``mean``; ``all_tra_1`` and ``all_divisions_found`` for the logic cases); the machine, torch version, threads, the
date, the load average at the start and the end (other jobs on a shared machine slow the seconds) and the run's
seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import tifffile

from napari_sam2.core.frame_labels import FrameLabels
from napari_sam2.core.lineage import build_lineage
from napari_sam2.core.seeding import seed_prompts
from napari_sam2.core.timelapse import track_timelapse
from napari_sam2.io.track_export import write_ctc
from napari_sam2.io.tracking_samples import make_tracking_timelapse

LOGIC_CASES = ("truth_through_export", "oracle_pipeline")
CTC_KEYS = ("TRA", "DET", "LNK", "AOGM", "fp_nodes", "fn_nodes", "ns_nodes", "fp_edges", "fn_edges", "ws_edges")
DIVISION_KEYS = {
    "Division Recall": "division_recall",
    "Division Precision": "division_precision",
    "Division F1": "division_f1",
    "Mitotic Branching Correctness": "mitotic_branching_correctness",
    "Total GT Divisions": "gt_divisions",
    "Total Predicted Divisions": "predicted_divisions",
    "True Positive Divisions": "tp_divisions",
    "False Positive Divisions": "fp_divisions",
    "False Negative Divisions": "fn_divisions",
    "Wrong Children Divisions": "wrong_children_divisions",
}


# ---- the oracle: TrackingSession's contract, tracking from the ground truth -----------------------------------


class _OracleRun:
    """A propagation: an iterator of FrameLabels with ``total``."""

    def __init__(self, results, total: int):
        self._results, self.total = iter(results), total

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._results)


class OracleSession:
    """A perfect SAM2 on a time-lapse with ground truth. An object prompted by a mask follows the ground-truth cell
    it overlaps most on that frame, with all that cell's descendants: a dividing cell stays one object covering
    both daughters, as SAM2 keeps it. Ended objects (end_object) have no pixel after their last frame."""

    def __init__(self, truth: np.ndarray, parents: dict[int, int]):
        self.truth, self.parents = truth, parents
        self.n_frames, self.frame_size = truth.shape[0], tuple(truth.shape[1:])
        self.cell_of: dict[int, int] = {}
        self.prompted_frames: dict[int, tuple[int, ...]] = {}
        self.ended: dict[int, int] = {}

    def add_prompts(self, prompts):
        for prompt in prompts:
            values, counts = np.unique(self.truth[prompt.frame][prompt.mask], return_counts=True)
            counts = counts * (values > 0)
            self.cell_of[prompt.obj_id] = int(values[np.argmax(counts)]) if counts.any() else 0
            self.prompted_frames[prompt.obj_id] = tuple(sorted({*self.prompted_frames.get(prompt.obj_id, ()),
                                                                prompt.frame}))

    def end_object(self, obj_id: int, last_frame: int) -> None:
        self.ended[obj_id] = last_frame

    def propagate(self, direction: str = "both", frame_range=None, obj_ids=None) -> _OracleRun:
        first, last = frame_range or (0, self.n_frames - 1)
        objects = tuple(sorted(obj_ids or self.cell_of))
        if direction == "forward":
            first = max(first, min(min(self.prompted_frames[o]) for o in objects))
        frames = range(first, last + 1)
        return _OracleRun((self._frame(t, objects) for t in frames), len(frames))

    def _frame(self, t: int, objects) -> FrameLabels:
        return FrameLabels(t, objects, np.stack([self._mask(obj_id, t) for obj_id in objects]))

    def _mask(self, obj_id: int, t: int) -> np.ndarray:
        if t > self.ended.get(obj_id, self.n_frames) or not self.cell_of[obj_id]:
            return np.zeros(self.frame_size, bool)
        cells, grown = {self.cell_of[obj_id]}, True
        while grown:  # the cell and all its descendants
            more = {d for d, m in self.parents.items() if m in cells} - cells
            cells |= more
            grown = bool(more)
        return np.isin(self.truth[t], sorted(cells))


# ---- ground truth and scoring ----------------------------------------------------------------------------------


def write_truth_folder(labels: np.ndarray, parents: dict[int, int], folder: Path) -> Path:
    """A CTC ground-truth folder (man_seg%03d.tif + man_track.txt) written straight from the generator's truth,
    without napari_sam2: a label absent on some frames is split into segments, each later one a new track id whose
    parent is the segment before (CTC needs a track on every frame from its first to its last)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames_of: dict[int, list[int]] = {}
    for t, frame in enumerate(labels):
        for value in np.unique(frame[frame > 0]).tolist():
            frames_of.setdefault(value, []).append(t)
    next_id = max(frames_of) + 1
    pieces_of: dict[int, list[tuple[int, int, int]]] = {}  # label -> [(track id, first, last)]
    for value, frames in sorted(frames_of.items()):
        runs = [[frames[0], frames[0]]]
        for t in frames[1:]:
            if t == runs[-1][1] + 1:
                runs[-1][1] = t
            else:
                runs.append([t, t])
        ids = [value, *range(next_id, next_id + len(runs) - 1)]
        next_id += len(runs) - 1
        pieces_of[value] = [(i, first, last) for i, (first, last) in zip(ids, runs)]
    masks = labels.astype(np.uint16)
    lines = []
    for value, pieces in pieces_of.items():
        for k, (track_id, first, last) in enumerate(pieces):
            mother = parents.get(value)
            parent = pieces[k - 1][0] if k else (pieces_of[mother][-1][0] if mother else 0)
            lines.append(f"{track_id} {first} {last} {parent}")
            masks[first : last + 1][labels[first : last + 1] == value] = track_id
    for t, mask in enumerate(masks):
        tifffile.imwrite(folder / f"man_seg{t:03d}.tif", mask)
    (folder / "man_track.txt").write_text("\n".join(lines) + "\n")
    return folder


def traccuracy_scores(gt_folder: Path, pred_folder: Path, frame_buffer: int = 0) -> tuple[dict, dict]:
    """traccuracy's CTC metrics (TRA, DET, LNK, ...) and division metrics ("Division F1", ...; a division counts as
    found up to ``frame_buffer`` frames off) of a CTC result folder against a ground-truth folder, as it names them."""
    from traccuracy import run_metrics
    from traccuracy.loaders import load_ctc_data
    from traccuracy.matchers import CTCMatcher
    from traccuracy.metrics import CTCMetrics, DivisionMetrics

    gt = load_ctc_data(str(gt_folder), name="gt")
    pred = load_ctc_data(str(pred_folder), name="pred")
    results, _ = run_metrics(gt, pred, CTCMatcher(),
                             [CTCMetrics(), DivisionMetrics(max_frame_buffer=frame_buffer)])
    ctc, divisions = (r["results"] for r in results)
    return ctc, divisions[f"Frame Buffer {frame_buffer}"]


def score(gt_folder: Path, pred_folder: Path, frame_buffer: int) -> dict:
    """The figures this benchmark reports of a CTC result folder against a ground-truth folder."""
    ctc, divisions = traccuracy_scores(gt_folder, pred_folder, frame_buffer)
    scores = {key: _number(key, ctc[key]) for key in CTC_KEYS if key in ctc}
    scores.update({name: _number(name, divisions[key]) for key, name in DIVISION_KEYS.items() if key in divisions})
    return scores


def track_counts(folder: Path, track_file: str) -> dict:
    """Tracks and divisions (parents with two or more children) of a CTC folder's track file."""
    rows = [line.split() for line in (folder / track_file).read_text().splitlines() if line.strip()]
    children: dict[int, int] = {}
    for row in rows:
        parent = int(row[3])
        if parent:
            children[parent] = children.get(parent, 0) + 1
    return {"tracks": len(rows), "divisions": sum(1 for n in children.values() if n >= 2)}


def _number(name: str, value):
    """Counts as ints, scores as floats (traccuracy gives numpy or Python numbers); NaN (e.g. a division F1 with no
    division found) as None, so the output is strict JSON."""
    if math.isnan(float(value)):
        return None
    is_count = name.endswith(("_nodes", "_edges", "_divisions")) or name == "AOGM"
    return int(value) if is_count and float(value).is_integer() else float(value)


# ---- the cases ---------------------------------------------------------------------------------------------------


def export_and_score(labels, lineage, gt_folder: Path, out: Path, frame_buffer: int) -> dict:
    write_ctc(labels, lineage, out)
    try:
        scores = score(gt_folder, out, frame_buffer)
    except TypeError as error:  # traccuracy refuses a matching its metrics cannot score (masks over several cells)
        scores = {"scoring_error": str(error)}
    scores["truth"] = track_counts(gt_folder, "man_track.txt")
    scores["result"] = track_counts(out, "res_track.txt")
    return scores


def truth_through_export(truth, parents, gt_folder, out, frame_buffer) -> dict:
    return export_and_score(truth, build_lineage(truth, parents), gt_folder, out, frame_buffer)


def oracle_pipeline(truth, parents, gt_folder, out, frame_buffer, min_division_frames) -> dict:
    session = OracleSession(truth, parents)
    seeds = seed_prompts(truth[0], 0, len(truth), truth.shape[1:])
    frames = []
    result = track_timelapse(session, seeds, min_division_frames=min_division_frames,
                             progress=lambda done, total: frames.append(done))
    scores = export_and_score(result.labels, result.lineage, gt_folder, out, frame_buffer)
    scores["frames_tracked"] = frames[-1] if frames else 0
    scores["division_frames"] = {str(mother): frame for mother, (frame, _) in sorted(result.divisions.items())}
    return scores


def load_sam2(args):
    """The model of the sam2 case: ``--checkpoint`` (its variant read from the file) or the synthetic weights of
    ``--variant``, at ``--image-size``."""
    from napari_sam2.engine import get_config, load_model
    from napari_sam2.engine.checkpoints import detect_variant, read_state_dict
    from napari_sam2.engine.synthetic_checkpoints import write_synthetic_checkpoint

    if args.checkpoint:
        path, weights = Path(args.checkpoint), "checkpoint"
        variant = detect_variant(read_state_dict(path))
    else:
        variant, weights = args.variant, "synthetic"
        path = write_synthetic_checkpoint(variant, 0, Path(args.cache) / f"{variant}_seed0.pt")
    config = get_config(variant).with_(image_size=args.image_size)
    return load_model(path, device=args.device, config=config), variant, weights


def sam2_case(model, image, truth, gt_folder, out, frame_buffer, min_division_frames) -> dict:
    from napari_sam2.api import track_stack

    frames = []
    start = time.perf_counter()
    result = track_stack(image, model=model, seed_labels=truth[0], seed_frame=0,
                         min_division_frames=min_division_frames, progress=lambda done, total: frames.append(done))
    seconds = time.perf_counter() - start
    scores = export_and_score(result.labels, result.lineage, gt_folder, out, frame_buffer)
    tracked = frames[-1] if frames else 0
    scores.update({"seconds": round(seconds, 3), "frames_tracked": tracked,
                   "seconds_per_frame": round(seconds / tracked, 4) if tracked else None,
                   "objects_seeded": int(len(np.unique(truth[0])) - 1), "divisions_followed": len(result.divisions)})
    return scores


# ---- main --------------------------------------------------------------------------------------------------------


def parse_seeds(text: str) -> list[int]:
    """"0-2" -> [0, 1, 2]; "0,3,5" -> [0, 3, 5]; both mix: "0-2,7"."""
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, _, high = part.partition("-")
            seeds += range(int(low), int(high or low) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are whole numbers >= 0, as 0-2 or 0,3,5; got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"no seeds in {text!r}")
    return list(dict.fromkeys(seeds))


def parse_shape(text: str) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"--shape is T,Y,X; got {text!r}")
    return shape


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def _load_average():
    """The 1-, 5- and 15-minute load averages (a shared machine's other jobs slow the seconds), None where unknown."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def means(per_seed: dict[str, dict]) -> dict:
    """The mean over seeds of each number (nested dicts of counts too)."""
    rows = list(per_seed.values())
    averaged = {}
    for key, value in rows[0].items():
        if key == "division_frames":  # per mother id: no mean across time-lapses
            continue
        if isinstance(value, dict):
            if all(isinstance(v, (int, float)) for v in value.values()):
                averaged[key] = means({str(i): row[key] for i, row in enumerate(rows)})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
            averaged[key] = round(statistics.fmean(numbers), 6) if numbers else None
    return averaged


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-2"),
                    help="time-lapse seeds: a range 0-2, a list 0,3,5 or both (default 0-2)")
    ap.add_argument("--shape", type=parse_shape, default=(30, 128, 160),
                    help="T,Y,X of each time-lapse (default 30,128,160; at least 15 frames of 64 x 64)")
    ap.add_argument("--frame-buffer", type=int, default=0,
                    help="frames a division may be off and still count as found (DivisionMetrics; default 0)")
    ap.add_argument("--min-division-frames", type=int, default=3,
                    help="track_timelapse's min_division_frames (default 3)")
    ap.add_argument("--no-logic", action="store_true",
                    help="skip truth_through_export and oracle_pipeline (with --sam2: the sam2 case alone)")
    ap.add_argument("--sam2", action="store_true", help="also run the real SAM2 path (api.track_stack)")
    ap.add_argument("--variant", default="sam2.1_hiera_t", help="synthetic weights' variant (default sam2.1_hiera_t)")
    ap.add_argument("--image-size", type=int, default=1024, help="SAM2's input size in pixels (default 1024)")
    ap.add_argument("--checkpoint", help="a real SAM2 / SAM2.1 .pt checkpoint (else synthetic weights)")
    ap.add_argument("--device", default="cpu", help="torch device for --sam2 (default cpu; 'auto' picks one)")
    ap.add_argument("--cache", default=os.environ.get("NAPARI_SAM2_TEST_CACHE",
                                                      str(Path(tempfile.gettempdir()) / "napari-sam2-bench")),
                    help="folder of the synthetic checkpoint ($NAPARI_SAM2_TEST_CACHE, else a temporary folder)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for --sam2 (default: every CPU)")
    return ap


def main(argv=None) -> dict:
    """Run the benchmark with command-line ``argv``; prints the JSON report and returns it."""
    args = build_parser().parse_args(argv)
    began = time.perf_counter()
    import torch

    cases = [] if args.no_logic else list(LOGIC_CASES)
    if args.sam2:
        cases.append("sam2")
    if not cases:
        raise SystemExit("nothing to run: --no-logic without --sam2")
    report: dict = {
        "benchmark": "tracking",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": _load_average(),
        "shape": list(args.shape),
        "seeds": args.seeds,
        "frame_buffer": args.frame_buffer,
        "min_division_frames": args.min_division_frames,
        "cases": {},
    }
    model = None
    if args.sam2:
        torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
        loading = time.perf_counter()
        model, variant, weights = load_sam2(args)
        report["sam2"] = {
            "variant": variant, "image_size": args.image_size, "device": str(model.device), "weights": weights,
            "checkpoint": str(args.checkpoint) if args.checkpoint else None, "threads": torch.get_num_threads(),
            "load_seconds": round(time.perf_counter() - loading, 3),
            "note": ("synthetic random weights: the masks, hence the scores, are meaningless; a plumbing and "
                     "speed figure only" if weights == "synthetic" else "real weights: the scores are real figures"),
        }
    with tempfile.TemporaryDirectory(prefix="napari-sam2-tracking-bench-") as workspace:
        for seed in args.seeds:
            image, truth, parents = make_tracking_timelapse(shape=args.shape, seed=seed)
            folder = Path(workspace) / f"seed{seed}"
            gt_folder = write_truth_folder(truth, parents, folder / "GT" / "TRA")
            for case in cases:
                out = folder / case / "RES"
                if case == "truth_through_export":
                    scores = truth_through_export(truth, parents, gt_folder, out, args.frame_buffer)
                elif case == "oracle_pipeline":
                    scores = oracle_pipeline(truth, parents, gt_folder, out, args.frame_buffer,
                                             args.min_division_frames)
                else:
                    scores = sam2_case(model, image, truth, gt_folder, out, args.frame_buffer,
                                       args.min_division_frames)
                report["cases"].setdefault(case, {"per_seed": {}})["per_seed"][str(seed)] = scores
    for case, entry in report["cases"].items():
        per_seed = entry["per_seed"]
        entry["mean"] = means(per_seed)
        if case in LOGIC_CASES:
            entry["all_tra_1"] = all(s["TRA"] == 1.0 for s in per_seed.values())
            entry["all_divisions_found"] = all(s["division_f1"] == 1.0 for s in per_seed.values())
    report["load_average_at_end"] = _load_average()
    report["seconds"] = round(time.perf_counter() - began, 2)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")  # traccuracy's progress bars
    main()
