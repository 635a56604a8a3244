"""benchmarks/gpu_check.py, the script a CUDA machine runs, checked for plumbing on the CPU: its golden check passes
in float32 and reports its figures. (On a GPU it is run by hand and its JSON committed under benchmarks/results/.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.golden


def test_gpu_check_runs_on_the_cpu_and_passes_its_golden_check(golden_dir, tmp_path):
    out = tmp_path / "gpu_check.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
        "--golden-dir", str(ROOT / "tests" / "data" / "golden_extra"), "--frames-dir", str(golden_dir),
        "--compare", str(golden_dir.parent / "compare.py"), "--scenarios", "video_sam2_t_correction_after_reverse",
        "--skip", "reference", "--compile-backend", "eager", "--out", str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert json.loads(out.read_text()) == report
    assert report["device"] == "cpu" and report["default_precision"] == "float32"
    golden = report["golden"]
    assert golden["float32_all_within_tolerance"] is True
    row = golden["float32"]["video_sam2_t_correction_after_reverse"]
    assert row["arrays"] > 10 and row["out_of_tolerance"] == 0 and row["lowest_mask_agreement"] >= 0.99
    fps = report["fps"]["sam2.1_hiera_t"]
    assert fps["1_obj"] > 0 and fps["8_obj"] > 0
    assert report["memory"]["frames"] == 8 and report["memory"]["peak_device_mib"] is None  # no device memory on a CPU
    assert "reference" not in report
    compiled = report["compile"]  # dynamo's tracing with eager kernels here: inductor is tests/test_compile.py's
    assert compiled["backend"] == "eager" and compiled["later_prompts"] == 5 and compiled["recompiled_for_clicks"] is False
    assert compiled["1_obj"]["compiled_fps"] > 0 and compiled["8_obj"]["speedup"] > 0
    row = compiled["golden_float32"]["video_sam2_t_correction_after_reverse"]
    assert row["arrays"] > 10 and row["out_of_tolerance"] == 0
