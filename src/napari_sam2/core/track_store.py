"""The process-wide track cache (engine.track_cache) that every tracking session shares: a pass made once is
replayed by any session with the same prompts on the same frames, e.g. a second run, the same stack opened again
(also after a restart), or the unchanged objects when one is added.

In host memory: NAPARI_SAM2_TRACK_CACHE_MB (default 1024 MiB, about 1400 object-frames at 1024 px; 0 keeps none and
turns the cache off). On disk, written behind the tracking in a thread of its own: NAPARI_SAM2_TRACKS, else
``<checkpoint cache>/tracks``, at most NAPARI_SAM2_TRACKS_MAX_GB (default 4 GiB, about 5500 object-frames at 1024 px;
0 keeps nothing on disk), the least recently used passes removed beyond it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..engine.track_cache import DEFAULT_MAX_BYTES, TrackCache
from .tensor_store import ZarrTensorStore, cache_folder, placement, size_limit

DEFAULT_DISK_BYTES = 4 << 30

_shared: TrackCache | None = None
_lock = threading.Lock()


def track_cache_dir() -> Path:
    """The folder of the on-disk track cache (not created here): NAPARI_SAM2_TRACKS, else ``tracks`` in the
    checkpoint cache (NAPARI_SAM2_CACHE)."""
    return cache_folder("NAPARI_SAM2_TRACKS", "tracks")


def track_store() -> ZarrTensorStore | None:
    """The on-disk track store as the environment sets it, or None where NAPARI_SAM2_TRACKS_MAX_GB is 0."""
    bound = size_limit("NAPARI_SAM2_TRACKS_MAX_GB", DEFAULT_DISK_BYTES, "GiB")
    return ZarrTensorStore(track_cache_dir(), bound, setting="NAPARI_SAM2_TRACKS", background=True) if bound else None


def shared_track_cache() -> TrackCache:
    """The process-wide track cache: NAPARI_SAM2_TRACK_CACHE_MB MiB in memory (read when it is first made) over the
    disk store (`track_store`, followed when the environment changes)."""
    global _shared
    with _lock:
        store = track_store()
        if _shared is None:
            _shared = TrackCache(size_limit("NAPARI_SAM2_TRACK_CACHE_MB", DEFAULT_MAX_BYTES), store)
        elif placement(store) != placement(_shared.store):
            _shared.store = store
        return _shared
