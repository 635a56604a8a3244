"""benchmarks/tracking_benchmark.py, run in-process on one small time-lapse: the ground truth through the export and
the pipeline's logic on the oracle session must score TRA = 1 with every division found (traccuracy); the real SAM2
path (synthetic weights at 256 px, so its scores mean nothing) must run through and report its figures."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "tracking_benchmark.py"


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("tracking_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_logic_scores_perfectly_and_the_sam2_path_runs(benchmark, checkpoint_cache, capsys):
    report = benchmark.main(["--seeds", "0", "--shape", "15,64,80", "--sam2", "--image-size", "128",
                             "--cache", str(checkpoint_cache)])
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(report))  # what it prints is the report
    assert report["seeds"] == [0] and report["shape"] == [15, 64, 80] and report["torch"]
    for case in ("truth_through_export", "oracle_pipeline"):
        entry = report["cases"][case]
        scores = entry["per_seed"]["0"]
        assert scores["TRA"] == 1.0 and scores["DET"] == 1.0 and scores["LNK"] == 1.0, (case, scores)
        assert scores["division_f1"] == 1.0 and scores["tp_divisions"] == 2 == scores["gt_divisions"], (case, scores)
        assert scores["result"] == scores["truth"] == {"tracks": 11, "divisions": 2}
        assert entry["mean"]["TRA"] == 1.0 and entry["mean"]["division_f1"] == 1.0
        assert entry["all_tra_1"] and entry["all_divisions_found"]
    assert set(report["cases"]["oracle_pipeline"]["per_seed"]["0"]["division_frames"]) == {"1", "2"}

    sam2 = report["cases"]["sam2"]["per_seed"]["0"]
    assert report["sam2"]["weights"] == "synthetic" and report["sam2"]["image_size"] == 128
    assert sam2["frames_tracked"] >= 15 and sam2["seconds_per_frame"] > 0 and sam2["objects_seeded"] == 6
    # Random weights: masks may cover several cells, which traccuracy may refuse to score (said in the report).
    assert (0.0 <= sam2["TRA"] <= 1.0) if "TRA" in sam2 else "matcher" in sam2["scoring_error"]
    assert sam2["truth"] == {"tracks": 11, "divisions": 2}
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in sam2.values())  # strict JSON: NaN as null


def test_seed_and_shape_arguments(benchmark):
    assert benchmark.parse_seeds("0-2") == [0, 1, 2]
    assert benchmark.parse_seeds("0,3,5-6") == [0, 3, 5, 6]
    assert benchmark.parse_shape("15,64,80") == (15, 64, 80)
    with pytest.raises(SystemExit):
        benchmark.build_parser().parse_args(["--seeds", "a"])
