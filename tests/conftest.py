"""Shared fixtures: the golden reference folder and cached synthetic checkpoints.

The golden folder comes from `--golden-dir`, else $NAPARI_SAM2_GOLDEN, else
../shared/reference/golden beside the checkout. Where it is absent the golden tests
skip with a message, unless $NAPARI_SAM2_REQUIRE_GOLDEN=1 (set by .ci/run): then they fail.
"""

import importlib.util
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

# The process-wide feature cache: features on disk go to a folder of this run's (never the user's cache), and the
# in-memory part stays small (the tests' models are mostly 256 px: 1 MiB a frame).
os.environ.setdefault("NAPARI_SAM2_FEATURES", tempfile.mkdtemp(prefix="napari-sam2-test-features-"))
os.environ.setdefault("NAPARI_SAM2_FEATURE_CACHE_MB", "256")
os.environ.setdefault("NAPARI_SAM2_TRACK_CACHE_MB", "256")
# Passes are kept on disk only where a test asks (NAPARI_SAM2_TRACKS, NAPARI_SAM2_TRACKS_MAX_GB): elsewhere a cleared
# track cache is a new process that tracks everything again.
os.environ.setdefault("NAPARI_SAM2_TRACKS_MAX_GB", "0")


def pytest_addoption(parser):
    parser.addoption("--golden-dir", default=None, help="folder of the SAM2 golden reference outputs")


def pytest_terminal_summary(terminalreporter):
    """Say why the golden tests skipped, without -rs: a run that checked nothing against Meta's outputs must show it."""
    reasons = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "golden reference folder" in reason:
            reasons[reason.removeprefix("Skipped: ")] += 1
    for reason, count in reasons.items():
        terminalreporter.write_line(f"{count} golden test(s) skipped: {reason}", yellow=True, bold=True)


def _golden_dir(config) -> Path:
    given = config.getoption("--golden-dir") or os.environ.get("NAPARI_SAM2_GOLDEN")
    return Path(given) if given else REPO.parent / "shared" / "reference" / "golden"


@pytest.fixture(scope="session")
def golden_dir(request) -> Path:
    path = _golden_dir(request.config)
    if not (path / "image_sam2.1_t.json").exists():
        message = f"golden reference folder not found at {path} (set --golden-dir or NAPARI_SAM2_GOLDEN)"
        if os.environ.get("NAPARI_SAM2_REQUIRE_GOLDEN") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def compare_module(golden_dir):
    """The reference's own numpy comparer, with the published tolerances."""
    spec = importlib.util.spec_from_file_location("sam2_compare", golden_dir.parent / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def checkpoint_cache() -> Path:
    path = Path(os.environ.get("NAPARI_SAM2_TEST_CACHE", REPO / ".cache" / "test-checkpoints"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def synthetic_checkpoint(checkpoint_cache):
    """factory(variant, seed) -> path of a deterministic checkpoint, cached on disk between runs."""
    from napari_sam2.engine.synthetic_checkpoints import write_synthetic_checkpoint

    def make(variant: str, seed: int) -> Path:
        return write_synthetic_checkpoint(variant, seed, checkpoint_cache / f"{variant}_seed{seed}.pt")

    return make


def load_golden(golden_dir: Path, name: str):
    side = json.loads((golden_dir / f"{name}.json").read_text())
    with np.load(golden_dir / f"{name}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for alias, target in side.get("aliases", {}).items():
        arrays[alias] = arrays[target]
    return side, arrays


def assert_matches_golden(compare_module, side, gold, produced):
    """Every golden array present, and within the reference tolerances."""
    rows = compare_module.compare_one(side, gold, produced)
    bad = [r for r in rows if r["status"] != "ok"]
    assert not bad, f"{side['name']}: arrays out of tolerance or missing: {bad}"
    return rows


@pytest.fixture(scope="session")
def fast_model(synthetic_checkpoint):
    """The official tiny variant with deterministic weights, run at a 256-px input: every code
    path of the real model in a fraction of the time (for plumbing, API and GUI tests)."""
    from napari_sam2.engine import get_config, load_model

    config = get_config("sam2.1_hiera_t").with_(image_size=256)
    return load_model(synthetic_checkpoint("sam2.1_hiera_t", 0), device="cpu", config=config)


SMALL_STACK_FRAME = 2  # the frame of small_stack that small_stack_clicks are on


@pytest.fixture(scope="session")
def small_stack():
    """4 frames of 96 x 128 uint16 nuclei (z, y, x)."""
    from napari_sam2.io.sample_data import make_nuclei_stack

    return make_nuclei_stack(shape=(6, 96, 128))[0][1:5]


@pytest.fixture(scope="session")
def small_stack_clicks(small_stack, fast_model):
    """Two (row, col) clicks on SMALL_STACK_FRAME that the random-weight fast model answers with masks."""
    from sam2_clicks import confident_clicks

    return confident_clicks(fast_model, small_stack, SMALL_STACK_FRAME)


@pytest.fixture(scope="session")
def mini_model():
    """A miniature SAM2.1 (`build_mini_model`), shared by the tests of a session."""
    return build_mini_model()


def build_mini_model():
    """A miniature SAM2.1 (128-px input, 8-channel one-block-per-stage Hiera, 32-dim decoder and memory) with
    synthetic weights: every code path of the tracker at ~0.05 s per frame, for property tests over many action
    sequences. Seed 1 gives masks that vary from frame to frame (seed 0 gives empty ones)."""
    from napari_sam2.engine import get_config
    from napari_sam2.engine.checkpoints import build_model
    from napari_sam2.engine.configs import HieraConfig
    from napari_sam2.engine.synthetic_checkpoints import synthetic_state_dict

    config = get_config("sam2.1_hiera_t").with_(
        name="mini", image_size=128, d_model=32, mem_dim=16,
        hiera=HieraConfig(8, 1, (1, 1, 1, 1), (2,), (7, 7), (8, 4, 14, 7)),
    )
    model = build_model(config)
    model.load_state_dict(synthetic_state_dict(config, 1))
    return model.eval()


@pytest.fixture
def encoder_calls(fast_model):
    """One entry per image the fast model's image encoder computed (from any thread); the wrapper is removed
    afterwards."""
    calls = []
    real = fast_model.encode_image

    def counting(images):
        calls.extend([None] * int(images.shape[0]))
        return real(images)

    fast_model.encode_image = counting  # an instance attribute over the method
    try:
        yield calls
    finally:
        del fast_model.encode_image


@pytest.fixture
def use_fast_model(monkeypatch, fast_model):
    """The command line loads the fast model whatever --model says (and records what it was asked for)."""
    from napari_sam2.cli import commands as cli

    asked = []

    def load(name_or_path, device, quiet, compile):
        asked.append((name_or_path, device))
        return fast_model

    monkeypatch.setattr(cli, "_load_model", load)
    return asked


@pytest.fixture
def no_model(monkeypatch):
    """Bad input must be refused before any model is loaded."""
    from napari_sam2.cli import commands as cli

    def load(*args):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr(cli, "_load_model", load)


@pytest.fixture
def features(monkeypatch, tmp_path):
    """This test's on-disk feature store folder (not created yet)."""
    from napari_sam2.core.feature_store import feature_cache_dir

    folder = tmp_path / "features"
    monkeypatch.setenv("NAPARI_SAM2_FEATURES", str(folder))
    assert feature_cache_dir() == folder
    return folder


def clear_feature_memory():
    """Forget the in-memory features and tracks, as a new process would: features found again come from the disk
    store, and every pass is computed again."""
    from napari_sam2.core.feature_store import shared_feature_cache
    from napari_sam2.core.track_store import shared_track_cache

    for cache in (shared_feature_cache(), shared_track_cache()):
        cache.clear()
        assert len(cache) == 0


@pytest.fixture
def messages(monkeypatch):
    """Notifications the napari widget (and its time-lapse section) shows, by kind."""
    from napari_sam2._napari._qt import timelapse_panel
    from napari_sam2._napari._qt import widget as widget_module

    shown = {"error": [], "warning": [], "info": []}
    for kind in shown:
        for module in (widget_module, timelapse_panel):
            if hasattr(module, f"show_{kind}"):
                monkeypatch.setattr(module, f"show_{kind}", shown[kind].append)
    return shown


def run_cli(argv, capsys):
    """The command line run in-process: (exit status, stdout, stderr)."""
    from napari_sam2.cli import commands as cli

    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error_line(stderr: str) -> str:
    """The one `napari-sam2: error:` line of a failed command (other lines, e.g. warnings, may be there too)."""
    lines = [line for line in stderr.strip().splitlines() if line.startswith("napari-sam2: error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]
