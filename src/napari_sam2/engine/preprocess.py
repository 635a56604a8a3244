"""The model input SAM2 was trained on: RGB in [0, 1], resized to the model's square input, ImageNet-normalised;
and prompts in that input's pixels.

The one place these rules live (as `Sam.preprocess` in SAM1): the image predictor, the tracker, the frame readers
and the benchmarks all call `model_input` and `model_coords`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def model_input(rgb01: torch.Tensor, image_size: int) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> float32 (3, S, S) with S = image_size: an antialiased bilinear resize (Meta's
    `SAM2Transforms` / video frame loader; the identity when H = W = S), then (x - mean) / std per channel."""
    x = rgb01.float()
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"model_input expects an RGB tensor shaped (3, height, width); got {tuple(x.shape)}")
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(x[None], size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)[0]
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - mean) / std


def model_coords(xy: torch.Tensor, original_hw, image_size: int) -> torch.Tensor:
    """(..., 2) float32 (x, y) in original-image pixels -> the same points in model-input pixels. As Meta's
    predictors: divided by (W, H), then multiplied by S (x * (S / W) rounds differently, and the tracker reproduces
    Meta's outputs bit for bit)."""
    h, w = original_hw
    return xy / torch.tensor([w, h], device=xy.device) * image_size
