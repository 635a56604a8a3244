"""Image features on disk (zarr), and the process-wide feature cache every session and segmenter shares.

One zarr group per frame and model, named by its feature key (engine.feature_cache.feature_key: model signature,
precision, hash of the model input), holding the three feature arrays as the encoder made them: same dtype
(bfloat16 as its 16-bit patterns, which zarr lacks), same memory layout (channels-last arrays are stored in their
physical order, with the axis order in the array's attributes), so a frame read back gives the same masks, bit for
bit. A group is written under a temporary name and renamed when complete: an interrupted write leaves no entry (a
precomputation resumes where it stopped) and concurrent writers of the same frame never mix.

Where: NAPARI_SAM2_FEATURES, else ``<checkpoint cache>/features`` (NAPARI_SAM2_CACHE moves the checkpoint cache),
about 16 MiB per frame of a 1024-px model, whatever the variant; delete the folder to reclaim the space.
In-memory part: NAPARI_SAM2_FEATURE_CACHE_MB (default 2048 = 128 frames at 1024 px; 0 keeps none).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..engine.feature_cache import DEFAULT_MAX_BYTES, FeatureCache, encode_image, feature_key
from ..errors import InputError
from ..models.registry import cache_dir

STALE_WRITE_S = 3600  # a temporary folder this old is a write that was killed
_STORED_AS = {torch.bfloat16: torch.int16}  # numpy / zarr have no bfloat16
_DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in (torch.float32, torch.float16, torch.bfloat16)}


def feature_cache_dir() -> Path:
    """The folder of the on-disk feature cache (not created here): NAPARI_SAM2_FEATURES, else ``features`` in the
    checkpoint cache (NAPARI_SAM2_CACHE)."""
    override = os.environ.get("NAPARI_SAM2_FEATURES", "").strip()
    return Path(override).expanduser() if override else cache_dir() / "features"


class ZarrFeatureStore:
    """Feature-cache entries (tuples of CPU tensors) as zarr groups under `folder`, one per key."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._swept = False

    def _path(self, key: str) -> Path:
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"not a feature key: {key!r}")
        return self.folder / f"{key}.zarr"

    def __contains__(self, key: str) -> bool:
        return (self._path(key) / "zarr.json").is_file()

    def keys(self) -> list[str]:
        """The keys of the complete entries."""
        if not self.folder.is_dir():
            return []
        return sorted(p.name[: -len(".zarr")] for p in self.folder.glob("*.zarr") if (p / "zarr.json").is_file())

    def get(self, key: str):
        """The entry under `key`, or None (also for an entry that cannot be read: it is computed again)."""
        import zarr

        path = self._path(key)
        if not (path / "zarr.json").is_file():
            return None
        try:
            group = zarr.open_group(store=str(path), mode="r")
            return tuple(_tensor(group[str(i)]) for i in range(int(group.attrs["n"])))
        except Exception:  # noqa: BLE001 - a damaged entry is a miss, never a failure
            return None

    def put(self, key: str, entry) -> None:
        """Write an entry (atomically: under a temporary name, then renamed); nothing happens if it exists."""
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
            os.replace(tmp, path)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if path.exists():  # another process wrote the same frame first
                return
            raise InputError(
                f"Cannot write image features to {self.folder}: {exc}. Free disk space, or set NAPARI_SAM2_FEATURES "
                "(or NAPARI_SAM2_CACHE) to another folder."
            ) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

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

    def clear(self) -> None:
        """Delete every entry."""
        shutil.rmtree(self.folder, ignore_errors=True)


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


_shared: FeatureCache | None = None
_shared_lock = threading.Lock()


def shared_feature_cache() -> FeatureCache:
    """The process-wide feature cache: an LRU of NAPARI_SAM2_FEATURE_CACHE_MB MiB (default 2048) in host memory over
    the on-disk store, which is read whenever it has a frame and written only by precomputation
    (`precompute_features`) or where a caller turns `write_store` on."""
    global _shared
    with _shared_lock:
        if _shared is None:
            limit = memory_limit("NAPARI_SAM2_FEATURE_CACHE_MB", DEFAULT_MAX_BYTES)
            _shared = FeatureCache(limit, ZarrFeatureStore(feature_cache_dir()))
        elif _shared.store.folder != feature_cache_dir():  # NAPARI_SAM2_CACHE changed
            _shared.store = ZarrFeatureStore(feature_cache_dir())
        return _shared


def precompute_features(model, frames, cache: FeatureCache | None = None) -> Iterator[tuple[int, str]]:
    """Compute and store on disk the features of every frame of `frames` (a StackFrames for `model`) that the
    cache's store lacks; yields (frame index, feature key) once the frame is stored (or found there), in order. Stop
    iterating to stop: what was stored stays, and the next call resumes."""
    cache = shared_feature_cache() if cache is None else cache
    if cache.store is None:
        raise InputError("This feature cache has no disk store to precompute into.")
    for index in range(len(frames)):
        image = frames[index]
        key = feature_key(model, image)
        if key not in cache.store:
            entry = cache.get(key)  # in memory already (a session computed it)?
            if entry is None:
                entry = model.cacheable(encode_image(model, image))
            cache.put(key, entry, to_store=True)
        yield index, key


def memory_limit(variable: str, default: int) -> int:
    """A cache's in-memory bound in bytes: the environment variable `variable` in MiB, else `default` bytes;
    InputError for anything but a number >= 0."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        mib = float(text)
    except ValueError:
        raise InputError(f"{variable} must be a number of MiB, got {text!r}.") from None
    if mib < 0:
        raise InputError(f"{variable} must be 0 or more, got {text!r}.")
    return int(mib * (1 << 20))
