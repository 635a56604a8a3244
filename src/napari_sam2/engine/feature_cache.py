"""Image features kept across clicks, passes, objects, sessions and (with a disk store) restarts.

The image encoder is the costliest step of a tracked frame (3.6 s of 7.5 s for sam2.1_hiera_t at 1024 px on two CPU
cores), and its output depends only on the model, the way it computes (device type and autocast dtype) and the
frame's model input. So features are kept under a key made of exactly those (`feature_key`): the model's
`Sam2Model.signature` (a hash of its configuration and weights), the precision and a 128-bit hash of the normalised
input tensor (which covers the data, the channels, the intensity range and the preprocessing). Whoever computes the
same frame again, in the same stack or in another, in this process or after a restart, gets the same tensors back,
and therefore the same masks, bit for bit.

A frame's entry holds the stride-16 features and the two high-resolution levels (16 MiB in float32 for a 1024-px
model, whatever the variant); their position encoding is the same for every frame and is recomputed from the model
(`Sam2Model.features_from`). Entries are kept in the dtype they were computed in (float32 on CPU and MPS), in their
memory layout (channels-last where the encoder made them so), in host memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Optional, Protocol

import torch
import xxhash

from .devices import autocast, autocast_dtype
from .host_memory import outside_heap

DEFAULT_MAX_BYTES = 2 << 30  # 128 frames of a 1024-px model


class FeatureStore(Protocol):
    """A second, slower tier behind the in-memory cache (e.g. `napari_sam2.core.feature_store.ZarrFeatureStore`)."""

    def __contains__(self, key: str) -> bool: ...

    def get(self, key: str) -> Optional[tuple]: ...

    def put(self, key: str, tensors: tuple) -> None: ...


def feature_key(model, image: torch.Tensor) -> str:
    """The cache key of `model`'s features of `image` ((3, S, S) float32 model input): model signature, precision
    (e.g. "cpu-float32", "cuda-bfloat16") and the xxh3-128 hash of the input's values, shape and dtype."""
    dtype = autocast_dtype(model.device) or torch.float32
    data = image.detach().to("cpu", torch.float32).contiguous()
    digest = xxhash.xxh3_128(data.numpy().tobytes())
    digest.update(repr(tuple(data.shape)).encode())
    return f"{model.signature}-{model.device.type}-{str(dtype).removeprefix('torch.')}-{digest.hexdigest()}"


class FeatureCache:
    """A thread-safe LRU of frame features bounded by `max_bytes` of host memory (0 keeps nothing in memory), over
    an optional `store` (a FeatureStore) that is read when memory misses and, with `write_store`, written with every
    newly computed frame.

    Entries are tuples of CPU tensors (vision, high_res_0, high_res_1): `Sam2Model.cacheable` / `features_from`
    convert from and to FrameFeatures.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, store: Optional[FeatureStore] = None,
                 write_store: bool = False):
        self.max_bytes = max(0, int(max_bytes))
        self.store = store
        self.write_store = write_store
        self._entries: "OrderedDict[str, tuple]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.store_hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        """Host memory the in-memory entries take, in bytes."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            if key in self._entries:
                return True
        return self.store is not None and key in self.store

    def get(self, key: str) -> Optional[tuple]:
        """The entry under `key` (from memory, else from the store, then kept in memory), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry
        entry = None if self.store is None else self.store.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.store_hits += 1
        self._remember(key, entry)
        return entry

    def put(self, key: str, entry: tuple, *, to_store: Optional[bool] = None) -> None:
        """Keep a newly computed entry; into the store too when `to_store` (default: `write_store`) and it has no
        such entry yet."""
        entry = tuple(t.detach() if t.device.type == "cpu" else outside_heap(t.detach().cpu()) for t in entry)
        self._remember(key, entry)
        if (self.write_store if to_store is None else to_store) and self.store is not None and key not in self.store:
            self.store.put(key, entry)

    def clear(self) -> None:
        """Forget the in-memory entries (the store stays)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _remember(self, key: str, entry: tuple) -> None:
        size = sum(t.numel() * t.element_size() for t in entry)
        with self._lock:
            if key in self._entries or size > self.max_bytes:
                return
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= sum(t.numel() * t.element_size() for t in old)


@torch.no_grad()
def encode_image(model, image: torch.Tensor, cache: Optional[FeatureCache] = None, key: Optional[str] = None,
                 to_store: Optional[bool] = None):
    """`model`'s FrameFeatures (batch of 1) of one model input `image` (3, S, S): from `cache` when it holds them
    (under `key`, default `feature_key(model, image)`), else from the image encoder (under the device's autocast),
    then kept in `cache` (and in its store with `to_store`, default the cache's `write_store`)."""
    if cache is not None:
        key = feature_key(model, image) if key is None else key
        entry = cache.get(key)
        if entry is not None:
            return model.features_from(entry)
    with autocast(model.device):
        # non_blocking: a frame in page-locked memory (StackFrames(pin_memory=True)) uploads while the GPU works
        features = model.encode_image(image.to(model.device, torch.float32, non_blocking=True)[None]).map(outside_heap)
    if cache is not None:
        cache.put(key, model.cacheable(features), to_store=to_store)
    return features
