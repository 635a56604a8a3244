"""Device choice and the precision policy: autocast on CUDA (bfloat16 where the GPU computes it natively, float16
on older GPUs), float32 elsewhere. NAPARI_SAM2_PRECISION=float32 (or bfloat16, float16) overrides the choice on CUDA,
e.g. to compare a GPU's results with the CPU's or with Meta's float32 outputs. A model may also carry its own
precision (Sam2Model.precision): fast mode runs bfloat16 on CPUs that compute it natively (cpu_native_bf16)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil

import torch
import torch.nn.functional as F

from ..errors import DeviceError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU; an explicit device ('cuda', 'cuda:1', 'mps', 'cpu') must exist.
    Raises DeviceError for an unknown or unavailable device."""
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"Device {device!r} was requested but PyTorch sees no CUDA GPU here "
                f"(torch {torch.__version__}). Use the device 'auto' or 'cpu' (on the command line --device auto or "
                "--device cpu), or install a CUDA build of PyTorch."
            )
        return _cuda_device(name)
    if name == "mps":
        if not _mps_available():
            raise DeviceError(
                "Device 'mps' was requested but Apple MPS is not available. Use the device 'auto' or 'cpu' (on the "
                "command line --device auto or --device cpu)."
            )
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"Unknown device {device!r}. Choose one of: {', '.join(DEVICE_CHOICES)}.")


def _cuda_device(name: str) -> torch.device:
    """'cuda' or 'cuda:N' for a GPU that exists; a DeviceError naming the GPUs there are otherwise."""
    count = torch.cuda.device_count()
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type != "cuda":
        raise DeviceError(f"Unknown device {name!r}. Use 'cuda' or 'cuda:N' with N from 0 to {count - 1}.")
    if device.index is not None and device.index >= count:
        raise DeviceError(
            f"Device {name!r} does not exist: PyTorch sees {count} GPU(s) here (cuda:0"
            + (f" to cuda:{count - 1}" if count > 1 else "") + "). Use one of those, or 'auto'."
        )
    return device


# Compute capability 8.0 (Ampere: A100, RTX 30xx) and later compute bfloat16 natively; older GPUs (T4, V100,
# RTX 20xx) emulate it slowly, and run float16 on their tensor cores instead.
NATIVE_BF16_CAPABILITY = 8


@functools.lru_cache(maxsize=None)
def _cuda_capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype the model runs in on ``device`` under autocast: bfloat16 on CUDA GPUs with native bf16 (Meta's
    choice for SAM2), float16 on older CUDA GPUs, None (float32, no autocast) on CPU and MPS; on CUDA,
    NAPARI_SAM2_PRECISION (float32, bfloat16, float16, or auto) overrides it."""
    if device.type != "cuda":
        return None
    choice = os.environ.get("NAPARI_SAM2_PRECISION", "").strip().lower()
    if choice and choice != "auto":
        if choice not in PRECISIONS:
            raise DeviceError(
                f"NAPARI_SAM2_PRECISION must be one of auto, {', '.join(PRECISIONS)}; got {choice!r}."
            )
        return PRECISIONS[choice]
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, _ = _cuda_capability(index)
    return torch.bfloat16 if major >= NATIVE_BF16_CAPABILITY else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device`` (on CUDA: fused attention kernels, half the memory; on a CPU with native
    bfloat16: AMX / AVX512-BF16 matrix products); nothing for None or float32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (AVX512-BF16 or AMX, e.g. Intel Sapphire Rapids,
    AMD Zen 4), where they run several times faster than float32; elsewhere bfloat16 is emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private but long-standing (torch >= 2.1)
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


# Apple MPS computes bicubic interpolation from torch 2.6 and antialiased interpolation from torch 2.7; with an older
# torch those few resizes (Hiera's position embedding, mask resizes) run on the CPU instead of failing.
MPS_BICUBIC_TORCH = (2, 6)
MPS_ANTIALIAS_TORCH = (2, 7)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def interpolate_needs_cpu(device_type: str, mode: str, antialias: bool, version: tuple[int, int] | None = None) -> bool:
    """Whether ``F.interpolate`` with ``mode`` / ``antialias`` must run on the CPU for a tensor on ``device_type``."""
    if device_type != "mps":
        return False
    version = _torch_version() if version is None else version
    return (mode == "bicubic" and version < MPS_BICUBIC_TORCH) or (antialias and version < MPS_ANTIALIAS_TORCH)


def interpolate(x: torch.Tensor, size=None, mode: str = "nearest", align_corners=None, antialias: bool = False):
    """``F.interpolate(x, size, mode, align_corners, antialias)``, computed on the CPU (and moved back) where the
    tensor's device lacks the operation (:func:`interpolate_needs_cpu`); the same call everywhere else."""
    if interpolate_needs_cpu(x.device.type, mode, antialias):
        resized = F.interpolate(x.cpu(), size=size, mode=mode, align_corners=align_corners, antialias=antialias)
        return resized.to(x.device)
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners, antialias=antialias)


CPP_COMPILERS = ("g++", "clang++", "c++", "cl")  # what inductor's CPU code is built with (CXX, if set, first)


def compile_problem(device_type: str, backend: str) -> str | None:
    """Why torch.compile with `backend` cannot work on a `device_type` device here, as a message that says what to
    do; None when nothing is missing. Inductor builds C++ for a CPU and Triton kernels for CUDA: without them it would
    fail at the first frame, deep inside the tracking."""
    if backend != "inductor":
        return None
    if device_type == "cuda" and importlib.util.find_spec("triton") is None:
        return ("torch.compile on a GPU needs Triton, which is not installed: install it (`pip install triton`, the "
                "version your torch names), or run without compiling (--no-compile, or NAPARI_SAM2_COMPILE=0).")
    if device_type == "cpu":
        wanted = [os.environ["CXX"]] if os.environ.get("CXX") else list(CPP_COMPILERS)
        if not any(shutil.which(name) for name in wanted):
            return ("torch.compile on the CPU needs a C++ compiler, and none was found "
                    f"({', '.join(wanted)}): install one (e.g. gcc, or Xcode's command line tools), or run without "
                    "compiling (--no-compile, or NAPARI_SAM2_COMPILE=0).")
    return None


def release_device_memory(device: torch.device) -> None:
    """Return the memory torch's caching allocator holds unused on ``device`` (a GPU's, after a model was dropped) to
    the system, so that other programs and the next model can use it; nothing to do on the CPU."""
    if device.type == "cuda" and torch.cuda.is_available():
        with torch.cuda.device(device):
            torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
