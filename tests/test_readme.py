"""The README as a reader meets it: every ```python block runs as written, the ```bash commands that work offline
run in a scratch folder (the others are listed in NOT_RUN with the reason), the menu names it gives are the ones
napari shows, and `.ci/run` installs and runs what the README says.

No checkpoint is downloaded: the registry name "sam2.1_hiera_tiny" finds a synthetic checkpoint in a scratch
cache (NAPARI_SAM2_CACHE), with the official tiny architecture and deterministic random weights, so the code runs
but the masks mean nothing. To keep the test quick on a CPU the model runs at a 128-px input instead of SAM2's
1024 (README_IMAGE_SIZE): `load_model` is wrapped, the README's code is not touched.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoint_server import closed_port_url

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own TOML reader
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
README_MODEL = "sam2.1_hiera_tiny"  # the name the README's code uses
README_IMAGE_SIZE = 128

# ```bash lines that are not run here, each with the reason; a line is matched by how it starts.
NOT_RUN = {
    "python3 -m venv": "makes a virtual environment, installs torch and the plugin from the package index and opens "
                       "napari's window (.ci/run installs the same on a fresh machine; test_menus_read_as_the_readme_"
                       "says and tests/test_widget.py open the widget headless)",
    "QT_API=pyqt6": "the whole test suite, this test included (.ci/run runs it: test_ci_runs_the_readme_commands)",
    "napari-sam2 models download": "downloads 156 MB from Meta (tests/test_models.py downloads from a local server)",
    "napari-sam2 models register": "names a checkpoint file on the reader's disk (tests/test_models.py registers one)",
    "napari-sam2 segment": "needs Meta's checkpoint and minutes of CPU at 1024 px (tests/test_cli_segment.py runs "
                           "`segment` on a synthetic checkpoint)",
    "napari-sam2 track": "needs Meta's checkpoint and minutes of CPU at 1024 px (tests/test_cli_track.py runs "
                         "`track` on a synthetic checkpoint)",
    "python benchmarks/": "a benchmark: minutes of CPU",
    "PYTHONPATH=DIR python benchmarks/": "needs Meta's sam2 package installed beside (DIR)",
}


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def bash_commands() -> list[str]:
    return [line.strip() for block in blocks("bash") for line in block.splitlines() if line.strip()]


def not_run_reason(command: str) -> str | None:
    return next((reason for start, reason in NOT_RUN.items() if command.startswith(start)), None)


def pretend_downloaded(path: Path) -> None:
    """Stamp a file in the cache as `models download` stamps what it verified, so it is taken for Meta's checkpoint
    (by this process and by the command line) without being hashed."""
    from napari_sam2.models import registry

    info = registry.resolve_name(README_MODEL)
    registry._write_stamp(path, info.hash_value, info.hash_algorithm)


def closed_port_base_url() -> str:
    """A base URL for official checkpoints where nothing listens: a download attempt fails at once, as offline."""
    return closed_port_url().rsplit("/", 1)[0]


# ---- the Python snippets --------------------------------------------------------------------------------------------


def test_the_readme_clicks_land_on_a_nucleus():
    from napari_sam2.io.sample_data import make_nuclei_stack

    _, truth = make_nuclei_stack()
    code = "\n".join(blocks("python"))
    prompts = re.findall(r"Prompt\(frame=(\d+), obj_id=\d+, points=\[\((\d+), (\d+)\)\]", code)
    engine_clicks = re.findall(r"^x, y = (\d+), (\d+)", code, flags=re.MULTILINE)
    frames = re.findall(r"add_prompt\(frame_idx=(\d+)", code)
    assert prompts and engine_clicks and frames, "the README's clicks were not found"
    for frame, row, col in prompts:  # (row, col)
        assert truth[int(frame), int(row), int(col)] > 0, f"the click ({row}, {col}) on slice {frame} misses"
    for x, y in engine_clicks:  # the engine's (x, y), on slice 12 (the image) and the tracker's prompted frame
        for frame in {12, *map(int, frames)}:
            assert truth[frame, int(y), int(x)] > 0, f"the click x={x}, y={y} on slice {frame} misses"


@pytest.fixture
def readme_model(tmp_path, monkeypatch, synthetic_checkpoint):
    """The README's registry name resolves to a synthetic checkpoint, loaded at README_IMAGE_SIZE; no network."""
    from napari_sam2 import engine
    from napari_sam2.engine import get_config
    from napari_sam2.models import loaded, registry

    monkeypatch.setenv("NAPARI_SAM2_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NAPARI_SAM2_BASE_URL", closed_port_base_url())
    info = registry.resolve_name(README_MODEL)
    dest = registry.cached_path(README_MODEL)
    dest.parent.mkdir(parents=True)
    source = synthetic_checkpoint(info.config_name, 0)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
    pretend_downloaded(dest)

    real_load_model = engine.load_model

    def load_small(checkpoint, device="auto", config=None):
        config = get_config(info.config_name).with_(image_size=README_IMAGE_SIZE)
        return real_load_model(checkpoint, device=device, config=config)

    monkeypatch.setattr(engine, "load_model", load_small)  # `from napari_sam2.engine import load_model`
    monkeypatch.setattr(loaded, "load_model", load_small)  # segment_stack(model=NAME) -> get_model
    monkeypatch.chdir(tmp_path)
    loaded.clear_model_cache()
    yield dest
    loaded.clear_model_cache()  # no other test may get this small model for the checkpoint's path


def test_every_python_block_runs_as_written(readme_model, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)  # where the blocks write
    python_blocks = blocks("python")
    assert len(python_blocks) == 4
    results = []
    for number, code in enumerate(python_blocks, 1):
        ast.parse(code)  # a syntax error names the block, not this test
        namespace = {"__name__": "__readme__"}  # each block on its own: it defines everything it uses
        exec(compile(code, f"README.md python block {number}", "exec"), namespace)
        results.append(namespace)

    api, engine, features, tracking = results
    assert api["labels"].shape == api["stack"].shape and api["labels"].dtype == np.int32
    assert set(np.unique(api["labels"])) <= {0, 1}
    assert engine["rgb_uint8"].shape == (*engine["stack"].shape[1:], 3) and engine["rgb_uint8"].dtype == np.uint8
    assert engine["masks"].shape[1:] == engine["stack"].shape[1:]
    assert engine["result"].frame_idx == len(engine["stack"]) - 1  # tracked forward to the last slice
    assert tuple(engine["result"].mask_logits.shape[-2:]) == engine["stack"].shape[1:]
    assert tuple(engine["result"].owner.shape) == engine["stack"].shape[1:]
    from napari_sam2.core.feature_store import feature_cache_dir
    from napari_sam2.core.tensor_store import ZarrTensorStore

    stored = ZarrTensorStore(feature_cache_dir()).keys()  # the third block stored every slice's features
    assert len(features["stack"]) == 24 and len(stored) >= 24
    assert tracking["result"].labels.shape == tracking["movie"].shape
    assert set(np.unique(tracking["truth"][0])) <= set(np.unique(tracking["result"].labels[0])) | {0}
    assert {path.name for path in tracking["written"]} == {"RES", "tracks.geff", "tracks.csv", "flags.csv"}
    assert (tmp_path / "tracks" / "RES" / "res_track.txt").is_file()


# ---- the command lines ---------------------------------------------------------------------------------------------


def test_the_offline_command_lines_run(tmp_path):
    from napari_sam2.models import registry

    commands = bash_commands()
    used = {start for start in NOT_RUN for command in commands if command.startswith(start)}
    assert used == set(NOT_RUN), f"NOT_RUN names commands the README no longer has: {set(NOT_RUN) - used}"
    to_run = [command for command in commands if not_run_reason(command) is None]
    assert [command.split(" #")[0].strip() for command in to_run] == [
        "napari-sam2 models list",
        "napari-sam2 models path sam2.1_hiera_tiny",
        "napari-sam2 sample nuclei --out demo",
        "napari-sam2 sample timelapse --out demo",
    ], to_run  # a new command in the README: run it here, or say in NOT_RUN why not

    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "NAPARI_SAM2_CACHE": str(cache),
        "NAPARI_SAM2_BASE_URL": closed_port_base_url(),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    # What `models download` would leave (it is not run): the file in the cache, stamped with Meta's hash.
    cache.mkdir()
    downloaded = cache / registry.resolve_name(README_MODEL).filename
    downloaded.write_bytes(b"stand-in for the downloaded checkpoint")
    pretend_downloaded(downloaded)

    outputs = []
    for command in to_run:
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
    listed, path, _, _ = outputs
    assert len([line for line in listed.splitlines() if "hiera" in line]) >= 8, listed
    assert path.strip() == str(downloaded)
    assert {p.name for p in (tmp_path / "demo").iterdir()} >= {"nuclei.tif", "nuclei_truth.tif", "nuclei.csv",
                                                                "timelapse.tif", "timelapse_truth.tif"}


# ---- install and CI -------------------------------------------------------------------------------------------------


def test_ci_runs_the_readme_commands():
    """`.ci/run` runs the README's test command verbatim, and the install uses the extra that brings napari's
    default Qt binding (PyQt6), the binding the test command selects."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    assert extras["all"] == ["napari[pyqt6]", "napari-sam2[tracking]"]  # napari's default Qt, GEFF export
    assert "napari-sam2[all]" in extras["testing"]
    qt = re.compile(r"(?i)^(pyqt|pyside|napari\[(all|pyqt|pyside|qt))")
    assert not [dep for dep in project["dependencies"] if qt.match(dep)], "a plugin must not force a Qt binding"
    assert not [dep for dep in extras["testing"] if qt.match(dep)], "[testing] takes its Qt binding from [all]"

    test_commands = [command for command in bash_commands() if command.startswith("QT_API=")]
    assert len(test_commands) == 1
    assert "QT_API=pyqt6 PYTEST_QT_API=pyqt6 " in test_commands[0]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_commands[0] in ci.splitlines()
    assert 'pip install -q -e ".[all,testing]"' in ci
    (setup,) = [command for command in bash_commands() if command.startswith("python3 -m venv")]
    steps = setup.split(" && ")
    # torch first (pinned: never an unpinned torch from the index), then the plugin with its Qt binding
    assert steps.index("pip install torch==2.13.0") < steps.index('pip install -e ".[all]"'), steps
    assert "pip install -q torch==2.13.0" in ci


# ---- the menus ------------------------------------------------------------------------------------------------------


def menu_entries(viewer) -> list[str]:
    """Every leaf of napari's menu bar as a reader names it, e.g.
    "File → Open Sample → SAM2 → Nuclei 3D (synthetic)"."""
    entries = []

    def walk(menu, path):
        for action in menu.actions():
            if action.isSeparator():
                continue
            text = action.text().replace("&&", "\0").replace("&", "").replace("\0", "&")  # "&&" shows as "&"
            if action.menu() is not None:
                walk(action.menu(), [*path, text])
            else:
                entries.append(" → ".join([*path, text]))

    walk(viewer.window._qt_window.menuBar(), [])
    return entries


@pytest.mark.gui
def test_menus_read_as_the_readme_says(make_napari_viewer):
    import yaml

    manifest = yaml.safe_load((ROOT / "napari.yaml").read_text(encoding="utf-8"))
    (widget,) = manifest["contributions"]["widgets"]
    viewer = make_napari_viewer()
    entries = menu_entries(viewer)
    ours = [entry for entry in entries if "SAM2" in entry]
    assert ours == [
        "File → Open Sample → SAM2 → Nuclei 3D (synthetic)",
        "File → Open Sample → SAM2 → Cell time-lapse with a division (synthetic)",
        "Plugins → Segment & track (SAM2)",
    ], ours

    named = re.findall(r"\*((?:Plugins|File → Open Sample) → [^*]+)\*", README)
    assert named == ["Plugins → Segment & track (SAM2)", "File → Open Sample → SAM2"], named
    for name in named:
        assert any(entry == name or entry.startswith(name + " → ") for entry in entries), name

    # `napari -w napari-sam2 "WIDGET"` takes the widget's own name, without the plugin's
    steps = [step for command in bash_commands() for step in command.split(" && ")]
    (launch,) = [step for step in steps if step.startswith("napari -w")]
    assert launch == f'napari -w {manifest["name"]} "{widget["display_name"]}"'
    dock, _ = viewer.window.add_plugin_dock_widget(manifest["name"], widget["display_name"])
    assert dock.name == "Segment & track (napari-sam2)"  # napari titles the dock with the plugin's package name
