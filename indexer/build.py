"""Parsing many files: in worker processes for cold indexing, in-process for a few.

tree-sitter holds the GIL while it parses (py-tree-sitter #111), so a cold index parses in a
`ProcessPoolExecutor` (forked from a clean forkserver, or spawned; never forked from the
caller: a forked SQLite connection corrupts databases, reliability-notes §4) and the caller's
single writer commits the results in batches. While the workers start, the caller parses the
smallest files itself.
Workers reply with plain bytes, strings and tuples (codec), so the parent unpickles no class.

Each worker parses on a thread with a 64 MiB stack: tree-sitter recurses once per tree level
in a few functions (tree-sitter #5807), and deep nesting must not overflow the stack.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.context import BaseContext

from indexer import codec
from indexer.items import FileIndex
from indexer.parse import decode_source, is_binary, parse_file

log = logging.getLogger(__name__)

#: Stack for the parsing thread (reliability-notes §6: "Give workers 64 MiB stacks").
WORKER_STACK_BYTES = 64 << 20
#: Files per worker task and bytes per task: small enough to balance two cores, large
#: enough that per-task overhead (pickling, scheduling) stays under 1%.
BATCH_FILES = 64
BATCH_BYTES = 1 << 20
#: Below this many bytes to parse, process start-up (~0.3 s for the first pool) costs more
#: than it saves: parse in-process.
IN_PROCESS_BYTES = 2 << 20

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class Job:
    """One file to parse: index key, where to read it, and its crate context."""

    path: str
    abspath: str
    module: str = "crate"
    crate: str = ""
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class Parsed:
    """A worker's reply for one file: `blob` (codec bytes) and text, or a skip reason."""

    job: Job
    blob: bytes | None = None
    text: str | None = None
    size: int = 0
    mtime_ns: int = 0
    content_hash: str = ""
    reason: str | None = None       # set when the file was skipped
    module: str = ""                # the module it was parsed as
    names: str = ""                 # distinct item names, "\n"-joined (the store's name rows)
    mods: str = "[]"                # codec.encode_mods JSON
    nitems: int = 0

    def file_index(self) -> FileIndex | None:
        return codec.decode(self.blob) if self.blob is not None else None


def parse_job(job: Job) -> Parsed:
    """Read and parse one file; never raises (a vanished or unreadable file is a skip)."""
    try:
        with open(job.abspath, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return Parsed(job, reason="vanished during indexing")
    except OSError as exc:
        return Parsed(job, reason=f"unreadable: {exc.strerror or exc}")
    if is_binary(data):
        return Parsed(job, reason="binary file (NUL bytes)", size=len(data))
    fi = parse_file(job.path, data, module=job.module, read_only=job.read_only, crate=job.crate)
    _bytes, text, _errors = decode_source(data)
    return Parsed(job, blob=codec.encode(fi), text=text, size=len(data),
                  mtime_ns=st.st_mtime_ns, content_hash=fi.content_hash, module=fi.module,
                  names="\n".join(sorted({it.name for it in fi.items if it.name})),
                  mods=codec.encode_mods(fi), nitems=len(fi.items))


def _parse_batch(jobs: list[tuple[str, str, str, str, bool]]) -> list[tuple]:
    """Worker entry: parse a batch on a big-stack thread; reply with plain tuples."""
    out: list[tuple] = []

    def run() -> None:
        for t in jobs:
            p = parse_job(Job(*t))
            out.append((p.blob, p.text, p.size, p.mtime_ns, p.content_hash, p.reason,
                        p.module, p.names, p.mods, p.nitems))

    old = threading.stack_size(WORKER_STACK_BYTES)
    try:
        th = threading.Thread(target=run, name="indexer-parse")
        th.start()
        th.join()
    finally:
        threading.stack_size(old)
    return out


def _parse_batch_timed(jobs: list[tuple[str, str, str, str, bool]]
                       ) -> tuple[int, float, list[tuple]]:
    """`_parse_batch`, with the worker's pid and its CPU seconds so far (`WORKER_CPU`)."""
    out = _parse_batch(jobs)
    return os.getpid(), time.process_time(), out


class WorkerCpu:
    """CPU seconds of the worker processes (for the benchmark): the latest total each
    worker reported, by pid (a forked worker's clock starts at zero)."""

    def __init__(self) -> None:
        self.by_pid: dict[int, float] = {}

    def seconds(self) -> float:
        return sum(self.by_pid.values())


#: Worker CPU of this process's `parse_many` calls.
WORKER_CPU = WorkerCpu()


def _batches(jobs: Sequence[Job], sizes: Sequence[int], *,
             max_bytes: int = BATCH_BYTES) -> Iterator[list[Job]]:
    batch: list[Job] = []
    nbytes = 0
    for job, size in zip(jobs, sizes, strict=True):
        batch.append(job)
        nbytes += size
        if len(batch) >= BATCH_FILES or nbytes >= max_bytes:
            yield batch
            batch, nbytes = [], 0
    if batch:
        yield batch


def parse_many(jobs: Sequence[Job], *, sizes: Sequence[int] | None = None,
               workers: int | None = None, progress: ProgressFn | None = None,
               cancel: Callable[[], bool] | None = None) -> Iterator[Parsed]:
    """Parse `jobs`, yielding each result as it is ready (order not kept).

    `workers`: process count (default: CPU count); 0 parses in this process, as do small
    totals. `progress(done, total, path)` runs in the caller's thread per file; `cancel`
    is checked between batches.
    """
    total = len(jobs)
    sizes = list(sizes) if sizes is not None else [0] * total
    nworkers = (os.cpu_count() or 1) if workers is None else workers
    done = 0
    if nworkers <= 0 or total < 2 or (sizes and sum(sizes) < IN_PROCESS_BYTES
                                      and workers is None):
        for job in jobs:
            if cancel is not None and cancel():
                return
            result = parse_job(job)
            done += 1
            if progress is not None:
                progress(done, total, job.path)
            yield result
        return
    # Largest files first, batches no bigger than a fair share: the last batch to finish
    # is a small one, so both cores stay busy to the end (LPT scheduling).
    order = sorted(range(total), key=lambda i: -sizes[i])
    share = max(1, sum(sizes) // (4 * nworkers))
    batches = list(_batches([jobs[i] for i in order], [sizes[i] for i in order],
                            max_bytes=min(BATCH_BYTES, share)))
    started = False
    fallback: list[Job] = []
    with ProcessPoolExecutor(max_workers=min(nworkers, len(batches)),
                             mp_context=_mp_context()) as pool:
        pending: dict[Future, list[Job]] = {}
        queue = _Queue(batches)
        try:
            for batch in queue:
                pending[pool.submit(_parse_batch_timed, [_job_tuple(j) for j in batch])] = batch
                if len(pending) >= 2 * nworkers:
                    break
            while pending:
                # While the workers start, this process parses the smallest files itself
                # (it would only wait): one file at a time, until a batch comes back.
                while not started and not any(f.done() for f in pending):
                    job = queue.pop_small()
                    if job is None:
                        break
                    result = parse_job(job)
                    done += 1
                    if progress is not None:
                        progress(done, total, job.path)
                    yield result
                    if cancel is not None and cancel():
                        return
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in ready:
                    batch = pending.pop(fut)
                    if not started and _never_started(fut):
                        fallback = [*batch, *(j for b in pending.values() for j in b),
                                    *(j for b in queue for j in b)]
                        pending.clear()
                        break
                    started = True
                    for job, reply in zip(batch, _replies(fut, batch), strict=True):
                        done += 1
                        if progress is not None:
                            progress(done, total, job.path)
                        yield Parsed(job, *reply)
                    if cancel is not None and cancel():
                        return
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(_parse_batch_timed, [_job_tuple(j) for j in nxt])] = nxt
        finally:
            for fut in pending:
                fut.cancel()
    if fallback:
        # The pool could not start (e.g. `__main__` is stdin, which `spawn` cannot
        # re-import): parse here rather than lose the files.
        log.warning("indexing workers did not start; parsing %d files in-process",
                    len(fallback))
        for job in fallback:
            if cancel is not None and cancel():
                return
            result = parse_job(job)
            done += 1
            if progress is not None:
                progress(done, total, job.path)
            yield result


class _Queue:
    """Batches for the pool, taken largest first; `pop_small` takes single files for the
    parent from the other end (the smallest)."""

    def __init__(self, batches: list[list[Job]]) -> None:
        self._batches = deque(deque(b) for b in batches)

    def __iter__(self) -> _Queue:
        return self

    def __next__(self) -> list[Job]:
        if not self._batches:
            raise StopIteration
        return list(self._batches.popleft())

    def pop_small(self) -> Job | None:
        while self._batches and not self._batches[-1]:
            self._batches.pop()
        if not self._batches:
            return None
        return self._batches[-1].pop()


def _mp_context() -> BaseContext:
    """`forkserver` where there is one: a clean server process (started like `spawn`, so
    no SQLite connection is ever forked, reliability-notes §4) imports the parser once, and
    each worker is a cheap fork of it; the server stays up for later scans. Else `spawn`."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["indexer.build"])
    return ctx


def _never_started(fut: Future) -> bool:
    """True when a batch failed because the pool broke (before any batch succeeded)."""
    return isinstance(fut.exception(), BrokenProcessPool)


def _job_tuple(j: Job) -> tuple[str, str, str, str, bool]:
    return (j.path, j.abspath, j.module, j.crate, j.read_only)


def _replies(fut: Future, batch: list[Job]) -> list[tuple]:
    """A batch's replies; a crashed worker turns its files into skips, not a failure."""
    try:
        pid, cpu, replies = fut.result()
    except Exception as exc:  # BrokenProcessPool, a worker killed by the OOM killer, ...
        log.warning("indexing worker failed on %d files: %s", len(batch), exc)
        return [(None, None, 0, 0, "", f"worker failed: {type(exc).__name__}")] * len(batch)
    WORKER_CPU.by_pid[pid] = max(cpu, WORKER_CPU.by_pid.get(pid, 0.0))
    return replies
