"""Keep host memory flat over long propagations (glibc only; elsewhere these do nothing).

Every tracked frame allocates and frees gigabytes of temporary buffers (image encoder, attention over the memory
bank, upsampled masks). glibc's malloc serves a block from its heap unless it is larger than its mmap threshold,
and that threshold rises by itself (up to 32 MiB) every time a mapped block is freed; so after the first frame
most buffers come from the heap, what the tracker keeps from a frame lands between them, the free gaps fit the
next frame's buffers less and less well, and the peak resident size creeps up frame after frame. Three remedies:

* ``map_large_buffers`` fixes the threshold at 16 MiB: every buffer that large gets its own mapping, returned to
  the OS when freed, so the biggest transient buffers never fragment the heap (peak 60-90 MiB lower at 1024 px;
  the extra page faults cost ~3 % of a CPU frame; thresholds of 1-4 MiB cost 13-25 %, as each mapping is
  zero-filled page by page);
* ``outside_heap`` gives each large kept tensor its own anonymous mapping, so only transient buffers (and small
  objects) live in the heap and it never fragments around kept data;
* ``release_freed_host_memory`` (``malloc_trim``) returns the heap's free pages after each frame.

Other C libraries (macOS, Windows, musl) have no such heap behaviour to correct.

The first and third change the whole process's allocator, so they are opt-in (``tune_host_memory``): the command
line and the benchmarks turn them on; a script may; napari's process is left as napari sets it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys

import torch

MIN_MAPPED_BYTES = 256 << 10  # smaller kept tensors (object pointers, scores) stay in the heap
MMAP_THRESHOLD_BYTES = 16 << 20
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):  # no glibc (e.g. musl)
        return None
    libc.malloc_trim.restype = libc.mallopt.restype = ctypes.c_int
    return libc


_libc = _glibc()


def map_large_buffers() -> bool:
    """Fix glibc's mmap threshold at 16 MiB for this process (see above); True when set. Left alone where the
    user chose a threshold (MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES) and off glibc."""
    user_set = "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "")
    if _libc is None or user_set:
        return False
    return _libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1


def outside_heap(t: torch.Tensor) -> torch.Tensor:
    """A tensor to keep across frames: a large CPU tensor is copied into its own anonymous mapping (unmapped when
    the tensor is freed), in the same memory layout; anything else is returned as it is."""
    nbytes = t.numel() * t.element_size()
    if _libc is None or t.device.type != "cpu" or nbytes < MIN_MAPPED_BYTES:
        return t
    kept = torch.frombuffer(mmap.mmap(-1, nbytes), dtype=t.dtype, count=t.numel())
    # the same strides where t is dense (e.g. channels-last features): later convolutions round by layout
    dense = all(st >= 0 for st in t.stride()) and 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride())) == t.numel()
    kept = kept.as_strided(t.shape, t.stride()) if dense else kept.view(t.shape)
    return kept.copy_(t)


_tuned = False


def tune_host_memory() -> bool:
    """Turn on, for this whole process, the mmap threshold of ``map_large_buffers`` and a heap trim after every tracked
    frame (``release_freed_host_memory``): flat resident memory over long propagations. True when the threshold was
    set (glibc, and no threshold of the user's own)."""
    global _tuned
    _tuned = True
    return map_large_buffers()


def release_freed_host_memory() -> None:
    """Return free heap pages to the OS (glibc, once ``tune_host_memory`` was called); a few milliseconds at most."""
    if _libc is not None and _tuned:
        _libc.malloc_trim(0)
