"""Loaded SAM2 models kept for reuse, so that every call of segment_stack or every click in napari does not reload
(hundreds of MB of) weights. Models are keyed by checkpoint file and device; only the last few stay loaded."""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

import torch

from ..engine import Sam2Model, load_model, resolve_device
from ..engine.checkpoints import at_image_size, detect_variant, read_state_dict
from ..engine.devices import cpu_native_bf16, release_device_memory
from ..engine.preprocess import Preprocessing, preprocessing_profile
from ..errors import InputError
from .registry import DEFAULT_MODEL, _find_local, _find_official, model_path

# Two models at most: switching back and forth between two is quick, and a large model's memory is returned.
MAX_CACHED_MODELS = 2

_cache: "OrderedDict[tuple, Sam2Model]" = OrderedDict()
_fast_models: "weakref.WeakKeyDictionary[Sam2Model, Sam2Model]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()
FAST_IMAGE_SIZE = 512  # the fast mode's model input, pixels (SAM2's own is 1024)


def get_model(model=DEFAULT_MODEL, device="auto", fast: bool = False, compile: bool | None = None) -> Sam2Model:
    """A loaded model: ``model`` is a registry name (e.g. "sam2.1_hiera_tiny"), a registered local name, the path of
    a checkpoint file, or an already loaded model (returned as it is, on its own device, compiled or not).

    An official model that is not downloaded yet is downloaded into the cache first. ``fast``: the same weights at a
    FAST_IMAGE_SIZE input (see ``fast_variant``). ``compile``: the model compiled with torch.compile
    (``Sam2Model.compile``: for GPUs; the first frame waits a minute or more for it); None: as the environment
    variable NAPARI_SAM2_COMPILE says (1 or 0; default 0), which reaches the napari widget too; True or False
    overrides it.
    """
    if fast:
        return fast_variant(get_model(model, device, compile=compile))
    if isinstance(model, Sam2Model):
        return model
    wanted = compile_wanted()  # read (and checked) even when `compile` overrides it
    compiled = wanted if compile is None else bool(compile)
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(
            f"model must be a model name (e.g. {DEFAULT_MODEL!r}), a checkpoint path or a loaded model; "
            f"got {type(model).__name__}."
        )
    path = Path(model_path(model)).resolve()
    target = resolve_device(device)
    stat = path.stat()
    # The file's size and time are part of the key, so a checkpoint replaced at the same path is loaded anew.
    key = (str(path), stat.st_size, stat.st_mtime_ns, str(target), compiled)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        loaded = load_model(path, device=target)
        if compiled:
            loaded.compile()
        _cache[key] = loaded
        while len(_cache) > MAX_CACHED_MODELS:
            # The evicted model's GPU memory goes back once no session holds it (the allocator keeps it otherwise).
            _, evicted = _cache.popitem(last=False)
            device = evicted.device
            del evicted
            release_device_memory(device)
        return loaded


def checkpoint_variant(path) -> str:
    """The SAM2 variant of the checkpoint file at ``path`` (e.g. "sam2.1_hiera_t"), read without building a model;
    CheckpointError saying what is wrong with a file that is not one (engine.checkpoints.read_state_dict)."""
    return detect_variant(read_state_dict(path))


def compile_wanted() -> bool:
    """NAPARI_SAM2_COMPILE: 1 to compile the models get_model loads (Sam2Model.compile), 0 or unset not to."""
    text = os.environ.get("NAPARI_SAM2_COMPILE", "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise InputError(f"NAPARI_SAM2_COMPILE must be 1 (compile) or 0 (do not); got {text!r}.")


def fast_variant(model: Sam2Model) -> Sam2Model:
    """The fast mode of a model: its weights at a FAST_IMAGE_SIZE-pixel input instead of 1024, and on a CPU that
    computes bfloat16 natively (AVX512-BF16 or AMX: devices.cpu_native_bf16) its matrix products in bfloat16. A
    model already that small (and on such a CPU already in bfloat16) is returned as it is. On a CPU a tracked frame
    takes a sixth to a seventh of the time at 512 px, and an eleventh to a fifteenth with bfloat16 as well (README,
    "Benchmarks"); masks are coarser: thin or small structures (under ~8 pixels of a 1024-px frame) may be lost.
    Made once per model, compiled if it is."""
    size = min(model.image_size, FAST_IMAGE_SIZE)
    precision = torch.bfloat16 if model.device.type == "cpu" and cpu_native_bf16() else model.precision
    if size == model.image_size and precision == model.precision:
        return model
    with _lock:
        fast = _fast_models.get(model)
        if fast is None:
            fast = _fast_models[model] = at_image_size(model, size, precision=precision)
        return fast


def preprocessing_for(model=DEFAULT_MODEL, preprocessing=None) -> Preprocessing:
    """The preprocessing a model was trained with: ``preprocessing`` when given (a Preprocessing or a profile name,
    "sam2" or "micro_sam"); else the registry's profile when ``model`` is a registry name (e.g. "hvit_t_cells");
    else (a loaded model, a checkpoint path, a registered local file) the SAM2 default."""
    if preprocessing is not None:
        return preprocessing_profile(preprocessing)  # an InputError for an unknown name
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if not Path(text).expanduser().is_file() and _find_local(text) is None:
            info = _find_official(text)
            if info is not None:
                return preprocessing_profile(info.preprocessing)
    return preprocessing_profile(None)


def clear_model_cache() -> None:
    """Forget every loaded model (their memory is freed once nothing else holds them)."""
    with _lock:
        devices = {model.device for model in _cache.values()}
        _cache.clear()
    for device in devices:
        release_device_memory(device)
