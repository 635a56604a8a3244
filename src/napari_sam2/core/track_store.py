"""The process-wide track cache (engine.track_cache) that every tracking session shares: a pass made once is
replayed by any session with the same prompts on the same frames, e.g. a second run, the same stack opened again,
or the unchanged objects when one is added.

It lives in host memory only: NAPARI_SAM2_TRACK_CACHE_MB (default 1024 MiB, about 1400 object-frames at 1024 px;
0 keeps none).
"""

from __future__ import annotations

import threading

from ..engine.track_cache import DEFAULT_MAX_BYTES, TrackCache
from .feature_store import memory_limit

_shared: TrackCache | None = None
_lock = threading.Lock()


def shared_track_cache() -> TrackCache:
    """The process-wide track cache, of NAPARI_SAM2_TRACK_CACHE_MB MiB (read when it is first made)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = TrackCache(memory_limit("NAPARI_SAM2_TRACK_CACHE_MB", DEFAULT_MAX_BYTES))
        return _shared
