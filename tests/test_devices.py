"""The device and precision policy on a machine with (pretend) CUDA GPUs: which devices exist, and the autocast
dtype each GPU generation gets. The CUDA calls are stubbed: this runs on any machine."""

import pytest
import torch

from napari_sam2 import DeviceError
from napari_sam2.engine import devices


@pytest.fixture
def two_gpus(monkeypatch):
    """Two CUDA GPUs: cuda:0 an Ampere (8.0), cuda:1 a Turing T4 (7.5)."""
    capabilities = {0: (8, 0), 1: (7, 5)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capabilities[index])
    devices._cuda_capability.cache_clear()
    yield
    devices._cuda_capability.cache_clear()


def test_cuda_devices_that_exist_are_resolved(two_gpus):
    assert devices.resolve_device("cuda") == torch.device("cuda")
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert devices.resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    assert devices.resolve_device("auto").type == "cuda"


@pytest.mark.parametrize(
    "name, message", [("cuda:2", r"sees 2 GPU\(s\).*cuda:0 to cuda:1"), ("cuda:x", "Unknown device")]
)
def test_a_cuda_device_that_does_not_exist_is_a_device_error(two_gpus, name, message):
    with pytest.raises(DeviceError, match=message):
        devices.resolve_device(name)


def test_bf16_on_gpus_that_compute_it_natively_fp16_on_older_ones_float32_elsewhere(two_gpus, monkeypatch):
    assert devices.autocast_dtype(torch.device("cuda", 0)) is torch.bfloat16
    assert devices.autocast_dtype(torch.device("cuda")) is torch.bfloat16  # the current device, cuda:0
    assert devices.autocast_dtype(torch.device("cuda", 1)) is torch.float16
    assert devices.autocast_dtype(torch.device("cpu")) is None
    assert devices.autocast_dtype(torch.device("mps")) is None
    monkeypatch.setenv("NAPARI_SAM2_PRECISION", "float32")  # e.g. to compare a GPU with the golden float32 outputs
    assert devices.autocast_dtype(torch.device("cuda", 0)) is None
    monkeypatch.setenv("NAPARI_SAM2_PRECISION", "float16")
    assert devices.autocast_dtype(torch.device("cuda", 0)) is torch.float16
    assert devices.autocast_dtype(torch.device("cpu")) is None  # the CPU always computes in float32
    monkeypatch.setenv("NAPARI_SAM2_PRECISION", "double")
    with pytest.raises(DeviceError, match="NAPARI_SAM2_PRECISION"):
        devices.autocast_dtype(torch.device("cuda", 0))


def test_autocast_on_the_cpu_only_for_a_lower_precision():
    for dtype in (None, torch.float32):
        with devices.autocast(torch.device("cpu"), dtype):
            assert not torch.is_autocast_enabled("cpu")
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with devices.autocast(torch.device("cpu"), torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_native_bfloat16_is_read_from_the_cpu_s_features(monkeypatch):
    for avx512_bf16, amx, native in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        assert devices.cpu_native_bf16() is native
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch without the check: no native bf16
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert devices.cpu_native_bf16() is False


def test_mps_resizes_fall_back_to_the_cpu_on_an_older_torch_only():
    assert devices.interpolate_needs_cpu("mps", "bicubic", False, version=(2, 5))
    assert not devices.interpolate_needs_cpu("mps", "bicubic", False, version=(2, 6))
    assert devices.interpolate_needs_cpu("mps", "bilinear", True, version=(2, 6))
    assert not devices.interpolate_needs_cpu("mps", "bilinear", True, version=(2, 7))
    assert not devices.interpolate_needs_cpu("mps", "bilinear", False, version=(2, 5))
    assert not devices.interpolate_needs_cpu("cpu", "bicubic", True, version=(2, 5))
    assert not devices.interpolate_needs_cpu("cuda", "bicubic", True, version=(2, 5))


def test_interpolate_is_torch_s_own_call_where_the_device_has_it():
    x = torch.rand(1, 2, 9, 7)
    for kwargs in (dict(mode="bicubic"), dict(mode="bilinear", align_corners=False, antialias=True)):
        expected = torch.nn.functional.interpolate(x, size=(4, 5), **kwargs)
        assert torch.equal(devices.interpolate(x, size=(4, 5), **kwargs), expected)


def test_an_evicted_model_gives_its_device_memory_back(monkeypatch, synthetic_checkpoint):
    from napari_sam2.models import loaded

    released = []
    monkeypatch.setattr(loaded, "release_device_memory", released.append)
    loaded.clear_model_cache()
    released.clear()
    paths = [synthetic_checkpoint("sam2.1_hiera_t", seed) for seed in range(loaded.MAX_CACHED_MODELS + 1)]
    for path in paths:
        loaded.get_model(path, "cpu")
    assert released == [torch.device("cpu")]  # the first model, evicted by the last
    loaded.clear_model_cache()
    assert released == [torch.device("cpu")] * 2  # then every device with a cached model
