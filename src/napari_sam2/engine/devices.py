"""Device choice and the precision policy: bf16 autocast on CUDA, float32 elsewhere."""

from __future__ import annotations

import contextlib

import torch

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
                f"(torch {torch.__version__}). Use device='auto' or 'cpu', or install a CUDA build of PyTorch."
            )
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise DeviceError("Device 'mps' was requested but Apple MPS is not available. Use 'auto' or 'cpu'.")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"Unknown device {device!r}. Choose one of: {', '.join(DEVICE_CHOICES)}.")


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16 autocast on CUDA (fused attention kernels, half the memory); nothing elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
