"""`hybrid-lsp bench index PATH... [--workers N] [--json]`: the index half of the benchmark.

Prints cold index throughput, warm start time, single-file update latency p50/p95 and the
plain tree-sitter parse of the same files (the peer ratio), then context-assembly latency
(`hybrid_lsp.context_cmd.bench_context_assembly`) on the first PATH's index, counted with
the default model's tokenizer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

from indexer.bench import bench_index
from indexer.workspace import MAX_FILE_BYTES, ScanOptions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybrid-lsp bench index",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--workers", type=int, default=None, help="default: CPU count")
    p.add_argument("--max-file-bytes", type=int, default=MAX_FILE_BYTES)
    p.add_argument("--updates", type=int, default=200,
                   help="keystrokes timed for the update latency (typed into a ~200 kB file)")
    p.add_argument("--budget", type=int, default=65536,
                   help="context budget for the assembly latency (default 65536)")
    p.add_argument("--samples", type=int, default=100,
                   help="cursor positions timed for the assembly latency")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def context_latency(path: str, *, budget: int, samples: int):
    """Context-assembly latency on `path`'s persistent index (see context_cmd)."""
    from pathlib import Path

    from hybrid_lsp.cli import default_model_path
    from hybrid_lsp.context_cmd import bench_context_assembly, load_index, token_counter

    index = load_index(Path(path).resolve())
    try:
        count, _ = token_counter(str(default_model_path()))
        return bench_context_assembly(index, count, budget=budget, samples=samples)
    finally:
        close = getattr(index, "close", None)
        if close is not None:
            close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    r = bench_index(args.paths, workers=args.workers, updates=args.updates,
                    options=ScanOptions(max_file_bytes=args.max_file_bytes,
                                        include_deps=False, include_std=False))
    ctx = context_latency(args.paths[0], budget=args.budget, samples=args.samples)
    if args.json:
        sys.stdout.write(json.dumps({**r.as_dict(), "context": dataclasses.asdict(ctx)}) + "\n")
        return 0
    out = sys.stdout
    out.write(f"workspace: {r.files} files, {r.mb:.2f} MB of Rust, {r.items} items, "
              f"{r.skipped} skipped\n")
    out.write(f"plain tree-sitter parse (1 process): {r.plain_parse_s:.2f} s, "
              f"{r.plain_mb_s:.2f} MB/s\n")
    out.write(f"cold index ({r.workers} workers): {r.cold_s:.2f} s, {r.cold_mb_s:.2f} MB/s "
              f"(peer ratio {r.peer_ratio:.2f}), {r.cold_cpu_s:.2f} CPU s   target >= 4 MB/s\n")
    out.write(f"warm start: {r.warm_start_s:.3f} s   target <= 1 s for 30 MB\n")
    out.write(f"single-file update: p50 {r.update_p50_ms:.1f} ms, p95 {r.update_p95_ms:.1f} ms"
              f"   target p95 <= 20 ms\n")
    out.write(f"context assembly at {ctx.budget} tokens ({ctx.samples} cursors, "
              f"{ctx.mean_total_tokens:.0f} tokens in {ctx.mean_chunks:.0f} chunks on average): "
              f"cursor enters an item p50 {ctx.item_change_p50_ms:.1f} ms, "
              f"p95 {ctx.item_change_p95_ms:.1f} ms   target p95 <= 20 ms; keystroke p50 "
              f"{ctx.keystroke_p50_ms:.2f} ms, p95 {ctx.keystroke_p95_ms:.2f} ms; new index "
              f"generation {ctx.generation_build_ms:.0f} ms; next generation after a "
              f"one-file edit {', '.join(f'{t:.0f}' for t in ctx.next_generation_ms)} ms\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
