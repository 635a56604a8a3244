"""Safe, strict loading of Meta's SAM2 / SAM2.1 checkpoints and recognition of the variant.

A checkpoint is `torch.save({"model": state_dict})`. It is read with `weights_only=True`
(no code in the file is ever run) and must match the model key for key, shape for shape.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from ..errors import CheckpointError, InputError
from .configs import CONFIGS, ModelConfig, get_config
from .devices import resolve_device
from .model import Sam2Model

# (trunk embed dim, number of Hiera blocks) -> size letter
_SIZES = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}
# Names of models (and their downloads) belong to napari_sam2.models.registry, above the engine: the engine reads files.
_HINT = ("Get an official file with `napari-sam2 models download sam2.1_hiera_tiny` (or another name from "
         "`napari-sam2 models list`); in Python, napari_sam2.models.registry.model_path(name) gives a model's file, downloading "
         "it when needed.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file (`{"model": state_dict}` or a bare state dict), on the CPU.

    Raises CheckpointError, with what to do, for a missing, empty, truncated or foreign file, a file holding Python
    objects besides tensors (never unpickled), or a SAM (v1) or other model's checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint file at {path}. {_HINT}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file. Give the path of the .pt file.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"The checkpoint file {path} is empty (an interrupted download?). Delete it and download it again.")
    with open(path, "rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive; very old files are a bare pickle (protocol byte 0x80)
    if not (magic.startswith(b"PK") or magic.startswith(b"\x80")):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (it is not a file written by torch.save). {_HINT}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files; each becomes one clear message
        raise _load_failure(path, exc) from None
    return _unwrap(ckpt, path)


def _load_failure(path, exc) -> CheckpointError:
    msg = _first_line(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in msg:
        return CheckpointError(
            f"{path} holds Python objects besides tensors, so it is not an official SAM2 checkpoint "
            f"and is not loaded (loading it could run code from the file). {_HINT}"
        )
    if any(s in msg for s in ("central directory", "zip archive", "unexpected EOF", "Ran out of input", "truncated")):
        return CheckpointError(f"The checkpoint file {path} is truncated or corrupt ({msg}). Delete it and download it again.")
    return CheckpointError(f"{path} could not be read as a PyTorch checkpoint ({msg}). {_HINT}")


def _first_line(exc) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _unwrap(ckpt, path) -> dict:
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is a PyTorch file but not a SAM2 checkpoint (no model weights inside). {_HINT}")
    if "image_encoder.trunk.pos_embed" not in state:
        if any(k.startswith(("mask_decoder.", "prompt_encoder.")) for k in state) or "image_encoder.patch_embed.proj.weight" in state:
            raise CheckpointError(
                f"{path} is a SAM (v1, segment-anything) checkpoint. napari-sam2 needs a SAM2 or SAM2.1 "
                f"checkpoint, which also tracks objects through stacks. {_HINT}"
            )
        raise CheckpointError(f"{path} holds weights of some other model, not SAM2. {_HINT}")
    return state


def detect_variant(state: dict[str, torch.Tensor]) -> str:
    """The variant name (e.g. 'sam2.1_hiera_t') that a SAM2 state dict belongs to: the size from the trunk's embed dim
    and block count, SAM2.1 from the `no_obj_embed_spatial` key. Raises CheckpointError for a trunk of no official
    variant."""
    embed_dim = state["image_encoder.trunk.pos_embed"].shape[1]
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    size = _SIZES.get((embed_dim, len(blocks)))
    if size is None:
        raise CheckpointError(
            f"This SAM2-like checkpoint has a Hiera trunk (embed dim {embed_dim}, {len(blocks)} blocks) "
            f"that matches none of the official variants ({', '.join(CONFIGS)})."
        )
    version = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    return f"{version}_hiera_{size}"


def _mismatch_report(model: torch.nn.Module, state: dict) -> str:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
    return "; ".join(parts)


def build_model(config: str | ModelConfig) -> Sam2Model:
    """An untrained model (on the CPU, train mode) of a variant, given by name (e.g. 'sam2.1_hiera_t') or as a
    ModelConfig; every hyper-parameter comes from the config (see Sam2Model.__init__). InputError for an unknown
    name."""
    cfg = config if isinstance(config, ModelConfig) else get_config(config)
    return Sam2Model(cfg)


def load_model(checkpoint: str | Path, device: str | torch.device = "auto",
               config: str | ModelConfig | None = None) -> Sam2Model:
    """Load a Meta SAM2 / SAM2.1 `.pt` checkpoint into our model, in eval mode with gradients off, on `device`
    ('auto': CUDA, then MPS, then CPU; see devices.resolve_device).

    `config` (a variant name or ModelConfig) is worked out from the file when None; when
    given it must match the file (a ModelConfig may change the input size, e.g. `.with_(image_size=256)`).
    Raises CheckpointError for an unreadable file, another variant than `config`, or any missing, unexpected or
    mis-shaped key (strict loading); DeviceError for a device that is not available.
    """
    state = read_state_dict(checkpoint)
    detected = detect_variant(state)
    cfg = get_config(detected) if config is None else (config if isinstance(config, ModelConfig) else get_config(config))
    if config is not None and cfg.name in CONFIGS and cfg.name != detected:
        raise CheckpointError(
            f"The checkpoint {checkpoint} is a {detected} model, but config {cfg.name} was requested. "
            f"Pass config={detected!r} or leave config out to detect it."
        )
    target = resolve_device(device)
    model = build_model(cfg)
    problems = _mismatch_report(model, state)
    if problems:
        raise CheckpointError(f"The checkpoint {checkpoint} does not fit {cfg.name}: {problems}.")
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)  # inference only: no autograd graph, ever
    return model.to(target).eval()


def at_image_size(model: Sam2Model, image_size: int, precision: torch.dtype | None | str = "same") -> Sam2Model:
    """The same weights at another square input size S (pixels; a multiple of 64 keeps every feature grid whole), on
    the same device, in eval mode, compiled if `model` is. Hiera's position embeddings are interpolated to the new
    grid as the model runs (bicubic, as Meta does for any input size), so a smaller S trades accuracy for speed: the
    encoder's cost falls with S^2 and memory attention's with S^4. precision: the new model's `Sam2Model.precision`
    (an autocast dtype, or None for the device's policy); "same" keeps the model's. Returns `model` itself when
    nothing changes."""
    precision = model.precision if precision == "same" else precision
    if image_size == model.image_size and precision == model.precision:
        return model
    if image_size < 64 or image_size % 64:
        raise InputError(f"image_size must be a multiple of 64 of at least 64 pixels; got {image_size}.")
    resized = build_model(model.config.with_(image_size=image_size))
    resized.load_state_dict(model.state_dict(), strict=True)
    resized.requires_grad_(False)
    resized = resized.to(model.device).eval()
    resized.precision = precision
    return resized if model.compiled is None else resized.compile(**model.compiled)
