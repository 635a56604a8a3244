"""SAM2's memory: the memory encoder (frame features + predicted mask -> a compact memory)
and memory attention (current frame features attend to past memories and object pointers)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import LayerNorm2d, PositionEmbeddingSine, RoPEAttention, activate_, add_residual_


class MaskDownSampler(nn.Module):
    """Strided convolutions (x stride^2 channels each) from the (B, 1, S, S) mask down to the image grid,
    (B, embed_dim, S / total_stride, S / total_stride): with 3x3, stride 2, 1024 -> 64 in 4 steps."""

    def __init__(self, *, embed_dim: int, kernel_size: int, stride: int, padding: int, total_stride: int):
        super().__init__()
        layers, c_in = [], 1
        for _ in range(int(math.log2(total_stride) // math.log2(stride))):
            c_out = c_in * stride**2
            layers += [nn.Conv2d(c_in, c_out, kernel_size, stride, padding), LayerNorm2d(c_out), nn.GELU()]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x):
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7, LayerNorm, pointwise MLP, layer scale, residual."""

    def __init__(self, dim: int, *, kernel_size: int, padding: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(activate_(self.act, self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """`num_layers` ConvNeXt blocks over (B, dim, h, w)."""

    def __init__(self, dim: int, *, num_layers: int, kernel_size: int, padding: int):
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim, kernel_size=kernel_size, padding=padding) for _ in range(num_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Frame features + a mask -> the frame's memory (B, out_dim, h, w) and its sine position encoding."""

    def __init__(self, *, in_dim: int, out_dim: int, mask_downsampler: MaskDownSampler, fuser: Fuser,
                 position_encoding: PositionEmbeddingSine):
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(self, pix_feat, mask_for_mem):
        """pix_feat (B, C, 64, 64), mask_for_mem (B, 1, 1024, 1024) already scaled -> (features, pos)."""
        masks = self.mask_downsampler(mask_for_mem)
        x = self.out_proj(self.fuser(self.pix_feat_proj(pix_feat) + masks))
        return x, self.position_encoding(x).to(x.dtype)


class MemoryAttentionLayer(nn.Module):
    """Self-attention (RoPE), cross-attention to memory (RoPE on keys except pointers), FFN."""

    def __init__(self, *, d_model: int, mem_dim: int, num_heads: int, dim_feedforward: int, rope_theta: float,
                 feat_sizes: tuple[int, int]):
        super().__init__()
        self.self_attn = RoPEAttention(d_model, num_heads, rope_theta=rope_theta, feat_sizes=feat_sizes)
        self.cross_attn_image = RoPEAttention(
            d_model, num_heads, kv_in_dim=mem_dim, rope_k_repeat=True, rope_theta=rope_theta, feat_sizes=feat_sizes
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def attend_self(self, tgt):
        """The self-attention step (its residual included): all that the layer does before it reads the memory."""
        x = self.norm1(tgt)
        return add_residual_(self.self_attn(x, x, x), tgt)

    def forward(self, tgt, memory, memory_keys, num_k_exclude_rope=0, self_attended=False):
        """memory_keys: memory + its position encoding (the same for every layer, so added once). self_attended: tgt
        is already `attend_self(tgt)` (shared by the objects tracked on a frame)."""
        if not self_attended:
            tgt = self.attend_self(tgt)
        x = self.norm2(tgt)
        tgt = add_residual_(self.cross_attn_image(x, memory_keys, memory, num_k_exclude_rope=num_k_exclude_rope), tgt)
        x = self.norm3(tgt)
        return add_residual_(self.linear2(torch.relu_(self.linear1(x))), tgt)


class MemoryAttention(nn.Module):
    """`num_layers` MemoryAttentionLayers and a final LayerNorm."""

    def __init__(self, *, d_model: int, mem_dim: int, num_layers: int, num_heads: int, dim_feedforward: int,
                 rope_theta: float, feat_sizes: tuple[int, int]):
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model=d_model, mem_dim=mem_dim, num_heads=num_heads, dim_feedforward=dim_feedforward,
                                 rope_theta=rope_theta, feat_sizes=feat_sizes)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def first_self_attention(self, curr, curr_pos):
        """The first layer's self-attention on a frame: it reads the frame alone, not the memory, so objects tracked
        on one frame share it (`forward(..., first=)`). curr, curr_pos (B, HW, C) -> (B, HW, C)."""
        return self.layers[0].attend_self(curr + 0.1 * curr_pos)

    def forward(self, curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=0, first=None):
        """All inputs batch first: curr (B, HW, C), memory (B, M, mem_dim); the last
        `num_obj_ptr_tokens` memory tokens are object pointers (no RoPE). first: `first_self_attention(curr,
        curr_pos)` when already computed, batch 1 or B (the same values as computing it here)."""
        memory_keys = memory + memory_pos
        if first is None:
            first = self.first_self_attention(curr, curr_pos)
        x = first.expand(memory.shape[0], -1, -1)
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, memory_keys, num_k_exclude_rope=num_obj_ptr_tokens, self_attended=i == 0)
        return self.norm(x)
