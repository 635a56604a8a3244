"""Mask post-processing of the video model: small-hole filling and non-overlapping objects.

Hole filling is what Meta's CUDA extension does on the GPU (and silently skips without it); here it runs on any
device in PyTorch, without a copy to the host or a synchronisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HOLE_FILL_VALUE = 0.1  # a small positive logit: the pixel becomes foreground


def fill_holes(mask_logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Set every 8-connected component of pixels with logit <= 0 whose area is <= max_area (anywhere, also touching
    the border) to a small positive logit (Meta's `fill_holes_in_mask_scores`). mask_logits (B, 1, h, w) float.

    Computed on the tensor's device in max_area - 1 steps of a 3 x 3 minimum, not by labelling the components: a
    component of at most max_area pixels is at most max_area - 1 steps across, so after these steps all its pixels
    carry the lowest pixel index in it, and no other pixel does. A group of pixels sharing an index is then a whole
    component exactly when no neighbouring background pixel carries another index (a larger component is connected
    beyond any of its groups), and a hole when it is whole and has at most max_area pixels."""
    if max_area <= 0:
        return mask_logits
    b, _, h, w = mask_logits.shape
    background = mask_logits <= 0
    # python scalars, not tensors made here: a copy to a GPU would wait for the work before it
    inf = float("inf")
    # float32 holds every index of a grid under 2^24 pixels exactly (256 x 256 here)
    index = torch.arange(h * w, dtype=torch.float32, device=mask_logits.device).view(1, 1, h, w)
    labels = torch.where(background, index, inf)
    for _ in range(max_area - 1):
        labels = torch.where(background, _around(labels, torch.minimum, inf), inf)
    lowest_around = _around(labels, torch.minimum, inf)
    highest_around = _around(torch.where(background, labels, -inf), torch.maximum, -inf)
    open_edge = background & ((lowest_around != labels) | (highest_around != labels))
    # per (image, index) group: its size and whether any of its pixels touches another group
    bins = h * w + 1  # the last bin takes the foreground
    group = torch.where(background, labels, float(h * w)).long()
    group = (group + torch.arange(b, device=labels.device).view(b, 1, 1, 1) * bins).flatten()
    size = torch.zeros(b * bins, dtype=torch.int32, device=labels.device).index_add_(
        0, group, torch.ones_like(group, dtype=torch.int32))
    open_edges = torch.zeros(b * bins, dtype=torch.int32, device=labels.device).index_add_(
        0, group, open_edge.flatten().int())
    holes = background & ((size[group] <= max_area) & (open_edges[group] == 0)).view(b, 1, h, w)
    return torch.where(holes, HOLE_FILL_VALUE, mask_logits)


def _around(x: torch.Tensor, reduce, pad: float) -> torch.Tensor:
    """`reduce` (torch.minimum or torch.maximum) over each pixel's 3 x 3 neighbourhood of x (B, 1, h, w), beyond the
    border `pad`: along rows, then along columns (on a CPU 10x quicker than max_pool2d, which also finds indices)."""
    x = F.pad(x, (1, 1, 1, 1), value=pad)
    x = reduce(reduce(x[..., :-2], x[..., 1:-1]), x[..., 2:])
    return reduce(reduce(x[..., :-2, :], x[..., 1:-1, :]), x[..., 2:, :])


def non_overlapping(mask_logits: torch.Tensor) -> torch.Tensor:
    """Per pixel, only the object with the highest logit keeps it; the others are pushed to <= -10.
    mask_logits (n_obj, ...)."""
    if mask_logits.shape[0] <= 1:
        return mask_logits
    winner = torch.argmax(mask_logits, dim=0, keepdim=True)
    index = torch.arange(mask_logits.shape[0], device=mask_logits.device).view(-1, *([1] * (mask_logits.dim() - 1)))
    return torch.where(winner == index, mask_logits, torch.clamp(mask_logits, max=-10.0))
