"""Hiera: the hierarchical vision transformer that is SAM2's image trunk.

Four stages; each later stage halves the resolution by max-pooling the queries of its
first block and doubles channels and heads. Most blocks attend within windows, a
few attend globally. The position embedding is a coarse background embedding,
interpolated to the token grid, plus a tiled window embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import MLP, add_residual_
from .configs import HieraConfig
from .devices import interpolate


def _pool_nhwc(x, pool):
    """Apply a 2D pooling module to an (B, H, W, C) tensor."""
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def window_partition(x, window):
    """(B, H, W, C) -> (B * nWindows, window, window, C), zero-padding H, W up to multiples."""
    b, h, w, c = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows, window, padded_hw, hw):
    """Inverse of window_partition, cropping the padding away."""
    hp, wp = padded_hw
    b = windows.shape[0] // (hp * wp // window // window)
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, : hw[0], : hw[1], :]


class MultiScaleAttention(nn.Module):
    """Self-attention over (B, H, W, C) tokens; with `q_pool` the queries are pooled (the output grid shrinks)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x):
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = torch.unbind(qkv, 2)
        if self.q_pool is not None:
            q = _pool_nhwc(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)


class MultiScaleBlock(nn.Module):
    """One Hiera block: (windowed or global) attention and an MLP, each with a residual; (B, H, W, C) in and out."""

    def __init__(self, *, dim: int, dim_out: int, num_heads: int, window_size: int, q_stride: tuple[int, int] | None,
                 mlp_ratio: float):
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool=self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x):
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = _pool_nhwc(self.proj(x), self.pool)
        window = self.window_size
        if window > 0:
            hw = x.shape[1:3]
            x, padded_hw = window_partition(x, window)
        x = self.attn(x)
        if window > 0:
            if self.q_stride:
                # queries were pooled inside each window: windows shrink, the grid is the shortcut's
                window = window // self.q_stride[0]
                hw = shortcut.shape[1:3]
                padded_hw = tuple(s + (window - s % window) % window for s in hw)
            x = window_unpartition(x, window, padded_hw, hw)
        x = add_residual_(x, shortcut)  # x is the attention's fresh output
        return add_residual_(self.mlp(self.norm2(x)), x)


class PatchEmbed(nn.Module):
    """A strided convolution from the (B, 3, S, S) image to (B, S / stride, S / stride, embed_dim) tokens."""

    def __init__(self, embed_dim: int, *, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)  # B, H, W, C


def block_layout(cfg: HieraConfig) -> list[dict]:
    """Per block: the keyword arguments of its MultiScaleBlock (dims, heads, window size, query stride, MLP ratio)."""
    layout, dim, heads, stage = [], cfg.embed_dim, cfg.num_heads, 0
    stage_ends = cfg.stage_ends
    for i in range(cfg.depth):
        dim_out = dim
        # the window size of a stage's first block is still the previous stage's
        window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
        if i - 1 in stage_ends:
            dim_out = int(dim * cfg.dim_mul)
            heads = int(heads * cfg.head_mul)
            stage += 1
        q_stride = cfg.q_stride if i in cfg.q_pool_blocks else None
        layout.append(dict(dim=dim, dim_out=dim_out, num_heads=heads, window_size=window, q_stride=q_stride,
                           mlp_ratio=cfg.mlp_ratio))
        dim = dim_out
    return layout


class Hiera(nn.Module):
    """The trunk, built from a HieraConfig (which holds all its hyper-parameters)."""

    def __init__(self, cfg: HieraConfig):
        super().__init__()
        self.stage_ends = cfg.stage_ends
        self.patch_embed = PatchEmbed(cfg.embed_dim, kernel_size=cfg.patch_kernel_size, stride=cfg.patch_stride,
                                      padding=cfg.patch_padding)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        w0 = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, w0, w0))
        self.blocks = nn.ModuleList(MultiScaleBlock(**spec) for spec in block_layout(cfg))
        self._pos_cache = None  # (key, position embedding) of the last grid size

    def _pos_embed(self, hw):
        # the same for every frame: kept per grid size and weights (at 1024 px on CPU it costs ~80 ms and
        # three full-resolution buffers per frame); not kept where autograd would need its graph, nor in compiled
        # code (a graph cannot hold a cache keyed by data pointers; on a GPU the computation is a few microseconds)
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._compute_pos_embed(hw)
        weights = (self.pos_embed, self.pos_embed_window)
        key = (tuple(hw), torch.is_autocast_enabled(self.pos_embed.device.type),
               *((w.device, w.dtype, w.data_ptr(), w._version) for w in weights))
        if self._pos_cache is None or self._pos_cache[0] != key:
            self._pos_cache = (key, self._compute_pos_embed(hw))
        return self._pos_cache[1]

    def _compute_pos_embed(self, hw):
        pos = interpolate(self.pos_embed, size=hw, mode="bicubic")
        reps = [p // w for p, w in zip(pos.shape, self.pos_embed_window.shape)]
        pos = pos + self.pos_embed_window.tile(reps)
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, S, S) normalised image -> features (B, C_i, S / 4 / 2^i, S / 4 / 2^i) at the end of each stage
        i = 0..3, highest resolution first."""
        x = self.patch_embed(x)
        x = x + self._pos_embed(x.shape[1:3])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
