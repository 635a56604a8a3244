"""Tensor-cache entries on disk (the slower tier of engine.tensor_cache.TensorCache): one zarr group per key.

An entry (a tuple of CPU tensors) is stored as it is: same dtype (bfloat16 as its 16-bit patterns, which zarr lacks),
same memory layout (channels-last arrays are stored in their physical order, with the axis order in the array's
attributes), so an entry read back gives the same results, bit for bit. A group is written under a temporary name
and renamed when complete: an interrupted write leaves no entry and concurrent writers of the same key never mix.

The folder is bounded: once its entries take more than `max_bytes`, the least recently used ones (by the time they
were last written or read, kept as the mtime of their zarr.json) are removed until they fit again. A store counts
the folder again at least every RECOUNT_S seconds of writing, so what other processes write there is counted too:
the bound holds to within what they write in between.
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
import time
import uuid
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..engine.tensor_cache import nbytes
from ..errors import InputError
from ..models.registry import cache_dir

STALE_WRITE_S = 3600  # a temporary folder this old is a write that was killed
RECOUNT_S = 60.0  # how long a store trusts its count of the folder: other processes may write there too
_STORED_AS = {torch.bfloat16: torch.int16}  # numpy / zarr have no bfloat16
_DTYPES = {str(dtype).removeprefix("torch."): dtype
           for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32)}


class ZarrTensorStore:
    """Entries (tuples of CPU tensors) as zarr groups under `folder`, one per key, at most `max_bytes` of them on
    disk (None: no bound; an entry larger than the bound is not written).

    `setting`: the environment variable that moves the folder, named in the error a failed write raises.
    `background`: writes happen in a thread of the store's own (`flush` waits for them) and a failed one is skipped
    with a warning: for a cache whose entries are a convenience, never worth stopping the work that made them."""

    def __init__(self, folder: str | os.PathLike, max_bytes: int | None = None, *,
                 setting: str = "NAPARI_SAM2_CACHE", background: bool = False):
        self.folder = Path(folder)
        self.max_bytes = None if max_bytes is None else max(0, int(max_bytes))
        self.setting = setting
        self.evicted = 0  # entries this store removed to stay within max_bytes
        self._swept = False
        self._bytes: int | None = None  # the folder's entries, as last counted plus what this store wrote since
        self._counted_at = 0.0  # time.monotonic() of that count
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="napari-sam2-store") if background else None
        self._pending: list = []
        self._warned = False
        self._exit_hook = False  # registered at the first background write: making a store has no side effect

    def _path(self, key: str) -> Path:
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"not a cache key: {key!r}")
        return self.folder / f"{key}.zarr"

    def __contains__(self, key: str) -> bool:
        return (self._path(key) / "zarr.json").is_file()

    def keys(self) -> list[str]:
        """The keys of the complete entries."""
        if not self.folder.is_dir():
            return []
        return sorted(p.name[: -len(".zarr")] for p in self.folder.glob("*.zarr") if (p / "zarr.json").is_file())

    def is_empty(self) -> bool:
        """Whether the folder holds no entry (cheap: stops at the first one)."""
        return not self.folder.is_dir() or next(self.folder.glob("*.zarr"), None) is None

    def disk_bytes(self) -> int:
        """Bytes the complete entries take on disk (counted now)."""
        return sum(size for _, size, _ in self._entries())

    def get(self, key: str):
        """The entry under `key`, or None (also for an entry that cannot be read: it is computed again). Marks the
        entry as used now."""
        import zarr

        path = self._path(key)
        marker = path / "zarr.json"
        if not marker.is_file():
            return None
        try:
            group = zarr.open_group(store=str(path), mode="r")
            entry = tuple(_tensor(group[str(i)]) for i in range(int(group.attrs["n"])))
        except Exception:  # noqa: BLE001 - a damaged (or just evicted) entry is a miss, never a failure
            return None
        try:
            os.utime(marker)  # recently used: evicted last
        except OSError:  # a read-only cache still serves
            pass
        return entry

    def put(self, key: str, entry) -> None:
        """Write an entry (atomically: under a temporary name, then renamed), then remove the least recently used
        ones beyond `max_bytes`; nothing happens if the key exists or the entry alone exceeds the bound."""
        if self.max_bytes is not None and nbytes(entry) > self.max_bytes:
            return
        if self._writer is None:
            self._write(key, entry)
            return
        with self._lock:
            if not self._exit_hook:
                self._exit_hook = True
                _finish_at_exit(self)
            self._pending = [f for f in self._pending if not f.done()]
            try:
                self._pending.append(self._writer.submit(self._write_quietly, key, entry))
            except RuntimeError:  # the interpreter is exiting: the entry is not kept, the work stands
                pass

    def flush(self) -> None:
        """Wait for the background writes submitted so far."""
        with self._lock:
            pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def clear(self) -> None:
        """Delete every entry."""
        self.flush()
        shutil.rmtree(self.folder, ignore_errors=True)
        with self._lock:
            self._bytes = None

    # ---- writing and evicting ---------------------------------------------------------------------------------------
    def _write_quietly(self, key: str, entry) -> None:
        try:
            self._write(key, entry)
        except Exception as exc:  # noqa: BLE001 - see `background`
            if not self._warned:
                self._warned = True
                warnings.warn(f"Not kept on disk (the work itself is done): {exc}", RuntimeWarning, stacklevel=1)

    def _write(self, key: str, entry) -> None:
        import zarr

        path = self._path(key)
        if path.exists():
            return
        tmp = self.folder / f".tmp-{key}-{uuid.uuid4().hex}"
        try:
            if not self.folder.is_dir():
                self.folder.mkdir(parents=True, exist_ok=True)
            elif not self._swept:
                self._sweep()
            group = zarr.open_group(store=str(tmp), mode="w")
            for i, tensor in enumerate(entry):
                array, order = _physical(tensor)
                stored = group.create_array(str(i), shape=array.shape, dtype=array.dtype, chunks=array.shape)
                stored[...] = array
                stored.attrs.update(order=order, dtype=str(tensor.dtype).removeprefix("torch."))
            group.attrs["n"] = len(entry)
            size = _du(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if path.exists():  # another process wrote the same key first
                return
            raise InputError(
                f"Cannot write to {self.folder}: {exc}. Free disk space, or set {self.setting} to another folder."
            ) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if self.max_bytes is not None:
            self._bound(size, keep=path)

    def _bound(self, written: int, keep: Path) -> None:
        """Count the new entry; past the bound (or with an old count) count the folder again, and remove the least
        recently used entries while it is past the bound."""
        with self._lock:
            if self._bytes is not None and time.monotonic() - self._counted_at < RECOUNT_S:
                self._bytes += written
                if self._bytes <= self.max_bytes:
                    return
            entries = sorted(self._entries())  # oldest use first
            self._bytes = sum(size for _, size, _ in entries)
            self._counted_at = time.monotonic()
            for _, size, path in entries:
                if self._bytes <= self.max_bytes:
                    break
                if path == keep:
                    continue
                doomed = self.folder / f".tmp-evicted-{uuid.uuid4().hex}"
                try:
                    os.replace(path, doomed)  # gone at once for readers: a miss, never half an entry
                except OSError:
                    continue  # another process removed it first
                shutil.rmtree(doomed, ignore_errors=True)
                self._bytes -= size
                self.evicted += 1

    def _entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes on disk, folder) of every complete entry."""
        out = []
        if not self.folder.is_dir():
            return out
        for path in self.folder.glob("*.zarr"):
            try:
                used = (path / "zarr.json").stat().st_mtime
            except OSError:  # incomplete, or removed meanwhile
                continue
            out.append((used, _du(path), path))
        return out

    def _sweep(self) -> None:
        """Remove what writes killed midway left (temporary folders over an hour old), once per store."""
        self._swept = True
        cutoff = time.time() - STALE_WRITE_S
        for leftover in self.folder.glob(".tmp-*"):
            try:
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)
            except OSError:
                pass


def _finish_at_exit(store: ZarrTensorStore) -> None:
    """Have the store's pending writes finish when the interpreter exits, before the thread pools close: zarr's
    writes go through them. threading's exit hooks run before both atexit's and, being later, before
    concurrent.futures' own (they run in reverse order); atexit where that (private, CPython >= 3.9) hook is missing."""
    register = getattr(threading, "_register_atexit", None)
    flush = weakref.WeakMethod(store.flush)

    def finish():
        method = flush()
        if method is not None:
            try:
                method()
            except Exception:  # noqa: BLE001 - nothing to tell anyone at exit; the work itself is done
                pass

    try:
        (register or atexit.register)(finish)
    except RuntimeError:  # already exiting
        pass


def cache_folder(variable: str, name: str) -> Path:
    """A disk cache's folder (not created here): the environment variable `variable`, else `name` in the checkpoint
    cache (NAPARI_SAM2_CACHE)."""
    override = os.environ.get(variable, "").strip()
    return Path(override).expanduser() if override else cache_dir() / name


def placement(store: "ZarrTensorStore | None"):
    """Where and how large a store is, (folder, max_bytes), or None for no store: a process-wide cache compares it to
    follow the environment."""
    return None if store is None else (store.folder, store.max_bytes)


_UNITS = {"MiB": 1 << 20, "GiB": 1 << 30}


def size_limit(variable: str, default: int, unit: str = "MiB") -> int:
    """A cache's bound in bytes: the environment variable `variable` in `unit` ("MiB" or "GiB"), else `default`
    bytes; InputError for anything but a number >= 0."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        amount = float(text)
    except ValueError:
        raise InputError(f"{variable} must be a number of {unit}, got {text!r}.") from None
    if amount < 0:
        raise InputError(f"{variable} must be 0 or more, got {text!r}.")
    return int(amount * _UNITS[unit])


def _du(path: Path) -> int:
    """Bytes the files under `path` take."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _physical(tensor: torch.Tensor) -> tuple[np.ndarray, list[int]]:
    """The tensor's values in memory order (axes sorted by stride), and that axis order."""
    order = sorted(range(tensor.dim()), key=lambda d: -tensor.stride(d))
    data = tensor.detach().cpu().permute(order).contiguous()
    return data.view(_STORED_AS.get(data.dtype, data.dtype)).numpy(), order


def _tensor(array) -> torch.Tensor:
    dtype = _DTYPES[array.attrs["dtype"]]
    order = list(array.attrs["order"])
    data = torch.from_numpy(np.ascontiguousarray(array[...])).view(dtype)
    return data.permute([order.index(d) for d in range(len(order))])
