"""Keep host memory flat over long propagations (glibc only; elsewhere these do nothing).

Every tracked frame allocates and frees gigabytes of temporary buffers (image encoder, attention over the memory
bank, upsampled masks). glibc's malloc serves blocks up to 32 MiB from its heap, so what the tracker keeps from a
frame (image features, memories, masks) lands between those buffers; the kept blocks pin the heap, the free gaps
between them fit the next frame's buffers less and less well, and the peak resident size creeps up frame after
frame. Two cheap remedies:

* ``outside_heap`` gives each large kept tensor its own anonymous mapping, so only transient buffers (and small
  objects) live in the heap and it never fragments around kept data;
* ``release_freed_host_memory`` (``malloc_trim``) returns the heap's free pages after each frame.

(Mapping *every* large buffer, glibc's M_MMAP_THRESHOLD, flattens the peak too but makes a CPU frame 30-45 %
slower: each mapping is zero-filled page by page, gigabytes per frame.) Other C libraries (macOS, Windows, musl)
have no such heap behaviour to correct.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys

import torch

MIN_MAPPED_BYTES = 256 << 10  # smaller kept tensors (object pointers, scores) stay in the heap


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # no glibc (e.g. musl)
        return None
    libc.malloc_trim.restype = ctypes.c_int
    return libc


_libc = _glibc()


def outside_heap(t: torch.Tensor) -> torch.Tensor:
    """A tensor to keep across frames: a large CPU tensor is copied into its own anonymous mapping (unmapped when
    the tensor is freed); anything else is returned as it is."""
    nbytes = t.numel() * t.element_size()
    if _libc is None or t.device.type != "cpu" or nbytes < MIN_MAPPED_BYTES:
        return t
    kept = torch.frombuffer(mmap.mmap(-1, nbytes), dtype=t.dtype, count=t.numel()).view(t.shape)
    return kept.copy_(t)


def release_freed_host_memory() -> None:
    """Return free heap pages to the OS (glibc); a few milliseconds at most, a no-op elsewhere."""
    if _libc is not None:
        _libc.malloc_trim(0)
