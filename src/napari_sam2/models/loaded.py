"""Loaded SAM2 models kept for reuse, so that every call of segment_stack or every click in napari does not reload
(hundreds of MB of) weights. Models are keyed by checkpoint file and device; only the last few stay loaded."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from ..engine import Sam2Model, load_model, resolve_device
from ..engine.devices import release_device_memory
from ..engine.preprocess import Preprocessing, preprocessing_profile
from ..errors import InputError
from .registry import DEFAULT_MODEL, _find_local, _find_official, model_path

# Two models at most: switching back and forth between two is quick, and a large model's memory is returned.
MAX_CACHED_MODELS = 2

_cache: "OrderedDict[tuple, Sam2Model]" = OrderedDict()
_lock = threading.Lock()


def get_model(model=DEFAULT_MODEL, device="auto") -> Sam2Model:
    """A loaded model: ``model`` is a registry name (e.g. "sam2.1_hiera_tiny"), a registered local name, the path of
    a checkpoint file, or an already loaded model (returned as it is, on its own device).

    An official model that is not downloaded yet is downloaded into the cache first.
    """
    if isinstance(model, Sam2Model):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(
            f"model must be a model name (e.g. {DEFAULT_MODEL!r}), a checkpoint path or a loaded model; "
            f"got {type(model).__name__}."
        )
    path = Path(model_path(model)).resolve()
    target = resolve_device(device)
    stat = path.stat()
    # The file's size and time are part of the key, so a checkpoint replaced at the same path is loaded anew.
    key = (str(path), stat.st_size, stat.st_mtime_ns, str(target))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        loaded = load_model(path, device=target)
        _cache[key] = loaded
        while len(_cache) > MAX_CACHED_MODELS:
            # The evicted model's GPU memory goes back once no session holds it (the allocator keeps it otherwise).
            _, evicted = _cache.popitem(last=False)
            device = evicted.device
            del evicted
            release_device_memory(device)
        return loaded


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
