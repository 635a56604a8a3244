"""Mask post-processing of the video model: small-hole filling and non-overlapping objects.

Hole filling is what Meta's CUDA extension does on the GPU (and silently skips without
it); here it runs everywhere with scikit-image's connected-component labelling.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.measure import label as connected_components

HOLE_FILL_VALUE = 0.1  # a small positive logit: the pixel becomes foreground


def fill_holes(mask_logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Set every 8-connected component of pixels with logit <= 0 whose area is <= max_area
    (anywhere, also touching the border) to a small positive logit. mask_logits (B, 1, h, w)."""
    if max_area <= 0:
        return mask_logits
    background = (mask_logits <= 0).cpu().numpy()
    holes = np.zeros_like(background)
    for b in range(background.shape[0]):
        comps = connected_components(background[b, 0], connectivity=2)
        if comps.max() == 0:
            continue
        areas = np.bincount(comps.ravel())
        small = areas <= max_area
        small[0] = False  # label 0 is the foreground
        holes[b, 0] = small[comps]
    if not holes.any():
        return mask_logits
    holes_t = torch.from_numpy(holes).to(mask_logits.device)
    return torch.where(holes_t, torch.tensor(HOLE_FILL_VALUE, dtype=mask_logits.dtype, device=mask_logits.device), mask_logits)


def non_overlapping(mask_logits: torch.Tensor) -> torch.Tensor:
    """Per pixel, only the object with the highest logit keeps it; the others are pushed to <= -10.
    mask_logits (n_obj, ...)."""
    if mask_logits.shape[0] <= 1:
        return mask_logits
    winner = torch.argmax(mask_logits, dim=0, keepdim=True)
    index = torch.arange(mask_logits.shape[0], device=mask_logits.device).view(-1, *([1] * (mask_logits.dim() - 1)))
    return torch.where(winner == index, mask_logits, torch.clamp(mask_logits, max=-10.0))
