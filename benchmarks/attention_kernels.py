"""The memory attention's cross-attention on a CPU, where most of a tracked frame's time goes: one 64x64 frame
(4096 queries, head dim 256, one head) attending to 1 and 7 memory frames (+ 64 object-pointer tokens), timed with
PyTorch's fused kernel (`scaled_dot_product_attention`, Meta's call, and the engine's on GPUs and under autocast),
against exact rewrites: explicit matmul + softmax + matmul in query blocks, and values kept at the 64-dim memory width
with the value projection applied after attention (softmax rows sum to 1, so P (M W^T + b) = (P M) W^T + b). The
engine's CPU float32 path is the last: `blocks.attention_by_tiles` (query x key tiles, online softmax) on the
unprojected memory.

    python benchmarks/attention_kernels.py [--threads 2] [--repeats 3]

Prints JSON: seconds per call of each, GFLOP/s of the fused kernel, and each rewrite's max deviation from it.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from napari_sam2.engine.blocks import attention_by_tiles

N_QUERIES, HEAD_DIM, MEM_DIM, POINTER_TOKENS = 4096, 256, 64, 64


def timed(fn, repeats):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def blocked(q, k, v, block=1024):
    out = torch.empty(*q.shape[:-1], v.shape[-1])
    kt = k.transpose(-1, -2) * HEAD_DIM**-0.5
    for s in range(0, q.shape[-2], block):
        torch.matmul(torch.matmul(q[..., s:s + block, :], kt).softmax(-1), v, out=out[..., s:s + block, :])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    weight, bias = torch.randn(HEAD_DIM, MEM_DIM) * 0.1, torch.randn(HEAD_DIM)
    report = {"threads": args.threads, "torch": torch.__version__, "cases": {}}
    for n_memories in (1, 7):
        n_keys = n_memories * N_QUERIES + POINTER_TOKENS
        q, k = torch.randn(1, 1, N_QUERIES, HEAD_DIM), torch.randn(1, 1, n_keys, HEAD_DIM)
        memory = torch.randn(1, 1, n_keys, MEM_DIM)
        v = F.linear(memory, weight, bias)
        fused = F.scaled_dot_product_attention(q, k, v)
        rewrites = {
            "blocked_matmul": lambda: blocked(q, k, v),
            "fused_values_at_mem_dim": lambda: F.linear(F.scaled_dot_product_attention(q, k, memory), weight, bias),
            "blocked_values_at_mem_dim": lambda: F.linear(blocked(q, k, memory), weight, bias),
            # whole rows of scores, 256 queries at a time: the engine's path before its query x key tiles
            "rows_256_values_at_mem_dim": lambda: F.linear(blocked(q, k, memory, 256), weight, bias),
            "engine_values_at_mem_dim": lambda: F.linear(attention_by_tiles(q, k, memory), weight, bias),
        }
        seconds = timed(lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)
        case = {"keys": n_keys, "fused_s": round(seconds, 4),
                "fused_gflop_per_s": round(4 * N_QUERIES * n_keys * HEAD_DIM / seconds / 1e9, 1)}
        for name, fn in rewrites.items():
            case[f"{name}_s"] = round(timed(fn, args.repeats), 4)
            case[f"{name}_max_abs_deviation"] = float((fn() - fused).abs().max())
        report["cases"][f"{n_memories}_memories"] = case
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
