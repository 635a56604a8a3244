"""The on-disk tier of the caches (core.tensor_store.ZarrTensorStore): entries come back bit for bit, writes are
atomic, failures say what to do, and the folder stays within its bound, the least recently used entries removed."""

import os
import time
import warnings

import pytest
import torch

from napari_sam2 import InputError
from napari_sam2.core.tensor_store import ZarrTensorStore


def entry(*shapes, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g).to(dtype) for shape in shapes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64])
def test_the_store_gives_back_the_same_bits_dtype_and_memory_layout(tmp_path, dtype):
    vision, high0, high1 = entry((1, 8, 4, 4), (1, 2, 16, 16), (1, 4, 8, 8), dtype=dtype)
    vision = vision.contiguous(memory_format=torch.channels_last)  # as Hiera's FPN makes them
    high1 = high1.contiguous(memory_format=torch.channels_last)
    store = ZarrTensorStore(tmp_path / "f")
    store.put("key", (vision, high0, high1))
    back = store.get("key")
    for original, read in zip((vision, high0, high1), back):
        assert read.dtype == original.dtype and read.shape == original.shape
        assert read.stride() == original.stride()
        bits = torch.int16 if dtype in (torch.bfloat16, torch.float16) else dtype  # NaN-proof, bit for bit
        assert torch.equal(read.view(bits), original.view(bits))


def test_an_unfinished_or_damaged_entry_is_a_miss(tmp_path):
    store = ZarrTensorStore(tmp_path)
    store.put("good", entry((2, 2)))
    (tmp_path / ".tmp-half-written-abc").mkdir()  # an interrupted write leaves only a temporary folder
    assert store.keys() == ["good"]
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text("{not json")
    assert "bad" in store and store.get("bad") is None
    store.put("good", entry((2, 2), seed=1))  # an existing entry is never rewritten
    assert torch.equal(store.get("good")[0], entry((2, 2))[0])
    with pytest.raises(ValueError):
        store.get("../escape")


def test_what_a_killed_write_left_is_removed_once_stale(tmp_path):
    store = ZarrTensorStore(tmp_path)
    store.put("first", entry((2, 2)))
    stale, fresh = tmp_path / ".tmp-old-1", tmp_path / ".tmp-new-2"  # a killed write, and one in progress elsewhere
    stale.mkdir()
    fresh.mkdir()
    old = os.stat(stale).st_mtime - 2 * 3600
    os.utime(stale, (old, old))
    ZarrTensorStore(tmp_path).put("second", entry((2, 2)))
    assert not stale.exists() and fresh.exists()
    assert ZarrTensorStore(tmp_path).keys() == ["first", "second"]


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import zarr

    store = ZarrTensorStore(tmp_path)
    store.put("first", entry((2, 2)))

    def broken(*args, **kwargs):
        raise RuntimeError("zarr failed")

    monkeypatch.setattr(zarr, "open_group", broken)
    with pytest.raises(RuntimeError):
        store.put("second", entry((2, 2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.zarr"]


def test_a_store_in_an_unwritable_place_says_what_to_do(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(InputError, match="NAPARI_SAM2_FEATURES"):
        ZarrTensorStore(blocked / "features", setting="NAPARI_SAM2_FEATURES").put("k", entry((2, 2)))




# ---- the bound -------------------------------------------------------------------------------------------------------


def _age(store, key, seconds_ago):
    """Make an entry look last used `seconds_ago` (mtimes, not sleeps: filesystems round them to a second or two)."""
    when = time.time() - seconds_ago
    os.utime(store.folder / f"{key}.zarr" / "zarr.json", (when, when))


def test_the_store_stays_within_its_bound_removing_the_least_recently_used(tmp_path):
    one = entry((64, 64), seed=1)  # 16 KiB of incompressible floats
    probe = ZarrTensorStore(tmp_path / "probe")
    probe.put("x", one)
    size = probe.disk_bytes()
    store = ZarrTensorStore(tmp_path / "s", max_bytes=int(3.5 * size))
    for i, key in enumerate("abc"):
        store.put(key, entry((64, 64), seed=i))
        _age(store, key, 100 - i)  # a oldest, then b, then c
    assert store.keys() == ["a", "b", "c"] and store.disk_bytes() <= store.max_bytes
    assert store.get("a") is not None  # reading a makes it the most recently used
    store.put("d", entry((64, 64), seed=3))
    assert store.keys() == ["a", "c", "d"] and store.evicted == 1  # b, the least recently used, went
    assert store.disk_bytes() <= store.max_bytes
    assert torch.equal(store.get("a")[0], entry((64, 64), seed=0)[0])  # what stays is intact
    assert not list(store.folder.glob(".tmp-*"))  # nothing half-removed is left


def test_the_bound_counts_what_other_processes_wrote(tmp_path, monkeypatch):
    from napari_sam2.core import tensor_store

    one = entry((64, 64), seed=1)
    mine, other = ZarrTensorStore(tmp_path, max_bytes=10 << 20), ZarrTensorStore(tmp_path)
    mine.put("mine", one)  # counted the folder once
    _age(mine, "mine", 100)
    size = mine.disk_bytes()
    for key in "wxyz":
        other.put(key, entry((64, 64), seed=ord(key)))
    mine.max_bytes = int(4.5 * size)  # now over the bound, with entries this store never wrote
    monkeypatch.setattr(tensor_store, "RECOUNT_S", 0.0)  # its count is old: it counts the folder again
    mine.put("new", one)
    assert "mine" not in mine and "new" in mine and len(mine.keys()) == 4


def test_an_entry_larger_than_the_bound_is_not_written(tmp_path):
    store = ZarrTensorStore(tmp_path, max_bytes=1000)
    store.put("big", entry((64, 64)))
    assert "big" not in store and store.keys() == []
    nothing = ZarrTensorStore(tmp_path / "zero", max_bytes=0)
    nothing.put("k", entry((1,)))
    assert nothing.keys() == []


# ---- writing behind --------------------------------------------------------------------------------------------------


def test_a_background_store_writes_in_its_own_thread_and_flush_waits(tmp_path, monkeypatch):
    import threading

    store = ZarrTensorStore(tmp_path, background=True)
    writers = []
    real = store._write
    monkeypatch.setattr(store, "_write", lambda *a: (writers.append(threading.current_thread()), real(*a))[1])
    store.put("k", entry((8, 8)))
    store.flush()
    assert writers and writers[0] is not threading.current_thread()
    assert torch.equal(store.get("k")[0], entry((8, 8))[0])


def test_a_failed_background_write_warns_once_and_raises_nothing(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    store = ZarrTensorStore(blocked / "tracks", background=True, setting="NAPARI_SAM2_TRACKS")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store.put("a", entry((2, 2)))
        store.put("b", entry((2, 2)))
        store.flush()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "NAPARI_SAM2_TRACKS" in messages[0]
    assert store.keys() == []
