"""Image features on disk (zarr), and the process-wide feature cache every session and segmenter shares.

On disk: one zarr group per frame and model (core.tensor_store.ZarrTensorStore), named by its feature key
(engine.feature_cache.feature_key: model signature, precision, hash of the model input), holding the three feature
arrays as the encoder made them, so a frame read back gives the same masks, bit for bit. Writes are atomic: a
precomputation that was interrupted resumes where it stopped.

Where: NAPARI_SAM2_FEATURES, else ``<checkpoint cache>/features`` (NAPARI_SAM2_CACHE moves the checkpoint cache),
about 16 MiB per frame of a 1024-px model, whatever the variant. At most NAPARI_SAM2_FEATURES_MAX_GB (default 20 GiB,
about 1300 frames at 1024 px): beyond it the least recently used frames are removed.
In-memory part: NAPARI_SAM2_FEATURE_CACHE_MB (default 2048 = 128 frames at 1024 px; 0 keeps none).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

from ..engine.feature_cache import DEFAULT_MAX_BYTES, FeatureCache, encode_image, feature_key
from ..engine.tensor_cache import nbytes
from ..errors import InputError
from .tensor_store import ZarrTensorStore, cache_folder, placement, size_limit

DEFAULT_DISK_BYTES = 20 << 30


def feature_cache_dir() -> Path:
    """The folder of the on-disk feature cache (not created here): NAPARI_SAM2_FEATURES, else ``features`` in the
    checkpoint cache (NAPARI_SAM2_CACHE)."""
    return cache_folder("NAPARI_SAM2_FEATURES", "features")


def feature_store() -> ZarrTensorStore:
    """The on-disk feature store as the environment sets it: its folder (`feature_cache_dir`) and bound
    (NAPARI_SAM2_FEATURES_MAX_GB)."""
    return ZarrTensorStore(feature_cache_dir(), size_limit("NAPARI_SAM2_FEATURES_MAX_GB", DEFAULT_DISK_BYTES, "GiB"),
                           setting="NAPARI_SAM2_FEATURES")


_shared: FeatureCache | None = None
_shared_lock = threading.Lock()


def shared_feature_cache() -> FeatureCache:
    """The process-wide feature cache: an LRU of NAPARI_SAM2_FEATURE_CACHE_MB MiB (default 2048) in host memory over
    the on-disk store, which is read whenever it has a frame and written only by precomputation
    (`precompute_features`) or where a caller turns `write_store` on."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = FeatureCache(size_limit("NAPARI_SAM2_FEATURE_CACHE_MB", DEFAULT_MAX_BYTES), feature_store())
        else:
            store = feature_store()
            if placement(store) != placement(_shared.store):  # the environment changed
                _shared.store = store
        return _shared


def precompute_features(model, frames, cache: FeatureCache | None = None) -> Iterator[tuple[int, str]]:
    """Compute and store on disk the features of every frame of `frames` (a StackFrames for `model`) that the
    cache's store lacks; yields (frame index, feature key) once the frame is stored (or found there), in order. Stop
    iterating to stop: what was stored stays, and the next call resumes.

    InputError, before anything is written, when the stack's features cannot all fit within the store's bound."""
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
            _check_fits(cache.store, len(frames), nbytes(entry))
            cache.put(key, entry, to_store=True)
        yield index, key


def _check_fits(store, n_frames: int, frame_bytes: int) -> None:
    bound = getattr(store, "max_bytes", None)
    if bound is not None and n_frames * frame_bytes > bound:
        raise InputError(
            f"The image features of these {n_frames} frames take {n_frames * frame_bytes / 2**30:.1f} GiB, more than "
            f"the disk feature cache may hold ({bound / 2**30:.1f} GiB): set NAPARI_SAM2_FEATURES_MAX_GB higher, or "
            "precompute fewer frames (use fast mode: a quarter of the size).")
