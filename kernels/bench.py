"""Benchmark of the attention kernels against their peers, measured in the same run (GPU only).

`python -m kernels.bench` (also `hybrid-lsp bench kernels`) prints, for N tokens, 8 query / 2 KV
heads, bf16: time, TFLOP/s of useful work and the ratio against torch SDPA (dense causal, flash
backend) and compiled FlexAttention with the same mask; decode time and GB/s against SDPA with
`enable_gqa` and against the card's measured copy bandwidth. The peer figures of
shared/docs/background.md are re-measured and a deviation over 15% is flagged. Results, with the
GPU name, replace the kernels section of docs/BENCHMARKS.md.

FLOPs (forward, useful work only): 4 * D * Hq * (visible query-key pairs); dense causal has
N(N+1)/2 pairs, a window W about N*W - W(W-1)/2, the sparse mode what its block table selects.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

# Peer figures from shared/docs/background.md (H100 80GB HBM3, torch 2.11, bf16, head_dim 64).
BACKGROUND_MS = {
    "sdpa_causal": {8192: 0.196, 32768: 2.53, 65536: 9.70, 131072: 38.3},
    "flex_window": {8192: 0.070, 32768: 0.243, 65536: 0.470, 131072: 0.939},
    "flex_sparse": {8192: 0.196, 32768: 0.478, 65536: 0.846, 131072: 1.52},
    "sdpa_decode": {8192: 0.0238, 32768: 0.0233, 65536: 0.0241, 131072: 0.0321},
}
TARGETS = {"local_vs_flex": 1.3, "sparse_ms_64k": 0.65, "sparse_vs_flex": 1.3,
           "sparse_vs_sdpa": 14.0, "decode_copy_share": 0.75}
WINDOW = 1024
#: Global layers (distinct KV caches) in the decode-step measurement.
STEP_LAYERS = 4
SPARSE = dict(block=128, top_k=8, n_local=2, sink=1)
HQ, HKV = 8, 2
BEGIN, END = "<!-- kernels-bench:begin -->", "<!-- kernels-bench:end -->"


def _ms(fn: Callable[[], object]) -> float:
    """Median time in ms over CUDA events (triton's do_bench)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _graph(fn: Callable[[], object]) -> torch.cuda.CUDAGraph:
    """`fn` captured in a CUDA graph (warmed up on a side stream first, as torch requires)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g


def _graph_ms(fn: Callable[[], object]) -> float:
    """Device time of one replay of `fn` captured in a CUDA graph (no Python launch cost)."""
    try:
        g = _graph(fn)
        return _ms(g.replay)
    except Exception as e:  # noqa: BLE001 - report and go on: the other figures still count
        print(f"CUDA graph timing failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return float("nan")


def _host_us(fn: Callable[[], object], n: int = 200) -> float:
    """Host time of one call in us: launches queued back to back, no synchronisation inside."""
    import time

    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return host


def _kernel_us(fn: Callable[[], object], n: int = 20) -> dict[str, float]:
    """Device time per call of each kernel `fn` launches (torch.profiler), in us."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                fn()
            torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - report and go on
        print(f"profiler failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return {}
    res: dict[str, float] = {}
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None)
        if us is None:
            us = getattr(e, "self_cuda_time_total", 0.0)
        if us and e.count:
            res[e.key[:60]] = us / n
    return res


def _kernels_line(what: str, ks: dict[str, float]) -> str:
    body = ", ".join(f"{k} {v:.1f}" for k, v in sorted(ks.items(), key=lambda x: -x[1])[:6])
    return f"{what} kernels (profiler, us per call): {body}; sum {sum(ks.values()):.1f} us"


def cold_ms(fn: Callable[[], object], flush: str = "read", reps: int = 100) -> float:
    """Median device time of `fn` in ms with K/V evicted from L2 before each call.

    flush "zero" writes a 256 MB buffer first (triton do_bench's flush): the L2 is then full
    of dirty lines, whose write-back to memory lands on the timed kernel. flush "read" sums
    the buffer instead, leaving clean lines behind, so only `fn`'s own traffic is timed.
    """
    buf = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    acc = torch.empty((1,), dtype=torch.int64, device="cuda")
    flat = buf.view(1, -1)
    for _ in range(5):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if flush == "zero":
            buf.zero_()
        else:
            torch.sum(flat, dim=1, dtype=torch.int64, out=acc)
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))
    return times[len(times) // 2]


def copy_bandwidth() -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read plus bytes written."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = _ms(lambda: dst.copy_(src))
    return 2 * src.numel() / (t * 1e-3)


def _flex():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    return torch.compile(flex_attention), create_block_mask


def _flex_sparse_mask(block_mask: torch.Tensor, n: int, block: int):
    """Our selected blocks (B, H, n_qb, n_kb) as a FlexAttention BlockMask (causal diagonal)."""
    from torch.nn.attention.flex_attention import BlockMask

    n_qb = block_mask.shape[2]
    qb = torch.arange(n_qb, device=block_mask.device)[:, None]
    c = torch.arange(block_mask.shape[3], device=block_mask.device)[None, :]
    full = block_mask & (c < qb)
    part = block_mask & (c == qb)

    def lists(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.argsort(m.to(torch.int8), dim=-1, descending=True, stable=True)
        return m.sum(-1).to(torch.int32), order.to(torch.int32)

    num, idx = lists(part)
    fnum, fidx = lists(full)

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    return BlockMask.from_kv_blocks(num, idx, fnum, fidx, BLOCK_SIZE=block, mask_mod=causal,
                                    seq_lengths=(n, n))


def _flag(name: str, n: int, d: int, ms: float) -> str:
    ref = BACKGROUND_MS.get(name, {}).get(n) if d == 64 else None
    if ref is None:
        return ""
    dev = ms / ref - 1
    return f" (background {ref:.3g} ms, {dev:+.0%}{' DEVIATES' if abs(dev) > 0.15 else ''})"


def bench_prefill(n: int, d: int, rows: list[dict], lines: list[str],
                  parts: frozenset[str] = frozenset(("local", "dense", "sparse"))) -> None:
    """Local, dense and sparse prefill at N tokens against SDPA and FlexAttention."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kernels.global_attention import global_attention

    flex, create_block_mask = _flex()
    g = torch.Generator(device="cuda").manual_seed(n + d)
    q = torch.randn(1, HQ, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, HKV, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, HKV, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    ke, ve = k.repeat_interleave(HQ // HKV, 1), v.repeat_interleave(HQ // HKV, 1)

    def tflops(pairs: float, ms: float) -> float:
        return 4 * d * HQ * pairs / (ms * 1e-3) / 1e12

    # -- dense causal --
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        t_sdpa = _ms(lambda: F.scaled_dot_product_attention(q, ke, ve, is_causal=True))
    pairs = n * (n + 1) / 2
    if "dense" in parts:
        t_dense = _ms(lambda: global_attention(q, k, v, q_start=0))
        rows.append(dict(op="global dense", n=n, d=d, ms=t_dense, tflops=tflops(pairs, t_dense),
                         vs_sdpa=t_sdpa / t_dense, vs_flex=None))
    lines.append(f"N={n} D={d} SDPA causal {t_sdpa:.3f} ms ({tflops(pairs, t_sdpa):.0f} TFLOP/s)"
                 + _flag("sdpa_causal", n, d, t_sdpa))
    if "local" in parts:
        _bench_local(n, d, q, k, v, flex, create_block_mask, t_sdpa, tflops, rows, lines)
    if "sparse" in parts:
        _bench_sparse(n, d, q, k, v, flex, t_sdpa, tflops, rows, lines)


def _bench_local(n, d, q, k, v, flex, create_block_mask, t_sdpa, tflops, rows, lines) -> None:
    from kernels.local_attention import local_attention

    # -- sliding window --
    def window_mod(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < WINDOW)

    # _compile: build the mask block by block (eager evaluation materializes N x N: 128 GiB
    # of indices at 128K).
    bm = create_block_mask(window_mod, None, None, n, n, device="cuda", _compile=True)
    t_flex_w = _ms(lambda: flex(q, k, v, block_mask=bm, enable_gqa=True))
    t_local = _ms(lambda: local_attention(q, k, v, window=WINDOW, q_start=0))
    pairs_w = n * WINDOW - WINDOW * (WINDOW - 1) / 2
    rows.append(dict(op=f"local W={WINDOW}", n=n, d=d, ms=t_local,
                     tflops=tflops(pairs_w, t_local), vs_sdpa=t_sdpa / t_local,
                     vs_flex=t_flex_w / t_local))
    lines.append(f"N={n} D={d} Flex window {t_flex_w:.3f} ms" + _flag("flex_window", n, d,
                                                                       t_flex_w))


def _bench_sparse(n, d, q, k, v, flex, t_sdpa, tflops, rows, lines) -> None:
    from kernels.sparse_attention import select_blocks, selection_to_block_mask, sparse_attention

    # -- block-sparse: our selection timed inside ours, Flex gets the same blocks prebuilt --
    sel = select_blocks(q, k, q_start=0, **SPARSE)
    n_kb = math.ceil(n / SPARSE["block"])
    mask = selection_to_block_mask(*sel, q_start=0, tq=n, n_kb=n_kb, block=SPARSE["block"],
                                   n_local=SPARSE["n_local"]).view(1, HQ, -1, n_kb)
    fbm = _flex_sparse_mask(mask, n, SPARSE["block"])
    t_flex_s = _ms(lambda: flex(q, k, v, block_mask=fbm, enable_gqa=True))
    t_sel = _ms(lambda: select_blocks(q, k, q_start=0, **SPARSE))
    t_sparse = _ms(lambda: sparse_attention(q, k, v, q_start=0, **SPARSE))
    s = SPARSE["block"]
    n_full = int((mask & (torch.arange(n_kb, device="cuda")[None, :]
                          < torch.arange(mask.shape[2], device="cuda")[:, None])).sum()) / HQ
    pairs_s = n_full * s * s + mask.shape[2] * s * (s + 1) / 2
    rows.append(dict(op="global sparse (with selection)", n=n, d=d, ms=t_sparse,
                     tflops=tflops(pairs_s, t_sparse), vs_sdpa=t_sdpa / t_sparse,
                     vs_flex=t_flex_s / t_sparse, sel_ms=t_sel,
                     keys_per_query=pairs_s / n))
    lines.append(f"N={n} D={d} Flex sparse kernel {t_flex_s:.3f} ms; our selection {t_sel:.3f} ms"
                 f"; {pairs_s / n:.0f} keys per query" + _flag("flex_sparse", n, d, t_flex_s))
    # Launch cost against device time: the same call under a CUDA graph, and per kernel.
    fn = lambda: sparse_attention(q, k, v, q_start=0, **SPARSE)  # noqa: E731
    lines.append(f"N={n} D={d} sparse (with selection) under a CUDA graph {_graph_ms(fn):.3f} ms"
                 f", eager {t_sparse:.3f} ms; host {_host_us(fn):.0f} us per call")
    lines.append(f"N={n} D={d} " + _kernels_line("sparse", _kernel_us(fn)))
    # Variants of the selected-block loop (docs/KERNELS.md), attention only, same selection.
    base = _ms(lambda: sparse_attention(q, k, v, q_start=0, selection=sel, **SPARSE))
    parts = [f"pointer loads {base:.3f} ms"]
    ref = sparse_attention(q, k, v, q_start=0, selection=sel, **SPARSE)[0].float()
    for name, kw in (("descriptors", dict(tma=True)),
                     ("descriptors + warp specialisation", dict(tma=True, warp_specialize=True)),
                     ("half the exponentials by polynomial", dict(poly_exp=True)),
                     ("polynomial + warp specialisation", dict(poly_exp=True,
                                                               warp_specialize=True))):
        try:
            got = sparse_attention(q, k, v, q_start=0, selection=sel, **SPARSE, **kw)[0]
            same = float((got.float() - ref).norm() / ref.norm()) < 1e-2
            t = _ms(lambda kw=kw: sparse_attention(q, k, v, q_start=0, selection=sel,
                                                   **SPARSE, **kw))
            parts.append(f"{name} {t:.3f} ms ({base / t:.2f}x{'' if same else ', DIFFERS'})")
        except Exception as e:  # noqa: BLE001 - an experiment that does not compile is a result
            parts.append(f"{name} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    lines.append(f"N={n} D={d} sparse attention-only variants: " + "; ".join(parts))


def bench_decode(n: int, d: int, bw: float, rows: list[dict], lines: list[str]) -> None:
    """One query against N cached keys: split-KV global and window-bounded local decode."""
    from kernels.decode_attention import decode_attention

    g = torch.Generator(device="cuda").manual_seed(7 * n + d)
    q = torch.randn(1, HQ, 1, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, HKV, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, HKV, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    def sdpa():
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    def ours():
        return decode_attention(q, k, v, q_start=n - 1)

    def local():
        return decode_attention(q, k, v, q_start=n - 1, window=WINDOW)

    pos = torch.full((1,), n - 1, dtype=torch.int32, device="cuda")

    def ours_pos():
        return decode_attention(q, k, v, q_start=pos)

    t_sdpa = _ms(sdpa)
    t_eager = _ms(ours)
    t_local_eager = _ms(local)
    # Decode runs under CUDA graphs in a server: the graph replay is the kernel-side figure,
    # the eager one adds Python launch cost whenever that exceeds the device time.
    t_ours = _graph_ms(ours)
    t_local = _graph_ms(local)
    t_pos = _graph_ms(ours_pos)
    t_sdpa_g = _graph_ms(sdpa)
    nbytes = 2 * k.numel() * k.element_size()
    rows.append(dict(op="decode global (CUDA graph)", n=n, d=d, ms=t_ours,
                     gbs=nbytes / t_ours / 1e6, copy_share=nbytes / (t_ours * 1e-3) / bw,
                     vs_sdpa=t_sdpa_g / t_ours))
    rows.append(dict(op="decode global (eager)", n=n, d=d, ms=t_eager,
                     gbs=nbytes / t_eager / 1e6, copy_share=nbytes / (t_eager * 1e-3) / bw,
                     vs_sdpa=t_sdpa / t_eager))
    rows.append(dict(op="decode global, position tensor (CUDA graph)", n=n, d=d, ms=t_pos,
                     gbs=nbytes / t_pos / 1e6, copy_share=nbytes / (t_pos * 1e-3) / bw,
                     vs_sdpa=t_sdpa_g / t_pos))
    # do_bench's L2 flush leaves 256 MB of dirty lines whose write-back lands on the timed
    # call (up to ~9 us at 64K); after a reading flush only the call's own traffic counts.
    # A plain read of the same K/V bytes (two sums) is the bandwidth peer under that lens.
    tot = torch.empty((), dtype=torch.float32, device="cuda")

    def read_kv():
        return torch.add(k.sum(dtype=torch.float32), v.sum(dtype=torch.float32), out=tot)

    t_clean = cold_ms(_graph(ours).replay, "read")
    t_sdpa_clean = cold_ms(_graph(sdpa).replay, "read")
    t_read_clean = cold_ms(_graph(read_kv).replay, "read")
    rows.append(dict(op="decode global (CUDA graph, clean L2 flush)", n=n, d=d, ms=t_clean,
                     gbs=nbytes / t_clean / 1e6, copy_share=nbytes / (t_clean * 1e-3) / bw,
                     vs_sdpa=t_sdpa_clean / t_clean))
    lines.append(f"N={n} D={d} after a reading L2 flush (CUDA graphs): ours "
                 f"{t_clean * 1e3:.1f} us, SDPA {t_sdpa_clean * 1e3:.1f} us, a plain read of "
                 f"the same K/V bytes {t_read_clean * 1e3:.1f} us "
                 f"({nbytes / (t_read_clean * 1e-3) / bw:.0%} of copy; ours "
                 f"{t_read_clean / t_clean:.2f}x it)")
    # In a model's decode step the global layers' attention calls run inside one graph, each
    # on its own cache: per layer, the graph launch is shared and K/V come cold from memory
    # (STEP_LAYERS caches exceed the L2). Peer: SDPA the same way.
    caches = [(torch.randn_like(k), torch.randn_like(v)) for _ in range(STEP_LAYERS - 1)]
    caches.append((k, v))

    def ours_step():
        for kk, vv in caches:
            decode_attention(q, kk, vv, q_start=n - 1)

    def sdpa_step():
        for kk, vv in caches:
            F.scaled_dot_product_attention(q, kk, vv, enable_gqa=True)

    t_step = cold_ms(_graph(ours_step).replay, "read") / STEP_LAYERS
    t_sdpa_step = cold_ms(_graph(sdpa_step).replay, "read") / STEP_LAYERS
    rows.append(dict(op=f"decode global, per layer of a {STEP_LAYERS}-layer step (CUDA graph)",
                     n=n, d=d, ms=t_step, gbs=nbytes / t_step / 1e6,
                     copy_share=nbytes / (t_step * 1e-3) / bw, vs_sdpa=t_sdpa_step / t_step))
    rows.append(dict(op=f"decode local W={WINDOW} (CUDA graph)", n=n, d=d, ms=t_local,
                     vs_sdpa=None))
    rows.append(dict(op=f"decode local W={WINDOW} (eager)", n=n, d=d, ms=t_local_eager,
                     vs_sdpa=None))
    lines.append(f"N={n} D={d} SDPA decode {t_sdpa * 1e3:.1f} us eager, {t_sdpa_g * 1e3:.1f} us "
                 f"CUDA graph ({nbytes / (t_sdpa_g * 1e-3) / bw:.0%} of copy)"
                 + _flag("sdpa_decode", n, d, t_sdpa))
    lines.append(f"N={n} D={d} decode host time per call: ours {_host_us(ours):.0f} us, local "
                 f"{_host_us(local):.0f} us, SDPA {_host_us(sdpa):.0f} us")
    lines.append(f"N={n} D={d} " + _kernels_line("decode global", _kernel_us(ours)))
    lines.append(f"N={n} D={d} " + _kernels_line("decode local", _kernel_us(local)))
    lines.append(f"N={n} D={d} " + _kernels_line("SDPA decode", _kernel_us(sdpa)))


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def render(gpu: str, bw: float, rows: list[dict], lines: list[str]) -> str:
    """Markdown: one table of our kernels with ratios, peer re-measurements, target checks."""
    out = [f"GPU: {gpu}; torch {torch.__version__}; bf16; {HQ} q heads / {HKV} KV heads; "
           f"device-to-device copy {bw / 1e12:.2f} TB/s (read + write).", "",
           "| op | N | D | time | TFLOP/s | GB/s (copy share) | vs SDPA | vs Flex |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = f"{r['ms'] * 1e3:.1f} us" if r["ms"] < 0.1 else f"{r['ms']:.3f} ms"
        gbs = f"{r['gbs']:.0f} ({r['copy_share']:.0%})" if "gbs" in r else "-"
        out.append(f"| {r['op']} | {r['n']} | {r['d']} | {t} | {_fmt(r.get('tflops'), '.0f')} "
                   f"| {gbs} | {_fmt(r.get('vs_sdpa'), '.2f', 'x')} "
                   f"| {_fmt(r.get('vs_flex'), '.2f', 'x')} |")
    out += ["", "Peers measured in this run:", ""] + [f"- {x}" for x in lines]
    out += ["", "Targets (head_dim 64, N = 65536):", ""] + [f"- {x}" for x in targets(rows)]
    return "\n".join(out) + "\n"


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, met or missed by how much."""
    def find(op: str, n: int = 65536) -> dict | None:
        return next((r for r in rows if r["op"].startswith(op) and r["n"] == n
                     and r["d"] == 64), None)

    res = []
    r = find("local")
    if r:
        res.append(_verdict("local W=1024 vs Flex", r["vs_flex"], TARGETS["local_vs_flex"], "x"))
    r = find("global sparse")
    if r:
        res.append(_verdict("sparse time (ms, lower is better)", r["ms"],
                            TARGETS["sparse_ms_64k"], " ms", lower=True))
        res.append(_verdict("sparse vs Flex sparse kernel", r["vs_flex"],
                            TARGETS["sparse_vs_flex"], "x"))
        res.append(_verdict("sparse vs SDPA dense", r["vs_sdpa"], TARGETS["sparse_vs_sdpa"], "x"))
    for op in ("decode global (CUDA graph)", "decode global (CUDA graph, clean L2 flush)",
               "decode global, per layer", "decode global (eager)"):
        r = find(op)
        if r:
            res.append(_verdict(f"{op} share of copy bandwidth", r["copy_share"],
                                TARGETS["decode_copy_share"], ""))
    loc = [find("local", n) for n in (32768, 65536)]
    if all(loc):
        res.append(f"local 64K / 32K time ratio {loc[1]['ms'] / loc[0]['ms']:.2f} "
                   "(block skipping: about 2 expected)")
    return res


def _verdict(name: str, got: float, want: float, unit: str, lower: bool = False) -> str:
    ok = got <= want if lower else got >= want
    miss = "" if ok else f", missed by {abs(got / want - 1):.0%}"
    return f"{name}: {got:.3g}{unit} (target {'<=' if lower else '>='} {want:g}{unit}: " \
           f"{'met' if ok else 'MISSED'}{miss})"


def write_markdown(path: Path, section: str) -> None:
    """Replace (or append) the kernels section of docs/BENCHMARKS.md."""
    body = f"{BEGIN}\n{section}{END}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", lambda _: body, text,
                      flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## Kernels (`python -m kernels.bench`)\n\n" + body
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Run the kernel benchmark; returns a process exit code."""
    ap = argparse.ArgumentParser(prog="hybrid-lsp bench kernels", description=__doc__)
    ap.add_argument("-n", "--n", type=int, nargs="+", default=[8192, 32768, 65536, 131072])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--skip", nargs="*", default=[], choices=["prefill", "decode"])
    ap.add_argument("--parts", nargs="+", default=["local", "dense", "sparse", "decode"],
                    choices=["local", "dense", "sparse", "decode"],
                    help="which measurements to run (the peers they need come along)")
    ap.add_argument("--out", type=Path, default=Path("docs/BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernels bench needs a CUDA GPU", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name()
    bw = copy_bandwidth()
    print(f"{gpu}: copy {bw / 1e12:.2f} TB/s", flush=True)
    rows: list[dict] = []
    lines: list[str] = []
    for d in args.head_dims:
        for n in args.n:
            prefill = frozenset(args.parts) & {"local", "dense", "sparse"}
            first = len(rows)
            try:
                if "prefill" not in args.skip and prefill:
                    bench_prefill(n, d, rows, lines, prefill)
                if "decode" not in args.skip and "decode" in args.parts:
                    bench_decode(n, d, bw, rows, lines)
            except torch.OutOfMemoryError as exc:  # one shape too large: report, go on
                lines.append(f"N={n} D={d}: out of GPU memory ({str(exc).splitlines()[0]})")
                torch.cuda.empty_cache()
            print(f"done N={n} D={d}: " + ", ".join(f"{r['op']} {r['ms']:.3f} ms"
                                                    for r in rows[first:]), flush=True)
            if not args.no_write:  # a partial section survives a run cut short
                write_markdown(args.out, render(gpu, bw, rows, lines))
    section = render(gpu, bw, rows, lines)
    print(section)
    if not args.no_write:
        write_markdown(args.out, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
