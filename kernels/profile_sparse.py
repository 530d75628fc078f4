"""One shape of the block-sparse forward, run a few times, for a profiler to attach to.

    python -m kernels.profile_sparse [-n 65536] [--head-dim 64] [--variant plain|tma|ws|poly]
    ncu --clock-control none -k regex:_sparse_fwd_kernel -s 3 -c 1 --set full \\
        python -m kernels.profile_sparse

8 q heads / 2 KV heads, bf16, the benchmark's sparse settings (`kernels.bench.SPARSE`). The
selection is made once; the attention-only call then runs `--reps` times (the first ones
compile), and the median time of the last calls is printed, so the same command tells the
profiler's kernel apart and gives a time to compare variants with.
"""

from __future__ import annotations

import argparse
import sys

import torch

from kernels.bench import HKV, HQ, SPARSE, _ms
from kernels.sparse_attention import select_blocks, sparse_attention

VARIANTS = {"plain": {}, "tma": {"tma": True}, "ws": {"tma": True, "warp_specialize": True},
            "poly": {"poly_exp": True}}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen variant; returns a process exit code."""
    ap = argparse.ArgumentParser(prog="python -m kernels.profile_sparse", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=65536)
    ap.add_argument("--head-dim", type=int, default=64, choices=[64, 128])
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="plain")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("profile_sparse needs a CUDA GPU", file=sys.stderr)
        return 2
    g = torch.Generator(device="cuda").manual_seed(args.n + args.head_dim)
    shape = (1, HQ, args.n, args.head_dim)
    q = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn((1, HKV, args.n, args.head_dim), device="cuda", dtype=torch.bfloat16,
                    generator=g)
    v = torch.randn_like(k)
    sel = select_blocks(q, k, q_start=0, **SPARSE)
    kw = VARIANTS[args.variant]

    def call() -> torch.Tensor:
        return sparse_attention(q, k, v, q_start=0, selection=sel, **SPARSE, **kw)[0]

    for _ in range(args.reps):
        call()
    torch.cuda.synchronize()
    print(f"sparse attention-only, N={args.n} D={args.head_dim} variant {args.variant}: "
          f"{_ms(call):.3f} ms ({torch.cuda.get_device_name()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
