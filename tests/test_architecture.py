"""The layers of the package, checked from the source (docs/ARCHITECTURE.md draws them).

Every module under src/napari_sam2 is parsed with `ast` (nothing is imported) and each of its imports of the
package itself, at the top or inside a function, is mapped to a layer. Imports point down the rank table, never
up; the engine needs only `errors` from the package; Qt lives only in `_napari/_qt/`, napari only in `_napari/`.
A few modules that must start fast are imported in a fresh interpreter to check that they do not load torch.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "napari_sam2"
PACKAGE_DIR = SRC / PACKAGE

# Lowest first. A module may import its own layer and any lower one. Layers of equal rank are siblings that
# must not import each other (the command line and the napari glue are two separate front ends).
RANK = {
    "base": 0,  # errors.py, numbers.py, progress_bar.py: no torch, imported by all
    "engine": 1,  # engine/: SAM2 in PyTorch
    "models": 2,  # models/: checkpoint registry, downloads, loaded models
    "core": 3,  # core/: arrays and prompts in, labels out
    "io": 4,  # io/: TIFF, prompt files, sample data (no torch)
    "api": 5,  # api.py and the package's __init__ (its public face)
    "cli": 6,  # cli/ and __main__.py
    "_napari": 6,  # _napari/ (its Qt part in _napari/_qt/)
}
BASE_MODULES = {"errors", "numbers", "progress_bar"}
SUBPACKAGES = {"engine", "models", "core", "io", "cli", "_napari"}

# The package root defines `__version__` in its own file before anything else; Python runs that file before
# any submodule, so reading `__version__` from it adds no dependency on the API it re-exports lazily.
ROOT_NAMES_ANY_LAYER = {"__version__"}

ENGINE_MAY_IMPORT = {f"{PACKAGE}.errors"}

QT_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "napari.qt", "napari._qt")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULE_FILES = {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    """The layer of a module of the package (dotted name), or None when it has no place in the table."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1:
        return "api"  # the package root re-exports the API
    head = parts[1]
    if head in SUBPACKAGES:
        return head
    if len(parts) == 2 and head in BASE_MODULES:
        return "base"
    if len(parts) == 2 and head == "api":
        return "api"
    if len(parts) == 2 and head == "__main__":
        return "cli"
    return None


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository
    line: int
    source: str  # the statement, as written
    module: str  # the imported module, absolute ("" for a relative import above the package)
    names: tuple[str, ...]  # for `from X import a, b`: ("a", "b"); for `import X`: ()

    def __str__(self):
        return f"{self.file}:{self.line}: {self.source}"


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    if not base:
        return ""
    return ".".join(base + ([module] if module else []))


def imports_of(module: str) -> list[Import]:
    """Every import statement of a module, anywhere in it, with relative imports made absolute."""
    path = MODULE_FILES[module]
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    is_package = path.name == "__init__.py"
    file = str(path.relative_to(REPO))
    found = []

    def statement(node) -> str:
        return " ".join((ast.get_source_segment(text, node) or "").split())

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(file, node.lineno, statement(node), alias.name, ()))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = _resolve_relative(module, is_package, node.level, node.module)
            else:
                target = node.module or ""
            names = tuple(alias.name for alias in node.names)
            found.append(Import(file, node.lineno, statement(node), target, names))
    return found


def package_targets(imp: Import) -> list[tuple[str, tuple[str, ...]]]:
    """The package modules an import loads: (module, names taken from it). `from pkg import sub` loads pkg.sub."""
    if imp.module != PACKAGE and not imp.module.startswith(PACKAGE + "."):
        return []
    if not imp.names:
        return [(imp.module, ())]
    targets, from_module = [], []
    for name in imp.names:
        if f"{imp.module}.{name}" in MODULE_FILES:
            targets.append((f"{imp.module}.{name}", ()))
        else:
            from_module.append(name)
    if from_module:
        targets.append((imp.module, tuple(from_module)))
    return targets


def external_modules(imp: Import) -> list[str]:
    """Full dotted names an import of a third-party module reaches: `from napari import qt` reaches napari.qt."""
    if not imp.module or imp.module == PACKAGE or imp.module.startswith(PACKAGE + "."):
        return []
    if not imp.names:
        return [imp.module]
    return [imp.module] + [f"{imp.module}.{name}" for name in imp.names if name != "*"]


def _is_under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


ALL_IMPORTS = {module: imports_of(module) for module in MODULE_FILES}


# ------------------------------------------------------------------------------------------------ (e) placement


def test_every_module_has_a_layer():
    unplaced = [str(MODULE_FILES[m].relative_to(REPO)) for m in MODULE_FILES if layer_of(m) is None]
    assert not unplaced, (
        "modules outside every layer (place them in a layer folder, or add them to RANK / BASE_MODULES in "
        f"tests/test_architecture.py and to docs/ARCHITECTURE.md): {unplaced}"
    )


def test_every_package_import_names_a_module_that_exists():
    missing = [
        f"{imp} -> {target} (no such module)"
        for imports in ALL_IMPORTS.values()
        for imp in imports
        for target, _ in package_targets(imp)
        if target not in MODULE_FILES
    ]
    assert not missing, "\n".join(missing)


# ------------------------------------------------------------------------------------------------ (a) direction


def upward_imports() -> list[str]:
    bad = []
    for module, imports in ALL_IMPORTS.items():
        own = layer_of(module)
        if own is None:
            continue
        for imp in imports:
            for target, names in package_targets(imp):
                theirs = layer_of(target)
                if theirs is None or theirs == own:
                    continue
                if target == PACKAGE and names and set(names) <= ROOT_NAMES_ANY_LAYER:
                    continue
                if RANK[theirs] > RANK[own]:
                    bad.append(f"{imp}  [{own} -> {theirs}: upward]")
                elif RANK[theirs] == RANK[own]:
                    bad.append(f"{imp}  [{own} -> {theirs}: siblings must not import each other]")
    return bad


def test_imports_point_down_the_layers():
    bad = upward_imports()
    order = " < ".join(f"{layer}" for layer in sorted(RANK, key=RANK.get))
    assert not bad, f"imports against the layer order ({order}):\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------------------ (b) engine


def test_engine_imports_only_errors_from_the_package():
    bad = []
    for module, imports in ALL_IMPORTS.items():
        if layer_of(module) != "engine":
            continue
        for imp in imports:
            for target, _ in package_targets(imp):
                if layer_of(target) != "engine" and target not in ENGINE_MAY_IMPORT:
                    bad.append(f"{imp}  [engine -> {target}]")
    assert not bad, "the engine may import only napari_sam2.errors from the package:\n" + "\n".join(bad)


# ------------------------------------------------------------------------------------------------ (c) Qt, napari


def _relative_parts(module: str) -> list[str]:
    return module.split(".")[1:]


def test_qt_only_in_napari_qt_and_napari_only_in_napari():
    bad = []
    for module, imports in ALL_IMPORTS.items():
        parts = _relative_parts(module)
        in_napari = parts[:1] == ["_napari"]
        in_qt = parts[:2] == ["_napari", "_qt"]
        for imp in imports:
            reached = external_modules(imp)
            qt = [name for name in reached if any(_is_under(name, q) for q in QT_MODULES)]
            if qt and not in_qt:
                bad.append(f"{imp}  [Qt ({qt[0]}) outside src/napari_sam2/_napari/_qt/]")
            elif not in_napari and any(_is_under(name, "napari") for name in reached):
                bad.append(f"{imp}  [napari outside src/napari_sam2/_napari/]")
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------------------------ (d) no torch


# Run in a fresh interpreter: which of the package's files were on the stack when torch was first imported.
NO_TORCH_PROBE = r"""
import json, sys, traceback

class _Watch:
    chain = None
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and _Watch.chain is None:
            _Watch.chain = [f"{f.filename}:{f.lineno}: {(f.line or '').strip()}"
                            for f in traceback.extract_stack() if "napari_sam2" in f.filename]
        return None

sys.meta_path.insert(0, _Watch())
exec(sys.argv[1])
print(json.dumps({"torch": "torch" in sys.modules, "chain": _Watch.chain}))
"""


def _manifest_non_widget_modules() -> list[str]:
    manifest = yaml.safe_load((PACKAGE_DIR / "napari.yaml").read_text(encoding="utf-8"))
    contributions = manifest["contributions"]
    widget_commands = {widget["command"] for widget in contributions.get("widgets", [])}
    modules = {
        command["python_name"].split(":")[0]
        for command in contributions["commands"]
        if command["id"] not in widget_commands
    }
    return sorted(modules)


NO_TORCH_CASES = {
    "import napari_sam2": "import napari_sam2",
    "import napari_sam2.core.prompts": "import napari_sam2.core.prompts",
    "import napari_sam2.io.prompt_files": "import napari_sam2.io.prompt_files",
    "import napari_sam2.cli": "import napari_sam2.cli",
    # The command line's own up-front checks (argument parsing, --help, --version, bad usage) run before any model
    # is loaded and must stay quick: building the parser must not load torch.
    "napari-sam2 --version (build the CLI parser)": (
        "import contextlib, io\n"
        "from napari_sam2.cli.commands import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['--version']) == 0\n"
    ),
    **{f"import {m} (npe2 manifest)": f"import {m}" for m in _manifest_non_widget_modules()},
}


@pytest.mark.parametrize("case", list(NO_TORCH_CASES))
def test_quick_entry_points_do_not_import_torch(case):
    code = NO_TORCH_CASES[case]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH_PROBE, code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    chain = "\n".join(f"  {os.path.relpath(line, REPO)}" for line in report["chain"] or [])
    assert not report["torch"], f"{case} imported torch, through (outermost first):\n{chain}"
