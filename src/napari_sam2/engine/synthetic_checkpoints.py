"""Deterministic synthetic checkpoints in the official format, for tests, demos and benchmarks.

Implements the documented generator of the project's reference data (shared/reference/
make_checkpoint.py): for each key, `u = PCG64([seed, crc32(name)]).random(n) * 2 - 1`, then
offset + scale * u with the scale chosen by the key's kind. Key names, shapes and kinds
are read off our own model, so no manifest is needed. Random weights do not segment
cells; they exercise every code path exactly as real weights do.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .blocks import LayerNorm2d
from .checkpoints import build_model

_KIND_RULES = {"weight": (0.0, None), "norm": (1.0, 0.1), "bias": (0.0, 0.02),
               "embedding": (0.0, 1.0), "param": (0.0, 0.02), "buffer": (0.0, 0.02)}
_OVERRIDES = [
    (r"sam_prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix", (0.0, math.sqrt(3.0))),
    (r"sam_mask_decoder\.transformer\..*\.(q_proj|k_proj)\.weight", ("gain", 3.0)),
]


def key_kinds(model: nn.Module) -> "OrderedDict[str, str]":
    """Kind of each state-dict key: weight, norm, bias, embedding, param or buffer."""
    kinds = OrderedDict()
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, _ in module.named_parameters(recurse=False):
            if name == "bias":
                kind = "bias"
            elif name == "weight" and isinstance(module, (nn.LayerNorm, LayerNorm2d)):
                kind = "norm"
            elif name == "weight" and isinstance(module, nn.Embedding):
                kind = "embedding"
            elif name == "weight":
                kind = "weight"
            else:
                kind = "param"
            kinds[prefix + name] = kind
        for name in module._buffers:
            if name not in module._non_persistent_buffers_set:
                kinds[prefix + name] = "buffer"
    return kinds


def _fan_in(shape):
    return int(np.prod(shape[1:])) if len(shape) >= 2 else int(shape[0])


def _offset_scale(name, kind, shape):
    for pattern, rule in _OVERRIDES:
        if re.fullmatch(pattern, name):
            if rule[0] == "gain":
                return 0.0, rule[1] * math.sqrt(3.0 / _fan_in(shape))
            return rule
    offset, scale = _KIND_RULES[kind]
    return offset, math.sqrt(3.0 / _fan_in(shape)) if scale is None else scale


def synthetic_tensor(name: str, shape, kind: str, seed: int) -> torch.Tensor:
    n = int(np.prod(shape)) if len(shape) else 1
    rng = np.random.Generator(np.random.PCG64([int(seed), zlib.crc32(name.encode("utf-8"))]))
    u = rng.random(n, dtype=np.float64) * 2.0 - 1.0
    offset, scale = _offset_scale(name, kind, shape)
    return torch.from_numpy(np.ascontiguousarray((offset + scale * u).astype(np.float32).reshape(shape)))


def synthetic_state_dict(variant, seed: int) -> "OrderedDict[str, torch.Tensor]":
    """The deterministic state dict of a variant (a name such as 'sam2.1_hiera_t' or a ModelConfig)."""
    model = build_model(variant)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return OrderedDict((k, synthetic_tensor(k, shapes[k], kind, seed)) for k, kind in key_kinds(model).items())


def write_synthetic_checkpoint(variant, seed: int, path) -> Path:
    """Write `{"model": state_dict}` like Meta's files; reuse the file when it is already there."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"model": synthetic_state_dict(variant, seed)}, tmp)
        tmp.replace(path)
    return path
