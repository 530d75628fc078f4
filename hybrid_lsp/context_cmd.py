"""`hybrid-lsp context FILE:LINE:COL [--budget N] [--json]`: show the assembled prompt.

Users debug their completions with it: it prints the prompt the model would see for a cursor,
then a per-chunk breakdown (kind, tokens, why it was chosen). LINE and COL are 1-based (COL
in characters), as compilers print them. Tokens come from the default model's tokenizer
(`engine/models/hybrid-lsp.gguf`, or `--model`); without a model file, a bytes/3.5 estimate stands
in and a warning says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.prompt import special_token_strings
from indexer.context import Context, ContextAssembler, tokens_estimate
from indexer.items import IndexView, MemoryIndex
from indexer.parse import parse_file
from indexer.tokens import TokenCounter
from indexer.workspace import ScanOptions, discover, relocate, resolve_path_modules

if TYPE_CHECKING:
    from engine.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "engine" / "models" / "hybrid-lsp.gguf"
#: The CPU backend's default budget (shared/docs/background.md: a warm CPU completion must
#: stay fast; the shipped model evaluates ~2K prompt tokens/s on 2 cores). GPU default: 64K.
DEFAULT_BUDGET_CPU = 2048  # the server's default (hybrid_lsp.settings)
DEFAULT_BUDGET_GPU = 65536
#: Environment variable naming the index database folder (as for the server).
CACHE_DIR_ENV = "HYBRID_LSP_CACHE_DIR"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `context` subcommand."""
    p = subparsers.add_parser(
        "context", help="show the context assembled for a cursor at FILE:LINE:COL",
        description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("location", metavar="FILE:LINE:COL", help="cursor, 1-based line and column")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET_CPU,
                   help=f"context size in tokens (default {DEFAULT_BUDGET_CPU}, the CPU "
                        f"default; the GPU default is {DEFAULT_BUDGET_GPU})")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="model file whose tokenizer counts tokens (default: %(default)s)")
    p.add_argument("--root", default=None,
                   help="workspace folder (default: the nearest Cargo workspace or package)")
    p.add_argument("--cache-dir", default=None,
                   help=f"folder for the index database (default: ${CACHE_DIR_ENV}, else "
                        "the user cache folder)")
    p.set_defaults(func=run)
    return p


def parse_location(loc: str) -> tuple[Path, int, int]:
    """`src/a.rs:12:5` -> (path, 12, 5); raises ValueError with the expected form."""
    parts = loc.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"Expected FILE:LINE:COL with 1-based numbers, got {loc!r}")
    line, col = int(parts[1]), int(parts[2])
    if line < 1 or col < 1:
        raise ValueError(f"Expected LINE and COL >= 1, got {line}:{col}")
    return Path(parts[0]), line, col


def find_root(path: Path) -> Path:
    """The nearest folder above `path` whose Cargo.toml has [workspace], else the nearest
    package folder, else the file's folder."""
    package = None
    for d in path.resolve().parents:
        toml = d / "Cargo.toml"
        if toml.is_file():
            package = package or d
            try:
                if "[workspace]" in toml.read_text(encoding="utf-8", errors="replace"):
                    return d
            except OSError:
                continue
    return package or path.resolve().parent


def load_index(root: Path, cache_dir: str | None = None) -> IndexView:
    """The workspace's persistent index (`indexer.store.Index`, the database the server
    uses), brought up to date with the disk; in memory when the store is absent."""
    try:
        from indexer.store import Index
    except ImportError:  # the store is not part of this checkout
        return load_memory_index(root)
    index = Index([str(root)], cache_dir=cache_dir or os.environ.get(CACHE_DIR_ENV))
    index.reconcile()
    return index


def load_memory_index(root: Path) -> MemoryIndex:
    """Index a workspace in memory (parse in-process; std from rust-src or the stub)."""
    found = discover([root], ScanOptions(include_deps=False))
    parsed = []
    texts = {}
    for sf in found.files:
        try:
            data = Path(sf.abspath).read_bytes()
        except OSError as exc:
            log.warning("skipping %s: %s", sf.path, exc)
            continue
        parsed.append(parse_file(sf.path, data, module=sf.module, read_only=sf.read_only,
                                 crate=sf.crate))
        texts[sf.path] = data.decode("utf-8", "replace")
    moved = resolve_path_modules(parsed)
    index = MemoryIndex()
    for fi in parsed:
        index.entries[fi.path] = relocate(fi, moved[fi.path]) if fi.path in moved else fi
        index.texts[fi.path] = texts[fi.path]
    index.generation = 1
    return index


def tokenizer_counter(tok: Tokenizer) -> TokenCounter:
    """Cached exact counts for the engine's tokenizer, counted in pieces: it is byte-level
    BPE with the GPT-2 pre-tokenizer, which `indexer.tokens` relies on (`additive`)."""
    digest = hashlib.blake2b(digest_size=8)
    for i in range(tok.vocab_size):
        digest.update(tok.id_to_piece(i).encode("utf-8", "surrogatepass") + b"\0")
    return TokenCounter(lambda s: len(tok.encode(s)), count_batch=_batch_counter(tok),
                        additive=True, name=f"bpe{tok.vocab_size}-{digest.hexdigest()}")


def _batch_counter(tok: Tokenizer) -> Callable[[Sequence[str]], list[int]]:
    """Counts of many texts in one call: `tokenizers`' `encode_batch_fast` (no offsets,
    about 30% less CPU per short text) when the engine's tokenizer wraps one that has it,
    else `Tokenizer.encode_batch`. Both give the ids `Tokenizer.encode` gives."""
    hf = getattr(tok, "_hf", None)
    fast = getattr(hf, "encode_batch_fast", None)
    if fast is None:
        return lambda texts: [len(ids) for ids in tok.encode_batch(texts)]
    return lambda texts: [len(e.ids) for e in fast(list(texts), add_special_tokens=False)]


def token_counter(model: str) -> tuple[TokenCounter, str]:
    """The model's token counter, or the bytes/3.5 estimate (with why)."""
    if Path(model).is_file():
        from engine.gguf_io import read_model_info

        return tokenizer_counter(read_model_info(model).tokenizer), f"tokenizer of {model}"
    log.warning("model file %s not found: token counts are estimates (bytes / 3.5)", model)
    return TokenCounter(tokens_estimate), "estimate (bytes / 3.5): no model file"


def run(args: argparse.Namespace) -> int:
    """Assemble and print the context; 0 on success, 2 on a bad location."""
    try:
        path, line, col = parse_location(args.location)
    except ValueError as exc:
        sys.stderr.write(f"hybrid-lsp context: {exc}\n")
        return 2
    if not path.is_file():
        sys.stderr.write(f"hybrid-lsp context: no such file: {path}\n")
        return 2
    if args.budget < 1024:
        sys.stderr.write(f"hybrid-lsp context: expected --budget >= 1024, got {args.budget}\n")
        return 2
    root = Path(args.root).resolve() if args.root else find_root(path)
    t0 = time.perf_counter()
    index = load_index(root, args.cache_dir)
    t_index = time.perf_counter() - t0
    try:
        count, counting = token_counter(args.model)
        rel = path.resolve().relative_to(root).as_posix()
        text = index.text(rel)
        if text is None:
            text = path.read_text(encoding="utf-8", errors="replace")
        asm = ContextAssembler(index, count, special_token_strings(), repo_name=root.name)
        t1 = time.perf_counter()
        ctx = asm.assemble(rel, text, line - 1, col - 1, budget=args.budget)
        t_ctx = time.perf_counter() - t1
    finally:
        close = getattr(index, "close", None)
        if close is not None:
            close()  # the store writes the token counts it buffered
    if args.json:
        sys.stdout.write(json.dumps(to_json(ctx, counting, t_index, t_ctx)) + "\n")
    else:
        sys.stdout.write(render_text(ctx, counting, t_index, t_ctx))
    return 0


def to_json(ctx: Context, counting: str, t_index: float, t_ctx: float) -> dict:
    """The context as one JSON-ready dict."""
    return {
        "path": ctx.path, "repo_name": ctx.repo_name, "budget": ctx.budget,
        "total_tokens": ctx.total_tokens, "repo_tokens": ctx.repo_tokens,
        "file_tokens": ctx.file_tokens, "prefix_tokens": ctx.prefix_tokens,
        "suffix_tokens": ctx.suffix_tokens, "truncated_prefix": ctx.truncated_prefix,
        "truncated_suffix": ctx.truncated_suffix, "token_counting": counting,
        "enclosing": ctx.enclosing.describe() if ctx.enclosing else None,
        "index_seconds": round(t_index, 4), "assemble_seconds": round(t_ctx, 4),
        "chunks": [{"path": c.path, "kind": c.kind, "name": c.name, "tokens": c.tokens,
                    "score": c.score, "reason": c.reason} for c in ctx.chunks],
        "prompt": ctx.prompt_text(),
    }


def render_text(ctx: Context, counting: str, t_index: float, t_ctx: float) -> str:
    """The prompt, then the breakdown table."""
    out = [ctx.prompt_text(), "\n\n", "=" * 78, "\n"]
    where = ctx.enclosing.describe() if ctx.enclosing else "(no enclosing item)"
    out.append(f"cursor in {ctx.path}: {where}\n")
    out.append(f"tokens: {ctx.total_tokens} of {ctx.budget} (repository {ctx.repo_tokens}, "
               f"current file {ctx.file_tokens}: prefix {ctx.prefix_tokens}"
               f"{' cut' if ctx.truncated_prefix else ''}, suffix {ctx.suffix_tokens}"
               f"{' cut' if ctx.truncated_suffix else ''}); counted by {counting}\n")
    out.append(f"index {t_index * 1000:.0f} ms, assembly {t_ctx * 1000:.1f} ms\n\n")
    out.append(f"{'#':>3} {'kind':<15} {'tokens':>6}  {'path':<32} why\n")
    for i, c in enumerate(ctx.chunks, 1):
        label = f"{c.path}" + (f" ({c.name})" if c.name else "")
        out.append(f"{i:>3} {c.kind:<15} {c.tokens:>6}  {label:<32} {c.reason}\n")
    return "".join(out)


@dataclass(frozen=True)
class ContextBench:
    """Context-assembly latencies in milliseconds (for `hybrid-lsp bench index`)."""

    budget: int
    samples: int
    generation_build_ms: float      # resolver + reference graph of a new index generation
    item_change_p50_ms: float       # the cursor enters another item: repository part redone
    item_change_p95_ms: float
    keystroke_p50_ms: float         # typing inside the item: cached repository part
    keystroke_p95_ms: float
    mean_total_tokens: float
    mean_chunks: float
    # CPU time of this process per call (the dev machine is shared: wall time varies with
    # the other jobs' load, CPU time much less).
    generation_build_cpu_ms: float = 0.0
    item_change_cpu_p50_ms: float = 0.0
    item_change_cpu_p95_ms: float = 0.0
    keystroke_cpu_p50_ms: float = 0.0
    keystroke_cpu_p95_ms: float = 0.0
    # The next generation after one file changed (a save or a buffer update): built from the
    # previous one (`Resolver.update`, `RefGraph.updated`); one figure per edited file.
    next_generation_ms: tuple[float, ...] = ()


def bench_context_assembly(index: IndexView, count_tokens: Callable[[str], int] | TokenCounter,
                           *,
                           budget: int = DEFAULT_BUDGET_GPU, samples: int = 100,
                           keystrokes: int = 5, seed: int = 0,
                           next_generations: int = 3) -> ContextBench:
    """Assemble contexts at `samples` seeded cursor positions inside functions of the
    workspace, each followed by `keystrokes` typed characters, and time every call; then
    time `next_generations` index generations, each after one file gained a function (an
    editor buffer of a persistent index, dropped again at the end)."""
    rng = random.Random(seed)
    spots = [(p, it) for p in index.files() if (fi := index.file(p)) is not None
             and not fi.read_only for it in fi.items if it.kind in ("fn", "method")
             and it.end_line > it.start_line + 1]
    if not spots:
        raise ValueError("Expected a workspace with functions to place cursors in, got none")
    asm = ContextAssembler(index, count_tokens, special_token_strings(), repo_name="bench")
    t0, c0 = time.perf_counter(), time.process_time()
    asm._per_generation()
    build, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    item_ms: list[float] = []
    key_ms: list[float] = []
    item_cpu: list[float] = []
    key_cpu: list[float] = []
    totals: list[int] = []
    chunks: list[int] = []
    for _ in range(samples):
        path, it = spots[rng.randrange(len(spots))]
        text = index.text(path) or ""
        lines = text.split("\n")
        line = (it.start_line + it.end_line) // 2
        col = len(lines[line]) if line < len(lines) else 0
        t, c = time.perf_counter(), time.process_time()
        ctx = asm.assemble(path, text, line, col, budget=budget)
        item_ms.append((time.perf_counter() - t) * 1000)
        item_cpu.append((time.process_time() - c) * 1000)
        totals.append(ctx.total_tokens)
        chunks.append(len(ctx.chunks))
        for k in range(keystrokes):
            lines[line] = lines[line] + "xyz"[k % 3]
            col += 1
            typed = "\n".join(lines)
            t, c = time.perf_counter(), time.process_time()
            asm.assemble(path, typed, line, col, budget=budget)
            key_ms.append((time.perf_counter() - t) * 1000)
            key_cpu.append((time.process_time() - c) * 1000)
    next_ms = _time_next_generations(index, asm, spots, rng, next_generations)
    return ContextBench(
        budget, samples, round(build * 1000, 1), _pct(item_ms, 50), _pct(item_ms, 95),
        _pct(key_ms, 50), _pct(key_ms, 95), round(statistics.fmean(totals), 1),
        round(statistics.fmean(chunks), 1), round(build_cpu * 1000, 1),
        _pct(item_cpu, 50), _pct(item_cpu, 95), _pct(key_cpu, 50), _pct(key_cpu, 95),
        tuple(next_ms))


def _reparse(index: IndexView, path: str, text: str):
    fi = index.file(path)
    return parse_file(path, text.encode("utf-8"), module=fi.module if fi else None,
                      crate=fi.crate if fi else "")


def _time_next_generations(index: IndexView, asm: ContextAssembler, spots: list,
                           rng: random.Random, rounds: int) -> list[float]:
    """Milliseconds of each next generation after one file gained a new function."""
    update = getattr(index, "update_text", None)
    put = getattr(index, "put", None)
    if update is None and put is None:
        return []
    out: list[float] = []
    edited: dict[str, str] = {}
    try:
        for k in range(rounds):
            path, _ = spots[rng.randrange(len(spots))]
            old = index.text(path) or ""
            edited.setdefault(path, old)
            new = f"{old}\npub fn hybrid_lsp_bench_{k}(x: u32) -> u32 {{\n    x + {k}\n}}\n"
            if update is not None:
                update(path, new)
            else:
                put(_reparse(index, path, new), new)
            t = time.perf_counter()
            asm._per_generation()
            out.append(round((time.perf_counter() - t) * 1000, 1))
    finally:
        for path, old in edited.items():
            drop = getattr(index, "drop_buffer", None)
            if drop is not None:
                drop(path)
            elif put is not None:
                put(_reparse(index, path, old), old)
    return out


def _pct(values: list[float], q: int) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))], 2)
