"""Tensors kept by key: the most recently used in memory, the rest in a temporary file on disk.

The tracker keeps, for every object and every tracked frame, what Meta's predictor keeps: the frame's memory
(bfloat16, ``mem_dim x 64 x 64``: 0.5 MiB for a 1024-px model) and its low-res mask logits (float32, 0.25 MiB),
because a later pass, a correction or a reverse pass may attend to any of them. Kept in memory that would grow
by ~0.75 MiB per frame and object; here only the ``capacity`` most recently used entries stay in memory and the
others are written to one unlinked temporary file (gone when the store is closed or the process ends) and read
back on demand, bit for bit. Disk writes go through the OS's page cache, which the OS reclaims under pressure.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from typing import Hashable, Optional, Sequence

import numpy as np
import torch

from .host_memory import outside_heap

# numpy has no bfloat16: such tensors travel to and from disk as their 16-bit patterns
_BITS = {torch.bfloat16: torch.int16}


class SpillStore:
    """A dict of tuples of CPU tensors with a bounded in-memory part.

    ``capacity``: how many entries stay in memory (the most recently put or read); ``None`` keeps all in memory.
    ``folder``: where the temporary file goes (default: the system's temporary folder).
    """

    def __init__(self, capacity: Optional[int], folder: Optional[str] = None):
        self.capacity = capacity
        self._folder = folder
        self._memory: "OrderedDict[Hashable, tuple]" = OrderedDict()
        self._on_disk: dict = {}  # key -> (offset, [(dtype, shape, nbytes, device)])
        self._free: dict = {}  # entry size in bytes -> free offsets of that size
        self._file = None
        self._end = 0

    def __contains__(self, key) -> bool:
        return key in self._memory or key in self._on_disk

    def __len__(self) -> int:
        return len(self._memory.keys() | self._on_disk.keys())

    @property
    def in_memory(self) -> int:
        return len(self._memory)

    def put(self, key, tensors: Sequence[torch.Tensor]) -> None:
        """Keep ``tensors`` under ``key``, replacing what was there. Tensors on a GPU stay there while they are
        in memory, and come back there when read from disk."""
        self.pop(key)
        self._memory[key] = tuple(tensors)
        self._evict()

    def get(self, key) -> Optional[tuple]:
        """The tensors under ``key`` (read back from disk if they were spilled), or None."""
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if key not in self._on_disk:
            return None
        offset, layout = self._on_disk[key]
        tensors = []
        for dtype, shape, nbytes, device in layout:
            self._file.seek(offset)
            data = self._file.read(nbytes)
            if len(data) != nbytes:
                raise OSError(f"The tracker's temporary memory file was cut short ({self._file.name}).")
            bits = _BITS.get(dtype, dtype)
            array = np.frombuffer(data, dtype=torch.empty((), dtype=bits).numpy().dtype).reshape(shape)
            tensor = torch.from_numpy(array.copy()).view(dtype)
            tensors.append(outside_heap(tensor) if device.type == "cpu" else tensor.to(device))
            offset += nbytes
        # read back: it is likely to be needed again soon (the next frames attend to it)
        self._memory[key] = tuple(tensors)
        self._evict()
        return self._memory.get(key, tuple(tensors))

    def pop(self, key) -> None:
        self._memory.pop(key, None)
        spilled = self._on_disk.pop(key, None)
        if spilled is not None:
            offset, layout = spilled
            self._free.setdefault(sum(entry[2] for entry in layout), []).append(offset)

    def keys(self) -> set:
        return set(self._memory) | set(self._on_disk)

    def clear(self) -> None:
        self._memory.clear()
        self._on_disk.clear()
        self._free.clear()
        self._end = 0
        if self._file is not None:
            self._file.truncate(0)

    def close(self) -> None:
        self.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _evict(self) -> None:
        if self.capacity is None:
            return
        while len(self._memory) > self.capacity:
            key, tensors = self._memory.popitem(last=False)
            if key not in self._on_disk:  # entries never change, so one that was on disk is still there
                self._write(key, tensors)

    def _write(self, key, tensors) -> None:
        payload = [t.detach().cpu().contiguous().view(_BITS.get(t.dtype, t.dtype)).numpy().tobytes() for t in tensors]
        size = sum(len(p) for p in payload)
        free = self._free.get(size)
        if free:
            offset = free.pop()
        else:
            offset, self._end = self._end, self._end + size
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="napari-sam2-memory-", dir=self._folder)
        self._file.seek(offset)  # seek/read/write rather than pread/pwrite: those do not exist on Windows
        for data in payload:
            self._file.write(data)
        self._file.flush()
        self._on_disk[key] = (offset, [(t.dtype, tuple(t.shape), len(p), t.device) for t, p in zip(tensors, payload)])
