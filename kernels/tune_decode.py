"""Sweep the decode kernel's launch settings on the GPU (splits, key block, warps).

    python -m kernels.tune_decode [-n 65536 131072] [--head-dims 64 128]

One query, 8 q heads / 2 KV heads, bf16, q_start = N - 1; each setting is timed as one CUDA
graph replay with the L2 flushed before it (as `kernels.bench` times decode), and printed
with its share of the measured copy bandwidth for the K/V bytes read. The heuristic's own
choice (`decode_splits`, block 64, 4 warps) is marked, so a better setting shows up as a
ratio against it.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from kernels.bench import HKV, HQ, _graph, _graph_ms, cold_ms, copy_bandwidth
from kernels.decode_attention import decode_attention, decode_splits


def sweep(n: int, d: int, bw: float) -> list[tuple[float, int, int, int]]:
    """[(ms, splits, block_n, warps)] for every setting, fastest first."""
    g = torch.Generator(device="cuda").manual_seed(n + d)
    q = torch.randn(1, HQ, 1, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, HKV, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, HKV, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    out = torch.empty_like(q)
    nbytes = 2 * k.numel() * k.element_size()
    default = (decode_splits(-(-n // 64), HKV, q.device), 64, 4)
    results = []
    for block_n in (32, 64, 128):
        for warps in (2, 4, 8):
            for splits in sorted({66, 132, 264, 528, 1056, default[0]}):
                if splits * block_n > n:
                    continue

                def call(s=splits, b=block_n, w=warps):
                    return decode_attention(q, k, v, q_start=n - 1, n_splits=s, block_n=b,
                                            num_warps=w, out=out)

                ms = _graph_ms(call)
                results.append((ms, splits, block_n, warps))
    results.sort()
    base = next(r[0] for r in results if r[1:] == default)
    print(f"N={n} D={d}: heuristic {default} {base * 1e3:.1f} us "
          f"({nbytes / (base * 1e-3) / bw:.0%} of copy)", flush=True)
    for ms, s, b, w in results[:8]:
        print(f"  splits {s:5d} block {b:4d} warps {w}: {ms * 1e3:6.1f} us "
              f"({nbytes / (ms * 1e-3) / bw:.0%} of copy, {base / ms:.2f}x heuristic)",
              flush=True)
    return results


def flush_compare(n: int, d: int, bw: float) -> None:
    """Ours, SDPA and a plain read of the same K/V bytes, each as a CUDA graph replay, timed
    after a writing L2 flush (triton's) and after a reading one."""
    g = torch.Generator(device="cuda").manual_seed(n + d)
    q = torch.randn(1, HQ, 1, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, HKV, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, HKV, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    out = torch.empty_like(q)
    tot = torch.empty((), dtype=torch.float32, device="cuda")
    nbytes = 2 * k.numel() * k.element_size()
    calls = {
        "ours": lambda: decode_attention(q, k, v, q_start=n - 1, out=out),
        "SDPA enable_gqa": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
        "read K and V (sum)": lambda: torch.add(k.sum(dtype=torch.float32),
                                                 v.sum(dtype=torch.float32), out=tot),
    }
    for name, fn in calls.items():
        graph = _graph(fn)
        for flush in ("zero", "read"):
            ms = cold_ms(graph.replay, flush)
            print(f"N={n} D={d} {name:20s} flush {flush}: {ms * 1e3:6.1f} us "
                  f"({nbytes / (ms * 1e-3) / bw:.0%} of copy)", flush=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, nargs="+", default=[65536, 131072])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--flush-compare", action="store_true",
                    help="only time ours, SDPA and a plain read after both kinds of L2 flush")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("the decode sweep needs a CUDA GPU", file=sys.stderr)
        return 2
    bw = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: copy {bw / 1e12:.2f} TB/s", flush=True)
    for d in args.head_dims:
        for n in args.n:
            if args.flush_compare:
                flush_compare(n, d, bw)
            else:
                sweep(n, d, bw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
