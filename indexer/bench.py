"""Index benchmarks (issue 4 "Performance"): cold throughput, warm start, update latency, and
the plain tree-sitter parse of the same files in the same run as the peer ratio.

Measurement only; `hybrid_lsp/bench_index_cmd.py` prints. Targets on the 2-core dev machine:
cold >= 4 MB/s, warm start <= 1 s for 30 MB, single-file update <= 20 ms p95.
"""

from __future__ import annotations

import os
import random
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tree_sitter import Parser

from indexer.build import WORKER_CPU
from indexer.parse import language
from indexer.store import Index
from indexer.workspace import ScanOptions, discover

#: Keystrokes timed for the update-latency figure, typed into the file closest to 200 kB.
UPDATE_KEYSTROKES = 200
TYPING_FILE_BYTES = 200_000


@dataclass
class IndexBench:
    files: int
    mb: float
    workers: int
    plain_parse_s: float        # tree-sitter parse of every file, one process, no extraction
    plain_mb_s: float
    cold_s: float
    cold_mb_s: float
    cold_cpu_s: float           # CPU of the cold index: this process + the workers
    peer_ratio: float           # cold throughput / plain single-process parse throughput
    warm_start_s: float         # open the database + reconcile with nothing changed
    update_p50_ms: float
    update_p95_ms: float
    items: int
    skipped: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _cpu_seconds() -> float:
    """CPU seconds of this process and of the parse workers (forked by the forkserver, so
    not our children: they report their own clocks)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime + WORKER_CPU.seconds()


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_index(roots: Sequence[str | os.PathLike[str]], *, workers: int | None = None,
                options: ScanOptions | None = None, cache_dir: str | None = None,
                updates: int = UPDATE_KEYSTROKES) -> IndexBench:
    """Run the index benchmark on `roots` with a throw-away database."""
    options = options or ScanOptions(include_deps=False, include_std=False)
    found = discover(roots, options)
    sources = [Path(f.abspath).read_bytes() for f in found.files]
    total = sum(len(s) for s in sources)

    parser = Parser(language())
    t0 = time.perf_counter()
    for src in sources:
        parser.parse(src)
    plain = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="hybrid-lsp-bench-", dir=cache_dir) as tmp:
        nworkers = workers if workers is not None else (os.cpu_count() or 1)
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        with Index(roots, options=options, cache_dir=tmp, workers=nworkers) as index:
            st = index.reconcile()
        cold = time.perf_counter() - t0
        cold_cpu = _cpu_seconds() - cpu0

        t0 = time.perf_counter()
        with Index(roots, options=options, cache_dir=tmp, workers=nworkers) as index:
            index.reconcile()
            warm = time.perf_counter() - t0
            latencies = _update_latencies(index, found.files, sources, updates)
    mb = total / 1e6
    return IndexBench(
        files=len(found.files), mb=round(mb, 2), workers=nworkers,
        plain_parse_s=round(plain, 3), plain_mb_s=round(mb / plain, 2) if plain else 0.0,
        cold_s=round(cold, 3), cold_mb_s=round(mb / cold, 2) if cold else 0.0,
        cold_cpu_s=round(cold_cpu, 2),
        peer_ratio=round((mb / cold) / (mb / plain), 2) if cold and plain else 0.0,
        warm_start_s=round(warm, 3),
        update_p50_ms=round(_percentile(latencies, 0.5) * 1e3, 2),
        update_p95_ms=round(_percentile(latencies, 0.95) * 1e3, 2),
        items=st.items, skipped=len(st.skipped))


def typing_edits(source: bytes, n: int, seed: int = 0) -> list[str]:
    """`n` successive buffer texts of someone typing into `source`: at a few line starts
    inside the file, a statement is typed one character per keystroke, then erased."""
    rng = random.Random(seed)
    text = source.decode("utf-8", "replace")
    lines = [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    out: list[str] = []
    while len(out) < n:
        at = rng.choice(lines) if lines else 0
        stmt = "    let value = compute(a, b + 1);\n"
        for k in range(1, len(stmt) + 1):
            out.append(text[:at] + stmt[:k] + text[at:])
        for k in range(len(stmt) - 1, -1, -1):
            out.append(text[:at] + stmt[:k] + text[at:])
    return out[:n]


def _update_latencies(index: Index, files: list, sources: list[bytes],
                      n: int) -> list[float]:
    """Time `update_text` (incremental parse + replace the file's rows) per keystroke on
    the file closest to `TYPING_FILE_BYTES` (the first, full update is not counted)."""
    if not sources:
        return []
    i = min(range(len(sources)), key=lambda k: abs(len(sources[k]) - TYPING_FILE_BYTES))
    index.update_text(files[i].path, sources[i].decode("utf-8", "replace"))
    out = []
    for text in typing_edits(sources[i], n):
        t0 = time.perf_counter()
        index.update_text(files[i].path, text)
        out.append(time.perf_counter() - t0)
    return out
