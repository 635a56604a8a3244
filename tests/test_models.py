"""The model registry, the cache and downloads, against a local HTTP server (never the internet)."""

import io
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from checkpoint_server import (  # noqa: F401  (fixtures)
    PAYLOAD,
    PAYLOAD_SHA256,
    add_model,
    closed_port_url,
    isolated_cache,
    server,
)

from napari_sam2.errors import CheckpointError, InputError
from napari_sam2.models import registry as models


def leftovers(folder: Path) -> list[str]:
    """Files a download may leave behind besides the checkpoint and its stamp."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".lock")))


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, done, total):
        self.calls.append((done, total))


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "given, expected",
    [
        ("sam2.1_hiera_tiny", "sam2.1_hiera_tiny"),
        ("SAM2.1_Hiera_Small", "sam2.1_hiera_small"),
        ("sam2.1_hiera_b+", "sam2.1_hiera_base_plus"),
        ("sam2_hiera_l", "sam2_hiera_large"),
        ("tiny", "sam2.1_hiera_tiny"),
        ("Base+", "sam2.1_hiera_base_plus"),
        ("base_plus", "sam2.1_hiera_base_plus"),
        ("large", "sam2.1_hiera_large"),
        ("sam2_hiera_small.pt", "sam2_hiera_small"),
        ("facebook/sam2.1-hiera-large", "sam2.1_hiera_large"),
    ],
)
def test_resolve_name_accepts_canonical_short_and_alias_names(given, expected):
    assert models.resolve_name(given).name == expected


def test_unknown_name_is_an_input_error_listing_valid_names():
    with pytest.raises(InputError) as caught:
        models.resolve_name("huge")
    message = str(caught.value)
    assert "'huge'" in message
    for name in ("sam2.1_hiera_tiny", "sam2_hiera_large", "sam2.1_hiera_b+", "tiny"):
        assert name in message
    assert isinstance(caught.value, ValueError)


def test_registry_holds_the_eight_official_checkpoints():
    official = [info for info in models.MODELS.values() if info.source == models.META_SOURCE]
    assert len(official) == 8
    for info in official:
        release = "092824" if info.name.startswith("sam2.1") else "072824"
        assert info.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/{release}/{info.filename}"
        if info.name.startswith("sam2.1"):
            assert len(info.sha256) == 64
        else:
            assert info.sha256 is None
    assert models.MODELS["sam2.1_hiera_large"].config_name == "sam2.1_hiera_l"
    assert models.MODELS["sam2_hiera_base_plus"].config_name == "sam2_hiera_b+"


def test_base_url_env_replaces_the_host_and_keeps_the_path(monkeypatch):
    monkeypatch.setenv("NAPARI_SAM2_BASE_URL", "http://mirror:8000/sam2/")
    assert models.model_url("tiny") == "http://mirror:8000/sam2/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
    monkeypatch.delenv("NAPARI_SAM2_BASE_URL")
    assert models.model_url("tiny") == models.MODELS["sam2.1_hiera_tiny"].url


# ---------------------------------------------------------------- cache folder


def test_cache_env_var_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SAM2_CACHE", str(tmp_path / "mine"))
    assert models.cache_dir() == tmp_path / "mine"
    assert models.cached_path("large") == tmp_path / "mine" / "sam2.1_hiera_large.pt"


def test_cache_dir_follows_platform_conventions(tmp_path, monkeypatch):
    monkeypatch.delenv("NAPARI_SAM2_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "napari-sam2"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models.cache_dir() == tmp_path / ".cache" / "napari-sam2"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert models.cache_dir() == tmp_path / "Library" / "Caches" / "napari-sam2"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert models.cache_dir() == tmp_path / "Local" / "napari-sam2" / "Cache"


# ---------------------------------------------------------------- downloads


def test_download_lands_in_the_cache_verified_and_reports_progress(add_model, isolated_cache):
    add_model("good.pt")
    progress = Recorder()
    path = models.download("test_model", progress=progress)
    assert path == isolated_cache / "test_model.pt"
    assert path.read_bytes() == PAYLOAD
    assert (isolated_cache / "test_model.pt.sha256").is_file()
    assert leftovers(isolated_cache) == []
    assert progress.calls[0] == (0, len(PAYLOAD))
    assert progress.calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [done for done, _ in progress.calls] == sorted(done for done, _ in progress.calls)


def test_hash_mismatch_leaves_neither_final_nor_part_file(add_model, isolated_cache):
    add_model("corrupt.pt")
    with pytest.raises(CheckpointError) as caught:
        models.download("test_model")
    message = str(caught.value)
    assert PAYLOAD_SHA256 in message and "expected" in message
    assert "run the download again" in message
    assert not (isolated_cache / "test_model.pt").exists()
    assert leftovers(isolated_cache) == []


def test_dropped_connection_resumes_with_range(add_model, server):
    add_model("flaky.pt")
    path = models.download("test_model")
    assert path.read_bytes() == PAYLOAD
    assert server.ranges("flaky.pt") == [None, f"bytes={len(PAYLOAD) // 2}-"]


def test_leftover_part_from_an_earlier_run_is_resumed(add_model, server, isolated_cache):
    add_model("good.pt")
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "test_model.pt.part").write_bytes(PAYLOAD[:1_000_000])
    progress = Recorder()
    assert models.download("test_model", progress=progress).read_bytes() == PAYLOAD
    assert server.ranges("good.pt") == ["bytes=1000000-"]
    assert progress.calls[0] == (1_000_000, len(PAYLOAD))


def test_server_without_range_support_restarts_from_zero(add_model, server, isolated_cache):
    add_model("norange.pt")
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "test_model.pt.part").write_bytes(b"not the start of the file")
    assert models.download("test_model").read_bytes() == PAYLOAD
    assert server.ranges("norange.pt") == ["bytes=25-"]


def test_failed_download_keeps_only_the_part_and_a_later_run_finishes_it(add_model, server, isolated_cache):
    add_model("flaky.pt")
    server.reset(drops=10)
    with pytest.raises(CheckpointError, match="after 3 attempts"):
        models.download("test_model")
    assert not (isolated_cache / "test_model.pt").exists()
    part = isolated_cache / "test_model.pt.part"
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD)
    assert len(server.ranges("flaky.pt")) == 3

    server.reset(drops=0)
    assert models.download("test_model").read_bytes() == PAYLOAD
    assert server.ranges("flaky.pt") == [f"bytes={kept}-"]
    assert leftovers(isolated_cache) == []


def test_http_404_is_not_retried_and_says_what_to_do(add_model, server, isolated_cache):
    info = add_model("missing.pt")
    with pytest.raises(CheckpointError) as caught:
        models.download("test_model")
    message = str(caught.value)
    assert "HTTP 404" in message
    assert info.url in message and str(isolated_cache / "test_model.pt") in message
    assert len(server.ranges("missing.pt")) == 1
    assert not (isolated_cache / "test_model.pt").exists()


def test_offline_error_names_the_url_and_the_destination(add_model, isolated_cache):
    add_model("good.pt")
    url = closed_port_url()
    with pytest.raises(CheckpointError) as caught:
        models.download("test_model", url=url)
    message = str(caught.value)
    assert url in message
    assert str(isolated_cache / "test_model.pt") in message
    assert "refused" in message and "register" in message
    assert not (isolated_cache / "test_model.pt").exists()


def test_model_path_downloads_through_the_mirror_env_var(server, monkeypatch):
    official_style_url = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/good.pt"
    info = models.ModelInfo("test_model", "sam2.1_hiera_t", official_style_url, PAYLOAD_SHA256, 0.1, "test")
    monkeypatch.setitem(models.MODELS, "test_model", info)
    monkeypatch.setenv("NAPARI_SAM2_BASE_URL", server.base_url + "/mirror")
    assert models.model_path("test_model").read_bytes() == PAYLOAD
    assert server.requests == [("/mirror/segment_anything_2/092824/good.pt", None)]


def test_non_http_url_is_refused():
    with pytest.raises(InputError, match="http"):
        models.download("tiny", url="file:///etc/passwd")


# ---------------------------------------------------------------- model_path and the SHA-256 stamp


def test_model_path_without_download_says_where_to_get_the_file(monkeypatch, isolated_cache):
    monkeypatch.delenv("NAPARI_SAM2_BASE_URL")
    with pytest.raises(CheckpointError) as caught:
        models.model_path("sam2.1_hiera_tiny", download=False)
    message = str(caught.value)
    assert "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt" in message
    assert str(isolated_cache / "sam2.1_hiera_tiny.pt") in message
    assert "napari-sam2 models download sam2.1_hiera_tiny" in message


def test_model_path_downloads_a_missing_official_file(add_model, isolated_cache):
    add_model("good.pt")
    assert models.model_path("test_model") == isolated_cache / "test_model.pt"


def count_hashing(monkeypatch) -> list:
    calls = []
    real = models.file_sha256

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(models, "file_sha256", counting)
    return calls


def test_cached_file_is_hashed_once_then_trusted_by_its_stamp(add_model, isolated_cache, monkeypatch):
    add_model("good.pt")
    isolated_cache.mkdir(parents=True)
    cached = isolated_cache / "test_model.pt"
    cached.write_bytes(PAYLOAD)  # put there by hand: not verified yet
    calls = count_hashing(monkeypatch)
    assert models.model_path("test_model", download=False) == cached
    assert models.model_path("test_model", download=False) == cached
    assert len(calls) == 1
    later = time.time() + 10
    os.utime(cached, (later, later))  # a changed file must be checked again
    models.model_path("test_model", download=False)
    assert len(calls) == 2


def test_a_downloaded_file_is_never_hashed_again(add_model, monkeypatch):
    add_model("good.pt")
    models.download("test_model")
    calls = count_hashing(monkeypatch)
    models.model_path("test_model")
    models.download("test_model")
    assert calls == []


def test_corrupt_cached_file_is_reported_and_force_replaces_it(add_model, isolated_cache):
    add_model("good.pt")
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "test_model.pt").write_bytes(PAYLOAD[:1000])
    with pytest.raises(CheckpointError, match="--force"):
        models.model_path("test_model")
    assert models.download("test_model", force=True).read_bytes() == PAYLOAD
    assert models.model_path("test_model", download=False).read_bytes() == PAYLOAD


def test_model_without_known_hash_downloads_and_is_not_hashed_again(add_model, monkeypatch):
    add_model("good.pt", sha256=None)
    models.download("test_model")
    calls = count_hashing(monkeypatch)
    assert models.model_path("test_model").read_bytes() == PAYLOAD
    assert calls == []


def test_existing_file_path_is_returned_as_is(tmp_path):
    file = tmp_path / "my checkpoint.pt"
    file.write_bytes(b"x")
    assert models.model_path(str(file)) == file
    assert models.model_path(file) == file


def test_missing_path_and_unknown_name_are_reported(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        models.model_path(str(tmp_path / "nope.pt"))
    with pytest.raises(InputError, match="Unknown model"):
        models.model_path("nope")


# ---------------------------------------------------------------- registered local files


def test_registered_local_file_is_used_by_name(tmp_path, isolated_cache):
    file = tmp_path / "finetuned.pt"
    file.write_bytes(b"weights")
    assert models.register_local("my-model", file) == file.resolve()
    assert models.local_models() == {"my-model": file.resolve()}
    assert (isolated_cache / "local_models.json").is_file()
    assert models.model_path("my-model") == file.resolve()
    assert models.model_path("MY-MODEL", download=False) == file.resolve()


def test_register_checks_the_file_and_the_name(tmp_path):
    file = tmp_path / "a.pt"
    file.write_bytes(b"w")
    with pytest.raises(CheckpointError, match="not an existing file"):
        models.register_local("mine", tmp_path / "missing.pt")
    with pytest.raises(InputError, match="official"):
        models.register_local("tiny", file)
    with pytest.raises(InputError, match="Invalid model name"):
        models.register_local("my model", file)
    assert models.local_models() == {}


def test_registered_file_that_disappeared_is_reported(tmp_path):
    file = tmp_path / "a.pt"
    file.write_bytes(b"w")
    models.register_local("mine", file)
    file.unlink()
    with pytest.raises(CheckpointError, match="models register mine"):
        models.model_path("mine")


# ---------------------------------------------------------------- concurrent downloads


def test_download_in_progress_elsewhere_is_left_alone(add_model, isolated_cache):
    add_model("good.pt")
    isolated_cache.mkdir(parents=True)
    part = isolated_cache / "test_model.pt.part"
    lock = isolated_cache / "test_model.pt.part.lock"
    part.write_bytes(b"another process is writing this")
    lock.write_text("12345")
    assert models.download("test_model").read_bytes() == PAYLOAD
    assert part.read_bytes() == b"another process is writing this"
    assert leftovers(isolated_cache) == ["test_model.pt.part", "test_model.pt.part.lock"]


def test_stale_lock_of_a_dead_download_is_taken_over(add_model, server, isolated_cache):
    add_model("good.pt")
    isolated_cache.mkdir(parents=True)
    part = isolated_cache / "test_model.pt.part"
    lock = isolated_cache / "test_model.pt.part.lock"
    part.write_bytes(PAYLOAD[:500_000])
    lock.write_text("12345")
    old = time.time() - 3600
    for path in (part, lock):
        os.utime(path, (old, old))
    assert models.download("test_model").read_bytes() == PAYLOAD
    assert server.ranges("good.pt") == ["bytes=500000-"]
    assert leftovers(isolated_cache) == []


def test_two_simultaneous_downloads_both_succeed(add_model, isolated_cache):
    add_model("good.pt")
    results, errors = [], []

    def run():
        try:
            results.append(models.download("test_model"))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert results == [isolated_cache / "test_model.pt"] * 2
    assert results[0].read_bytes() == PAYLOAD
    assert leftovers(isolated_cache) == []


# ---------------------------------------------------------------- progress bar


def test_text_progress_bar_plain_stream_prints_lines():
    stream = io.StringIO()
    bar = models.TextProgressBar("tiny", stream=stream)
    for done in range(0, 101, 5):
        bar(done * 1_000_000, 100_000_000)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[-1].startswith("tiny  [") and lines[-1].endswith("100.0/100.0 MB 100%")


def test_text_progress_bar_on_a_terminal_redraws_one_line():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = models.TextProgressBar("tiny", stream=stream)
    bar(0, 2_000_000)
    bar(2_000_000, 2_000_000)
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("100%\n")
    assert text.count("\n") == 1
