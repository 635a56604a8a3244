"""The plugin as napari finds it: the npe2 manifest from the editable install, and from a built wheel installed on
its own (a user's `pip install napari-sam2`)."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONTRIBUTIONS = {
    "widgets": ["Segment & track"],
    "sample_data": ["nuclei-3d", "cell-timelapse"],
    "readers": ["napari-sam2.get_reader"],
}

# Run in a fresh interpreter: which napari-sam2 npe2 finds, where, and what it contributes.
DISCOVER = """
import json, sys
import npe2
import napari_sam2
pm = npe2.PluginManager()
pm.discover()
manifest = pm.get_manifest("napari-sam2")
contributions = manifest.contributions
print(json.dumps({
    "package": napari_sam2.__file__,
    "widgets": [w.display_name for w in contributions.widgets or []],
    "sample_data": [s.key for s in contributions.sample_data or []],
    "readers": [r.command for r in contributions.readers or []],
}))
"""


def discover(*python_options, env=None) -> dict:
    result = subprocess.run(
        [sys.executable, *python_options, "-c", DISCOVER], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_npe2_validates_the_manifest_and_imports_every_command():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-sam2", "--imports"], capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()


def test_the_editable_install_is_discovered():
    found = discover()
    assert Path(found["package"]).is_relative_to(ROOT / "src")
    for kind, names in CONTRIBUTIONS.items():
        assert found[kind] == names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of the sources, so that no build folder is left in the checkout (or reused from it).
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "napari.yaml"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    folder = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(folder), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = folder.glob("napari_sam2-*.whl")
    return path


def test_the_wheel_carries_the_manifest_and_the_entry_points(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        manifest = archive.read("napari_sam2/napari.yaml").decode()
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(entry_points).decode()
    assert yaml.safe_load(manifest) == yaml.safe_load((ROOT / "napari.yaml").read_text())
    assert "[napari.manifest]\nnapari-sam2 = napari_sam2:napari.yaml" in entry_points
    assert "napari-sam2 = napari_sam2.cli:main" in entry_points
    assert not [name for name in names if name.startswith("tests/") or "/tests/" in name]
    for module in (
        "engine/model.py", "engine/tracker.py", "core/frames.py", "models/registry.py", "io/tiff.py", "cli/commands.py",
        "_napari/_qt/widget.py",
    ):
        assert f"napari_sam2/{module}" in names


def test_a_wheel_installed_on_its_own_is_discovered_by_napari(wheel, tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # -S: no .pth files, so the editable install's import hook is off; the dependencies still come from
    # site-packages, after the wheel's folder.
    found = discover("-S", env={"PYTHONPATH": os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])})
    assert Path(found["package"]).is_relative_to(site)
    for kind, names in CONTRIBUTIONS.items():
        assert found[kind] == names
