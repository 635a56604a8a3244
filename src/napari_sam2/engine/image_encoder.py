"""Image encoder: the Hiera trunk followed by an FPN neck with sine position encodings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import PositionEmbeddingSine


class _LateralConv(nn.Module):
    def __init__(self, in_dim, d_model):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, d_model, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class FpnNeck(nn.Module):
    """1x1 lateral convolutions, plus nearest-upsampled top-down features on some levels."""

    def __init__(self, *, d_model: int, backbone_channel_list: list[int], fpn_top_down_levels: tuple[int, ...],
                 position_encoding: PositionEmbeddingSine):
        """backbone_channel_list: the trunk's channels per stage, lowest resolution first."""
        super().__init__()
        self.convs = nn.ModuleList(_LateralConv(dim, d_model) for dim in backbone_channel_list)
        self.position_encoding = position_encoding
        self.fpn_top_down_levels = list(fpn_top_down_levels)

    def forward(self, xs):
        n = len(self.convs) - 1
        out, pos = [None] * len(xs), [None] * len(xs)
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                top_down = F.interpolate(prev.to(torch.float32), scale_factor=2.0, mode="nearest")
                prev = lateral + top_down
            else:
                prev = lateral
            out[i] = prev
            pos[i] = self.position_encoding(prev).to(prev.dtype)
        return out, pos


class ImageEncoder(nn.Module):
    """The trunk (Hiera) and the FPN neck; `scalp` lowest-resolution levels are dropped."""

    def __init__(self, *, trunk: nn.Module, neck: FpnNeck, scalp: int):
        super().__init__()
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, image):
        """image (B, 3, S, S) normalised -> dict of FPN features and their position encodings.

        `backbone_fpn` holds 3 levels (strides 4, 8, 16), highest resolution first;
        `vision_features` is the stride-16 level.
        """
        features, pos = self.neck(self.trunk(image))
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}
