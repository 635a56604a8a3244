"""Errors a user can act on: one out-of-memory translation for the API, the command line and the widget; object ids
that always fit the labels they are written into; light modules that do not import torch."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_sam2.core.frame_labels import FrameLabels, check_ids_fit, smallest_label_dtype
from napari_sam2.errors import (
    DeviceError,
    InputError,
    OutOfMemory,
    Sam2Error,
    is_out_of_memory,
    out_of_memory_error,
    translate_out_of_memory,
)
from napari_sam2.io.tiff import read_tiff, write_labels_tiff

CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.79 GiB"
MPS_OOM = "MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.20 GB, max allowed: 18.13 GB)."
CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
    "68719476736 bytes. Error code 12 (Cannot allocate memory)"
)

# ---- modules that must stay light ---------------------------------------------------------------------------------


def test_errors_prompts_and_file_modules_do_not_import_torch():
    modules = "napari_sam2.errors, napari_sam2.core.prompts, napari_sam2.numbers, napari_sam2.core.frame_labels, " \
              "napari_sam2.core.intensity, napari_sam2.core.axes, napari_sam2.io.prompt_files, napari_sam2.io.tiff"
    code = f"import sys, {modules}; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ---- out of memory ---------------------------------------------------------------------------------------------


GPU_ADVICE = ("smaller model", "sam2.1_hiera_tiny", "close other programs using the GPU", "device 'cpu'", "--device cpu")
RAM_ADVICE = ("RAM", "close other programs", "smaller model", "crop the stack")


@pytest.mark.parametrize(
    "error, kind",
    [
        (torch.OutOfMemoryError(CUDA_OOM), "gpu"),
        (torch.cuda.OutOfMemoryError(CUDA_OOM), "gpu"),
        (RuntimeError(MPS_OOM), "gpu"),  # MPS reports it as a plain RuntimeError
        (RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"), "gpu"),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), "gpu"),
        (RuntimeError(CPU_OOM), "ram"),  # torch's CPU allocator
        (MemoryError(), "ram"),
        (MemoryError("Unable to allocate 64.0 GiB for an array with shape (16, 1024, 1024, 1024)"), "ram"),
    ],
)
def test_every_kind_of_out_of_memory_becomes_one_error_that_says_what_to_do(error, kind):
    translated = out_of_memory_error(error)
    assert isinstance(translated, OutOfMemory) and isinstance(translated, Sam2Error)
    assert isinstance(translated, MemoryError)  # code that catches MemoryError still catches it
    assert is_out_of_memory(error)
    message = str(translated)
    advice = GPU_ADVICE if kind == "gpu" else RAM_ADVICE
    assert "ran out of memory" in message
    for words in advice:
        assert words.lower() in message.lower(), (words, message)
    if kind == "ram":
        assert "GPU" not in message


@pytest.mark.parametrize(
    "error",
    [ValueError("out of memory"), RuntimeError("shape mismatch"), KeyError("x"), OSError(28, "No space left"),
     DeviceError("no CUDA GPU"), KeyboardInterrupt()],
)
def test_other_errors_are_not_taken_for_out_of_memory(error):
    assert out_of_memory_error(error) is None and not is_out_of_memory(error)


def test_an_out_of_memory_error_is_kept_as_it_is_and_the_device_is_named():
    already = OutOfMemory("already said")
    assert out_of_memory_error(already) is already
    assert "The GPU (cuda:1) ran out of memory" in str(out_of_memory_error(torch.OutOfMemoryError(CUDA_OOM), "cuda:1"))
    assert "(cpu)" not in str(out_of_memory_error(MemoryError(), "cpu"))


def test_translate_out_of_memory_chains_the_original_and_lets_other_errors_pass():
    original = torch.OutOfMemoryError(CUDA_OOM)
    with pytest.raises(OutOfMemory, match="GPU ran out of memory") as caught:
        with translate_out_of_memory():
            raise original
    assert caught.value.__cause__ is original

    with pytest.raises(RuntimeError, match="shape mismatch"):
        with translate_out_of_memory():
            raise RuntimeError("shape mismatch")
    with pytest.raises(KeyboardInterrupt):
        with translate_out_of_memory():
            raise KeyboardInterrupt
    with translate_out_of_memory():
        pass


def test_translate_out_of_memory_around_a_yield():
    def frames(fail_at):
        with translate_out_of_memory("cuda:0"):
            for index in range(4):
                if index == fail_at:
                    raise MemoryError
                yield index

    stopped = frames(fail_at=None)
    assert next(stopped) == 0
    stopped.close()  # GeneratorExit passes through untouched
    with pytest.raises(OutOfMemory, match="RAM"):
        list(frames(fail_at=2))


def test_the_widget_shows_the_same_message():
    from napari_sam2._napari._qt.jobs import user_message

    for error in (torch.OutOfMemoryError(CUDA_OOM), RuntimeError(MPS_OOM), MemoryError()):
        assert user_message(error) == str(out_of_memory_error(error))
    assert user_message(InputError("bad click")) == "bad click"
    assert "unexpected error (ZeroDivisionError" in user_message(ZeroDivisionError("x"))


# ---- object ids and label types ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, largest_fitting",
    [(np.uint8, 255), (np.int8, 127), (np.uint16, 65535), (np.int16, 32767), (np.int32, 2**31 - 1),
     (np.uint32, 2**32 - 1), (np.int64, 2**63 - 1), (bool, 1)],
)
def test_ids_up_to_the_largest_value_of_the_type_fit_and_one_more_is_refused(dtype, largest_fitting):
    check_ids_fit([1, largest_fitting], dtype)
    check_ids_fit(np.array([largest_fitting], dtype), dtype)
    with pytest.raises(InputError) as caught:
        check_ids_fit([1, largest_fitting + 1, 1], dtype)
    message = str(caught.value)
    name = np.dtype(dtype).name
    assert f"Object id {largest_fitting + 1} does not fit in labels of type {name}" in message
    assert f"up to {largest_fitting}" in message  # what does fit
    assert "wider integer type such as" in message and "astype" in message  # what to do


def test_the_advice_names_a_type_that_holds_the_id():
    with pytest.raises(InputError, match="such as int32 or uint32"):
        check_ids_fit([300], np.uint8)
    with pytest.raises(InputError, match="such as int64"):
        check_ids_fit([2**32], np.uint32)
    with pytest.raises(InputError, match="such as uint64"):
        check_ids_fit([2**63], np.int64)
    with pytest.raises(InputError, match="no integer type holds it"):
        check_ids_fit([2**64], np.uint64)


@pytest.mark.parametrize("bad", [0, -1, -300])
def test_zero_and_negative_ids_are_refused(bad):
    with pytest.raises(InputError, match=f"Object id {bad} cannot be written.*0 is the background"):
        check_ids_fit([2, bad], np.int32)


def test_no_ids_fit_anything_and_floats_are_refused():
    check_ids_fit([], np.uint8)
    with pytest.raises(InputError, match="float32 cannot hold object ids exactly"):
        check_ids_fit([1], np.float32)


def test_frame_labels_hold_every_id_exactly():
    masks = np.zeros((3, 4, 5), bool)
    masks[0, 0], masks[1, 1], masks[2, 2] = True, True, True
    labels = FrameLabels(0, (256, 300, 2**31 - 1), masks).labels
    assert labels.dtype == np.int32
    assert labels[0, 0] == 256 and labels[1, 0] == 300 and labels[2, 0] == 2**31 - 1
    with pytest.raises(InputError, match="int32"):
        FrameLabels(0, (2**31,), masks[:1]).labels


@pytest.mark.parametrize(
    "largest, smallest, expected",
    [(0, np.uint8, np.uint8), (255, np.uint8, np.uint8), (256, np.uint8, np.uint16), (1, np.uint16, np.uint16),
     (65535, np.uint16, np.uint16), (65536, np.uint16, np.uint32), (2**31 - 1, np.uint16, np.uint32),
     (2**32, np.uint16, np.uint64)],
)
def test_smallest_label_dtype(largest, smallest, expected):
    assert smallest_label_dtype(largest, smallest=smallest) == np.dtype(expected)


@pytest.mark.parametrize("largest, dtype", [(65535, np.uint16), (65536, np.uint32), (2**31 - 1, np.uint32)])
def test_label_tiffs_store_the_largest_id_exactly(tmp_path, largest, dtype):
    labels = np.zeros((2, 6, 7), np.int64)
    labels[0, 1, 1], labels[1, 2, 3], labels[1, 4, 4] = 1, largest, largest - 1
    write_labels_tiff(tmp_path / "labels.tif", labels, "ZYX", {"X": 0.5, "Y": 0.5, "Z": 2.0})
    written = read_tiff(tmp_path / "labels.tif")
    assert written.data.dtype == dtype and written.axes == "ZYX"
    np.testing.assert_array_equal(written.data, labels)


def test_label_tiffs_refuse_what_they_cannot_store(tmp_path):
    with pytest.raises(InputError, match="too large to store"):
        write_labels_tiff(tmp_path / "labels.tif", np.full((2, 2), 2**32, np.int64), "YX")
    assert not (tmp_path / "labels.tif").exists()
