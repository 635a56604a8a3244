"""Image features kept across clicks, passes, objects, sessions and (with a disk store) restarts.

The image encoder is the costliest step of a tracked frame (3.6 s of 7.5 s for sam2.1_hiera_t at 1024 px on two CPU
cores), and its output depends only on the model, the way it computes (device type and autocast dtype) and the
frame's model input. So features are kept under a key made of exactly those (`feature_key`): the model's
`Sam2Model.signature` (a hash of its configuration and weights), the precision and a 128-bit hash of the normalised
input tensor (which covers the data, the channels, the intensity range and the preprocessing). Whoever computes the
same frame again, in the same stack or in another, in this process or after a restart, gets the same tensors back,
and therefore the same masks, bit for bit.

A frame's entry holds the stride-16 features and the two high-resolution levels (16 MiB in float32 for a 1024-px
model, whatever the variant); their position encoding is the same for every frame and is recomputed from the model
(`Sam2Model.features_from`). Entries are kept in the dtype they were computed in (float32 on CPU and MPS), in their
memory layout (channels-last where the encoder made them so), in host memory.
"""

from __future__ import annotations

from typing import Optional

import torch
import xxhash

from .host_memory import outside_heap
from .tensor_cache import TensorCache, TensorStore

DEFAULT_MAX_BYTES = 2 << 30  # 128 frames of a 1024-px model


def feature_key(model, image: torch.Tensor) -> str:
    """The cache key of `model`'s features of `image` ((3, S, S) float32 model input): model signature, numerics
    (e.g. "cpu-float32", "cuda-bfloat16", `Sam2Model.numerics`) and the xxh3-128 hash of the input's values, shape
    and dtype."""
    data = image.detach().to("cpu", torch.float32).contiguous()
    digest = xxhash.xxh3_128(data.numpy().tobytes())
    digest.update(repr(tuple(data.shape)).encode())
    return f"{model.signature}-{model.numerics}-{digest.hexdigest()}"


class FeatureCache(TensorCache):
    """A TensorCache of frame features: entries are tuples of CPU tensors (vision, high_res_0, high_res_1) under
    `feature_key`s; `Sam2Model.cacheable` / `features_from` convert from and to FrameFeatures. `store`: e.g.
    napari_sam2.core.tensor_store.ZarrTensorStore."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, store: Optional[TensorStore] = None,
                 write_store: bool = False):
        super().__init__(max_bytes, store, write_store)


@torch.no_grad()
def encode_image(model, image: torch.Tensor, cache: Optional[FeatureCache] = None, key: Optional[str] = None,
                 to_store: Optional[bool] = None):
    """`model`'s FrameFeatures (batch of 1) of one model input `image` (3, S, S): from `cache` when it holds them
    (under `key`, default `feature_key(model, image)`), else from the image encoder (under the model's autocast),
    then kept in `cache` (and in its store with `to_store`, default the cache's `write_store`)."""
    if cache is not None:
        key = feature_key(model, image) if key is None else key
        entry = cache.get(key)
        if entry is not None:
            return model.features_from(entry)
    with model.autocast():
        # non_blocking: a frame in page-locked memory (StackFrames(pin_memory=True)) uploads while the GPU works
        features = model.encode_image(image.to(model.device, torch.float32, non_blocking=True)[None]).map(outside_heap)
    if cache is not None:
        cache.put(key, model.cacheable(features), to_store=to_store)
    return features
