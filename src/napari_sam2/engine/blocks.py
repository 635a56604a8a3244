"""Building blocks shared by the SAM2 modules: MLPs, norms, attention, position encodings.

Module and attribute names follow the official checkpoints' key names, so that a
checkpoint's state_dict loads strictly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """`num_layers` linear layers with an activation between them (keys `layers.i`)."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers, activation=nn.ReLU, sigmoid_output=False):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x):
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = activate_(self.act, x)
        return torch.sigmoid(x) if self.sigmoid_output else x


# In-place variants: a frame at 1024 px allocates gigabytes of transient buffers on CPU, and each buffer saved
# is time (fresh pages are zero-filled) and a smaller, steadier peak. Callers pass only buffers they own.
def activate_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """act(x), computed in place for ReLU and exact GELU (the same kernel, so the same bits)."""
    if isinstance(act, nn.ReLU):
        return torch.relu_(x)
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return torch.ops.aten.gelu_(x)
    return act(x)


def add_residual_(y: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """residual + y, written into y when it can hold the result (addition commutes: the same bits).

    Only where y has the residual's memory layout: `residual + y` takes the residual's layout, and the official
    model relies on that (Hiera's first stage stays in the patch embedding's NCHW layout, and the 1x1 convolution
    of the FPN rounds differently on another layout)."""
    if (y.shape == residual.shape and y.dtype == torch.promote_types(y.dtype, residual.dtype) and y.is_contiguous()
            and _same_layout(y, residual)):
        return y.add_(residual)
    return residual + y


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    return all(sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride()) if n > 1)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x):
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # channels-last memory: the channels of a pixel lie together, a plain LayerNorm over the last axis of the
            # NHWC view (one fused pass, the output channels-last too); the same value up to float rounding
            nhwc = x.permute(0, 2, 3, 1)
            return F.layer_norm(nhwc, nhwc.shape[-1:], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def _split_heads(x, num_heads):
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x):
    b, h, n, c = x.shape
    return x.transpose(1, 2).reshape(b, n, h * c)


class Attention(nn.Module):
    """Multi-head attention with optional down-projection (SAM's decoder attention).

    Runs on `scaled_dot_product_attention`, which picks fused kernels on CUDA.
    """

    def __init__(self, embedding_dim, num_heads, downsample_rate=1, kv_in_dim=None):
        super().__init__()
        kv_in_dim = kv_in_dim or embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _project(self, q, k, v, projected=None):
        projected = projected or {}
        q = _split_heads(projected["q"] if "q" in projected else self.q_proj(q), self.num_heads)
        k = _split_heads(projected["k"] if "k" in projected else self.k_proj(k), self.num_heads)
        v = _split_heads(projected["v"] if "v" in projected else self.v_proj(v), self.num_heads)
        return q, k, v

    def forward(self, q, k, v, projected=None):
        """projected: {"q" / "k" / "v": that input already through its projection} (computed once, reused); the
        input itself is then not read."""
        q, k, v = self._project(q, k, v, projected)
        if q.device.type == "cpu" and q.dtype == torch.float32 and k.shape[-2] <= FEW_KEYS < q.shape[-2]:
            return self.out_proj(attention_to_few_keys(q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(_merge_heads(out))


# Up to this many keys (the decoder's prompt tokens: 8 for a click), a CPU attends keys-major in float32 (see below;
# autocast's bfloat16 keeps the fused kernel, which accumulates in float32).
FEW_KEYS = 64


def attention_to_few_keys(q, k, v):
    """softmax(q k^T / sqrt(d)) v for many queries and few keys, q (B, heads, Lq, d), k and v (B, heads, Lk, d) ->
    (B, Lq, heads * d), heads merged.

    The decoder's image->token attention (4096 image tokens to about 8 prompt tokens): fused kernels and the
    query-major product walk rows of 8 scores (3.3 ms at 1024 px on 2 CPU threads); with the scores laid out keys
    by queries, the softmax over the key axis and both products run along rows of 4096 (1.2 ms). The same value
    up to float rounding."""
    scores = (k * k.shape[-1] ** -0.5) @ q.transpose(-1, -2)  # (B, heads, Lk, Lq)
    out = v.transpose(-1, -2) @ torch.softmax(scores, dim=-2)  # (B, heads, d, Lq)
    b, heads, d, n = out.shape
    return out.reshape(b, heads * d, n).transpose(1, 2)


def axial_rope_angles(dim: int, end_x: int, end_y: int, theta: float = 10000.0):
    """Rotation angles (end_x*end_y, dim//2) of 2D axial RoPE: first half x, second half y."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = (t % end_x).float()
    t_y = torch.div(t, end_x, rounding_mode="floor").float()
    return torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)


def apply_rope(x, cos, sin, repeat: int = 1, *, inplace: bool = False):
    """Rotate consecutive channel pairs of x (..., repeat * n, dim) by angles given as cos/sin (n, dim//2), the same
    rotations for each of the `repeat` runs of n along the token axis, in float32 (under bf16 too, as Meta's code does).

    A complex product, as in Meta's code (the same bits as the real arithmetic, in one kernel: 4x quicker on CPU);
    on MPS, where complex tensors are not fully supported, and in compiled code, which generates no kernels for
    complex operators but fuses the real ones into one, the real arithmetic. The complex product broadcasts the
    rotations over the runs (never repeated in memory); compiled graphs repeat them, so that the graph does not
    depend on the number of runs. inplace: rotate a float32 x in its own memory where the complex product runs (x
    is returned; callers pass only buffers they own), else a new tensor.
    """
    dtype = x.dtype
    if x.device.type == "mps" or torch.compiler.is_compiling():
        pairs = x.float().unflatten(-1, (-1, 2))
        return rotate_pairs_real(pairs, cos.repeat(repeat, 1), sin.repeat(repeat, 1)).flatten(-2).to(dtype)
    pairs = x.float().unflatten(-2, (repeat, -1)).unflatten(-1, (-1, 2))  # (..., repeat, n, dim//2, 2)
    rotation = torch.complex(cos, sin)
    if inplace and dtype == torch.float32:
        torch.view_as_complex(pairs).mul_(rotation)
        return x
    return torch.view_as_real(torch.view_as_complex(pairs) * rotation).flatten(-2).flatten(-3, -2).to(dtype)


def rotate_pairs_real(pairs, cos, sin):
    """(re, im) pairs (..., n, k, 2) rotated by cos/sin (n, k) with real arithmetic: (re cos - im sin, re sin + im cos),
    the complex product's formula."""
    re, im = pairs[..., 0], pairs[..., 1]
    return torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1)


class RoPEAttention(Attention):
    """Attention with 2D rotary position encoding on queries and keys (memory attention).

    With `rope_k_repeat` the keys hold several frames' worth of the query grid and the
    rotation repeats per frame; the last `num_k_exclude_rope` keys (object pointers)
    get no rotation.
    """

    def __init__(self, embedding_dim: int, num_heads: int, *, rope_theta: float, feat_sizes: tuple[int, int],
                 rope_k_repeat: bool = False, kv_in_dim: int | None = None):
        """rope_theta: the RoPE base; feat_sizes: (end_x, end_y) of the query grid the rotations are built for
        (rebuilt for a square grid of another size at the first call that needs it)."""
        super().__init__(embedding_dim, num_heads, kv_in_dim=kv_in_dim)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self._set_grid(*feat_sizes)

    def _set_grid(self, end_x, end_y):
        angles = axial_rope_angles(self.internal_dim // self.num_heads, end_x, end_y, self.rope_theta)
        # cos and sin as the official code gets them (torch.polar): torch.cos / torch.sin differ in the last bit
        rotation = torch.polar(torch.ones_like(angles), angles)
        self.register_buffer("rope_cos", rotation.real.contiguous(), persistent=False)
        self.register_buffer("rope_sin", rotation.imag.contiguous(), persistent=False)

    def forward(self, q, k, v, num_k_exclude_rope: int = 0):
        q = _split_heads(self.q_proj(q), self.num_heads)
        k = _split_heads(self.k_proj(k), self.num_heads)
        late_values = _attends_raw_values(q, v)
        v = v.unsqueeze(1) if late_values else _split_heads(self.v_proj(v), self.num_heads)
        n_q = q.shape[-2]
        if self.rope_cos.shape[0] != n_q:
            side = math.isqrt(n_q)
            self._set_grid(side, side)
        cos, sin = self.rope_cos.to(q.device), self.rope_sin.to(q.device)
        q = apply_rope(q, cos, sin, inplace=True)  # both projections are fresh buffers of this call
        num_k_rope = k.shape[-2] - num_k_exclude_rope
        if num_k_rope > 0:
            repeat = num_k_rope // n_q if self.rope_k_repeat else 1
            keys = k[:, :, :num_k_rope]
            rotated = apply_rope(keys, cos, sin, repeat, inplace=True)
            if rotated is not keys:  # rotated into a new tensor (bfloat16, MPS, compiled graphs)
                k = torch.cat([rotated, k[:, :, num_k_rope:]], dim=2)
        if late_values:
            out = _project_heads(attention_by_tiles(q, k, v), self.v_proj, self.num_heads)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(_merge_heads(out))


def _attends_raw_values(q: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether to attend to the unprojected values (B, M, kv_in_dim) and project afterwards: exact, since softmax rows
    sum to 1 (P (V W^T + b) = (P V) W^T + b), and cheaper where kv_in_dim is below the head width (the memory
    attention's cross-attention: 64 against 256, a 4x smaller second product). Float32 on the CPU only, where the
    matrix products of attention_by_tiles outrun the fused kernel (benchmarks/attention_kernels.py); CUDA,
    MPS, autocast and compiled graphs keep the fused kernel."""
    return (q.device.type == "cpu" and q.dtype == v.dtype == torch.float32 and v.shape[-1] < q.shape[-1]
            and not torch.compiler.is_compiling())


def attention_by_tiles(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_block: int = 1024,
                       key_block: int = 512) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, as `scaled_dot_product_attention` (no mask, no dropout), in tiles of `query_block`
    queries by `key_block` keys: matrix products and an online softmax, as flash attention computes it (Dao et al.,
    2022) and as PyTorch's fused CPU kernel does. A tile's scores (2 MB) stay in the CPU's cache; a whole row of
    scores (4096 queries to 7 x 4096 memory keys: 470 MB a call) would go to memory and back between the products.

    For each block of queries and each tile of keys: scores s = q k^T, the running row maximum m grows to cover s,
    p = exp(s - m), and the running sums l = sum(p) and o = p v are rescaled by exp(m_old - m) before p's share is
    added; the result is o / l. The same value as the fused kernel within float32 rounding.

    q (B, H, N, d), k (B, H, M, d), v (B, 1 or H, M, c) -> (B, H, N, c). The 1 / sqrt(d) scale is applied to q (a
    power of two for SAM2's head widths: the same bits as scaling the scores)."""
    b, h, n, d = q.shape
    m_keys = k.shape[-2]
    q = q * d**-0.5
    out = q.new_empty(b, h, n, v.shape[-1])
    tile = q.new_empty(min(query_block, n), min(key_block, m_keys))
    for i in range(b):
        for j in range(h):
            keys_t, values = k[i, j].transpose(0, 1), v[i, j if v.shape[1] > 1 else 0]
            for start in range(0, n, query_block):
                rows = min(query_block, n - start)
                queries, acc = q[i, j, start:start + rows], out[i, j, start:start + rows].zero_()
                row_max, row_sum = q.new_full((rows, 1), -math.inf), q.new_zeros(rows, 1)
                for first in range(0, m_keys, key_block):
                    width = min(key_block, m_keys - first)
                    scores = torch.mm(queries, keys_t[:, first:first + width], out=tile[:rows, :width])
                    new_max = torch.maximum(row_max, scores.amax(-1, keepdim=True))
                    rescale = (row_max - new_max).exp_()
                    row_sum.mul_(rescale).add_(scores.sub_(new_max).exp_().sum(-1, keepdim=True))
                    acc.mul_(rescale).addmm_(scores, values[first:first + width])
                    row_max = new_max
                acc.div_(row_sum)
    return out


def _project_heads(x: torch.Tensor, proj: nn.Linear, num_heads: int) -> torch.Tensor:
    """A projection applied after attention to values attended unprojected: x (B, H, N, in) -> (B, H, N, dim / H),
    head h taking its own rows of proj (as _split_heads(proj(v)) would give it)."""
    if num_heads == 1:
        return proj(x)
    weight = proj.weight.view(num_heads, -1, proj.in_features)
    return torch.matmul(x, weight.transpose(1, 2)) + proj.bias.view(num_heads, 1, -1)


class PositionEmbeddingSine(nn.Module):
    """The DETR-style normalised sine/cosine position encoding of a feature map (NCHW)."""

    def __init__(self, num_pos_feats: int, *, temperature: int):
        super().__init__()
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.scale = 2 * math.pi
        self._cache: dict = {}

    def _encode(self, h, w, device):
        y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=device).view(1, -1, 1).repeat(1, 1, w)
        x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=device).view(1, 1, -1).repeat(1, h, 1)
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def forward(self, x):
        if torch.compiler.is_compiling():  # a graph holds no cache: it computes its constants itself
            return self._encode(x.shape[-2], x.shape[-1], x.device).expand(x.shape[0], -1, -1, -1).to(x.dtype)
        key = (x.shape[-2], x.shape[-1], x.device)
        if key not in self._cache:
            self._cache[key] = self._encode(x.shape[-2], x.shape[-1], x.device)
        return self._cache[key].expand(x.shape[0], -1, -1, -1).to(x.dtype)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of (x, y) in [0, 1] (the prompt encoder's position encoding)."""

    def __init__(self, num_pos_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    def _pe_encoding(self, coords):
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size):
        h, w = size
        grid = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device, dtype=torch.float32)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        pe = self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1))
        return pe.permute(2, 0, 1)

    def forward_with_coords(self, coords, image_size):
        """coords (B, N, 2) as (x, y) in pixels of an image of size (H, W)."""
        coords = coords.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._pe_encoding(coords.to(torch.float))


def sine_pe_1d(positions, dim: int, temperature: float = 10000.0):
    """Sine/cosine encoding (N, dim) of scalar positions (N,)."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=positions.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    pe = positions.unsqueeze(-1) / dim_t
    return torch.cat([pe.sin(), pe.cos()], dim=-1)
