"""`napari-sam2 models ...`: output and exit codes, against a local HTTP server (never the internet)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from checkpoint_server import PAYLOAD, add_model, isolated_cache, server  # noqa: F401  (fixtures)

import napari_sam2
from napari_sam2.cli import commands as cli
from napari_sam2.models import registry as models


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("napari-sam2: error: ")
    assert "Traceback" not in stderr
    return lines[0]


def test_list_shows_every_official_model_and_whether_it_is_cached(add_model, isolated_cache, capsys):
    add_model("good.pt")
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "test_model.pt").write_bytes(PAYLOAD)
    assert cli.main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "CONFIG", "PARAMS", "CACHED", "PATH"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(models.MODELS) <= set(rows)
    large = isolated_cache / "sam2.1_hiera_large.pt"
    assert rows["sam2.1_hiera_large"][1:] == ["sam2.1_hiera_l", "224.4M", "no", str(large)]
    assert rows["test_model"][3] == "yes"


def test_list_includes_registered_local_files(tmp_path, capsys, synthetic_checkpoint):
    file = tmp_path / "mine.pt"
    file.write_bytes(synthetic_checkpoint("sam2.1_hiera_t", 0).read_bytes())
    assert cli.main(["models", "register", "mine", str(file)]) == 0
    assert capsys.readouterr().out.strip() == f"registered mine (sam2.1_hiera_t): {file}"
    assert cli.main(["models", "list"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row == ["mine", "-", "-", "local", str(file)]


def test_download_prints_the_path_and_shows_progress_on_stderr(add_model, isolated_cache, capsys):
    add_model("good.pt")
    assert cli.main(["models", "download", "test_model"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(isolated_cache / "test_model.pt")
    assert "test_model  [" in captured.err and "100%" in captured.err
    assert (isolated_cache / "test_model.pt").read_bytes() == PAYLOAD

    assert cli.main(["models", "download", "test_model"]) == 0
    assert "already downloaded" in capsys.readouterr().err


def test_download_from_a_given_url(add_model, server, capsys):
    add_model("missing.pt")
    assert cli.main(["models", "download", "test_model", "--url", server.url("good.pt")]) == 0
    assert Path(capsys.readouterr().out.strip()).read_bytes() == PAYLOAD


def test_failed_download_is_one_line_with_exit_2(add_model, isolated_cache, capsys):
    info = add_model("missing.pt")
    assert cli.main(["models", "download", "test_model"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "HTTP 404" in line and info.url in line and str(isolated_cache / "test_model.pt") in line
    assert not (isolated_cache / "test_model.pt").exists()


def test_path_prints_a_cached_file(add_model, isolated_cache, capsys):
    add_model("good.pt")
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "test_model.pt").write_bytes(PAYLOAD)
    assert cli.main(["models", "path", "test_model"]) == 0
    assert capsys.readouterr().out.strip() == str(isolated_cache / "test_model.pt")


def test_path_of_a_model_not_downloaded_exits_2_without_downloading(add_model, server, capsys):
    add_model("good.pt")
    assert cli.main(["models", "path", "test_model"]) == 2
    assert "napari-sam2 models download test_model" in one_error_line(capsys.readouterr().err)
    assert server.requests == []


def test_register_of_a_missing_file_exits_2(tmp_path, capsys):
    assert cli.main(["models", "register", "mine", str(tmp_path / "nope.pt")]) == 2
    assert "not an existing file" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("content, message", [
    (b"index,axis-0\n0,1\n", "is not a PyTorch checkpoint"),
    (b"", "is empty"),
])
def test_register_of_a_file_that_is_no_checkpoint_exits_2_and_registers_nothing(tmp_path, capsys, content, message):
    file = tmp_path / "prompts.csv"
    file.write_bytes(content)
    before = models.local_models()
    assert cli.main(["models", "register", "mine", str(file)]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert models.local_models() == before


def test_unknown_model_exits_2_listing_valid_names(capsys):
    assert cli.main(["models", "download", "huge"]) == 2
    assert "sam2.1_hiera_tiny" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [[], ["models"], ["models", "frobnicate"], ["models", "path"]])
def test_bad_usage_exits_2(argv, capsys):
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert cli.main(["models", "--help"]) == 0
    assert "download" in capsys.readouterr().out


def test_unexpected_failure_exits_1(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(models, "model_path", broken)
    assert cli.main(["models", "path", "tiny"]) == 1
    assert "boom" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli(isolated_cache):
    src = str(Path(napari_sam2.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "napari_sam2", "models", "path", "sam2.1_hiera_small"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 2
    assert str(isolated_cache / "sam2.1_hiera_small.pt") in one_error_line(result.stderr)
