"""Training throughput of a configuration: tokens/s and MFU on random tokens.

    python -m engine.bench_train [PRESET] [--key=value ...] [--bench_steps=N]
    torchrun --nproc-per-node N -m engine.bench_train gpu

Takes the same preset and `--key=value` overrides as `engine.train` (the model, attention,
compile, batch and sequence length settings matter here; the data do not: tokens are
random), runs `bench_warmup` untimed steps (compilation) and `bench_steps` timed ones at
`seq_len` (`--bench_seq_len` picks another), and prints one line per rank group:
tokens/s over all ranks, tokens/s per GPU, MFU and peak memory.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext

import torch

from engine.train import (
    ConfigOverrideError,
    _all_reduce,
    _autocast,
    build_model,
    end_distributed,
    flex_block_mask,
    flops_per_token,
    make_optimizer,
    parse_overrides,
    peak_flops,
    pick_device,
    resolve,
    setup_distributed,
    token_nats,
)


def _pop(argv: list[str], key: str, default: int) -> int:
    for a in list(argv):
        if a.startswith(f"--{key}="):
            argv.remove(a)
            return int(a.split("=", 1)[1])
    return default


def bench_train(argv: Sequence[str]) -> int:
    """Measure and print training tokens/s and MFU of a configuration; 0 on success."""
    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__, file=sys.stderr)
        return 0
    steps = _pop(argv, "bench_steps", 10)
    warmup = _pop(argv, "bench_warmup", 3)
    seq_override = _pop(argv, "bench_seq_len", 0)
    try:
        cfg = parse_overrides(argv)
    except ConfigOverrideError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dist_info = setup_distributed(cfg.device)
    device = pick_device(cfg.device, dist_info)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    seq = seq_override or cfg.seq_len
    vocab = cfg.vocab_size
    model, args = build_model(cfg, vocab, device)
    attn, use_compile = resolve(cfg, device)
    opt = make_optimizer(model, cfg, fused=device.type == "cuda")
    rows_per_micro = max(1, cfg.micro_batch_tokens // seq)
    grad_accum = max(1, cfg.batch_tokens // (cfg.micro_batch_tokens * dist_info.world))
    fwd: torch.nn.Module = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if use_compile:
        fwd = torch.compile(fwd)
    if attn == "flex":
        for w in {args.window if args.is_local(i) else None for i in range(args.n_layer)}:
            flex_block_mask(seq, w, device)
    g = torch.Generator().manual_seed(cfg.seed + dist_info.rank)

    def step() -> None:
        for m in range(grad_accum):
            rows = torch.randint(0, vocab, (rows_per_micro, seq + 1), generator=g).to(device)
            sync = nullcontext() if (dist_info.world == 1 or m == grad_accum - 1) \
                else fwd.no_sync()
            with sync, _autocast(device, cfg):
                loss = token_nats(fwd, rows).mean()
                (loss / grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or 1e9)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = _all_reduce(time.perf_counter() - t0, dist_info, device, "max")
    tokens = steps * grad_accum * rows_per_micro * seq * dist_info.world
    tps = tokens / dt
    peak = peak_flops(device, cfg)
    mfu = tps * flops_per_token(args, seq) / (peak * dist_info.world) if peak else float("nan")
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    if dist_info.main:
        print(f"bench train: model {cfg.model}{' all_global' if cfg.all_global else ''} "
              f"{model.num_params() / 1e6:.1f}M params, seq_len {seq}, "
              f"{rows_per_micro}x{seq} tokens x {grad_accum} micro-steps x {dist_info.world} "
              f"ranks per step, attention {attn}, compile {use_compile}, device {device}"
              f"{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}")
        mfu_text = f"{mfu:.1%}" if peak else "n/a (unknown peak; --peak_tflops=...)"
        print(f"tokens/s {tps:,.0f} ({tps / dist_info.world:,.0f} per rank) | "
              f"MFU {mfu_text} | step {dt / steps * 1e3:.1f} ms | peak memory {mem:.1f} GiB")
    if dist_info.world > 1:
        end_distributed(0)
    return 0


def main() -> int:
    return bench_train(sys.argv[1:])


if __name__ == "__main__":
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    raise SystemExit(main())
