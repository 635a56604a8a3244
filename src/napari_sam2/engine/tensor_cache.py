"""A bounded in-memory LRU of tensors under string keys, over an optional slower store: what the feature cache
(image features per frame) and the track cache (an object's outputs per propagation pass) are made of."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Optional, Protocol

from .host_memory import outside_heap


def nbytes(tensors) -> int:
    """The bytes a sequence of tensors holds."""
    return sum(t.numel() * t.element_size() for t in tensors)


class TensorStore(Protocol):
    """A second, slower tier behind the in-memory cache (e.g. `napari_sam2.core.tensor_store.ZarrTensorStore`)."""

    def __contains__(self, key: str) -> bool: ...

    def get(self, key: str) -> Optional[tuple]: ...

    def put(self, key: str, tensors: tuple) -> None: ...

    def is_empty(self) -> bool: ...


class TensorCache:
    """A thread-safe LRU of entries (tuples of CPU tensors) under string keys, bounded by `max_bytes` of host memory
    (0 keeps nothing in memory; an entry larger than that is not kept), over an optional `store` (a TensorStore) that
    is read when memory misses and, with `write_store`, written with every new entry."""

    def __init__(self, max_bytes: int, store: Optional[TensorStore] = None,
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

    def is_empty(self) -> bool:
        """Whether neither memory nor the store holds an entry."""
        return not self._entries and (self.store is None or self.store.is_empty())

    def fits(self, nbytes: int) -> bool:
        """Whether an entry of `nbytes` bytes would be kept in memory."""
        return nbytes <= self.max_bytes

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
        size = nbytes(entry)
        with self._lock:
            if key in self._entries or size > self.max_bytes:
                return
            self._entries[key] = entry
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= nbytes(old)
