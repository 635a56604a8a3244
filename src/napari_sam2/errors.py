"""Errors a user can act on. Every message says what went wrong and what to do.

This module imports nothing heavy (no torch, no numpy): the command line, the napari plugin's discovery and
``napari_sam2.core.prompts`` import it without loading torch.
"""

from __future__ import annotations

import sys


class Sam2Error(Exception):
    """Base class of every error napari-sam2 raises for bad input or a bad environment."""


class CheckpointError(Sam2Error):
    """A checkpoint file is missing, unreadable, corrupt or not a SAM2 checkpoint."""


class InputError(Sam2Error, ValueError):
    """An image, stack or prompt does not have the shape, dtype or range expected."""


class DeviceError(Sam2Error):
    """The requested compute device is not available."""


class OutOfMemory(Sam2Error, MemoryError):
    """The GPU (or the computer's RAM) ran out of memory while computing. Also a MemoryError, so code that catches
    MemoryError still catches it. Made by :func:`out_of_memory_error` / :class:`translate_out_of_memory`, chained
    to the original error."""


class SaturationWarning(UserWarning):
    """Many pixels sit at the top of the intensity range a stack is scaled with: SAM2 may be shown (almost)
    nothing where the cells are. The message says how much and how to give the range instead."""


class PromptWarning(UserWarning):
    """Prompts SAM2 can make little of: an object with only negative clicks on a frame (no positive click, box or
    mask there), where SAM2 has nothing to find it by. The message names the object and frame and what to add."""


_GPU_ADVICE = (
    "Choose a smaller model (e.g. sam2.1_hiera_tiny), close other programs using the GPU, track fewer objects at "
    "once, or run on the CPU (device 'cpu'; on the command line --device cpu)."
)
_RAM_ADVICE = (
    "Close other programs, choose a smaller model (e.g. sam2.1_hiera_tiny), or crop the stack (fewer or smaller "
    "frames)."
)

# Phrases of out-of-memory errors that torch raises as a plain RuntimeError: MPS ("MPS backend out of memory"),
# CUDA outside the caching allocator ("CUDA error: out of memory", cuBLAS / cuDNN allocation failures) and the
# CPU allocator ("DefaultCPUAllocator: can't allocate memory").
_GPU_PHRASES = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed")
_HOST_PHRASES = ("can't allocate memory", "cannot allocate memory")


def out_of_memory_error(error: BaseException, device=None) -> OutOfMemory | None:
    """The :class:`OutOfMemory` that says what to do about ``error``, or None when ``error`` is not an
    out-of-memory error.

    Out of memory is: torch's ``OutOfMemoryError`` (``torch.OutOfMemoryError`` / ``torch.cuda.OutOfMemoryError``),
    a torch ``RuntimeError`` that reports an allocation failure (MPS, CUDA outside the caching allocator, the CPU
    allocator), and Python's ``MemoryError``. An ``OutOfMemory`` is returned as it is. ``device`` (e.g. "cuda:0"),
    when known, is named in the message. The caller raises the result ``from error``.
    """
    if isinstance(error, OutOfMemory):
        return error
    where = f" ({device})" if device is not None and str(device) not in ("", "cpu") else ""
    if _is_torch_out_of_memory(error):
        text = str(error).lower()
        if any(phrase in text for phrase in _HOST_PHRASES) and not any(p in text for p in ("cuda", "mps")):
            return OutOfMemory(f"The computer ran out of memory (RAM). {_RAM_ADVICE}")
        return OutOfMemory(f"The GPU{where} ran out of memory. {_GPU_ADVICE}")
    if isinstance(error, MemoryError):
        return OutOfMemory(f"The computer ran out of memory (RAM). {_RAM_ADVICE}")
    if isinstance(error, RuntimeError):
        text = str(error).lower()
        if any(phrase in text for phrase in _HOST_PHRASES):
            return OutOfMemory(f"The computer ran out of memory (RAM). {_RAM_ADVICE}")
        if any(phrase in text for phrase in _GPU_PHRASES):
            return OutOfMemory(f"The GPU{where} ran out of memory. {_GPU_ADVICE}")
    return None


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error of torch, of the GPU, or of Python (see out_of_memory_error)."""
    return out_of_memory_error(error) is not None


class translate_out_of_memory:
    """``with translate_out_of_memory(device):`` turns an out-of-memory error raised inside into an
    :class:`OutOfMemory` (a Sam2Error that says what to do), raised ``from`` the original; other errors pass
    unchanged. Works around a ``yield`` in a generator too (GeneratorExit and the like pass through)."""

    def __init__(self, device=None):
        self.device = device

    def __enter__(self) -> "translate_out_of_memory":
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, OutOfMemory):
            return False
        translated = out_of_memory_error(exc, self.device)
        if translated is None:
            return False
        raise translated from exc


def _is_torch_out_of_memory(error: BaseException) -> bool:
    # torch can only have raised it if torch is imported: look it up without importing it.
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    candidates = (getattr(torch, "OutOfMemoryError", None), getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None))
    kinds = tuple(kind for kind in candidates if isinstance(kind, type))
    return bool(kinds) and isinstance(error, kinds)
