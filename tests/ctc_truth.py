"""The tracking benchmark's ground-truth tools, for the tests: a CTC ground-truth folder written straight from a
generator's truth (independent of napari_sam2.io.track_export), traccuracy's scores of a result folder against it, and
the oracle session that tracks like a perfect SAM2 (benchmarks/tracking_benchmark.py)."""

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "tracking_benchmark.py"
_spec = importlib.util.spec_from_file_location("tracking_benchmark", _PATH)
tracking_benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tracking_benchmark)

OracleSession = tracking_benchmark.OracleSession
write_truth_folder = tracking_benchmark.write_truth_folder
score = tracking_benchmark.traccuracy_scores
