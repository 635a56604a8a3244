"""Give host memory freed by large transient tensors back to the operating system.

Every tracked frame allocates and frees large temporary buffers (attention over the memory bank, upsampled
masks). glibc's malloc keeps freed heap memory resident and, as the sizes vary, the heap fragments, so the
resident size of a long propagation creeps up frame after frame. ``malloc_trim`` returns the free pages. Other C
libraries (macOS, Windows, musl) have no such call and do not need it: there this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys


def _find_malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # no glibc (e.g. musl): nothing to trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


def release_freed_host_memory() -> None:
    """Return free heap pages to the OS (glibc); a few milliseconds at most, a no-op elsewhere."""
    if _malloc_trim is not None:
        _malloc_trim(0)
