"""`hybrid-lsp index PATH... [--json]`: build or refresh a workspace's index and summarise it.

Prints files, items, bytes, seconds, MB/s and the skipped files with their reasons; a tqdm
progress bar goes to stderr. With `--json`, stdout carries exactly one JSON object (errors
included). The index is the same cached database the server uses, so a second run is a warm
start that re-parses only changed files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from typing import Any

from indexer.store import Index, ScanStats
from indexer.workspace import MAX_FILE_BYTES, ScanOptions, default_cargo_home, default_rust_src

log = logging.getLogger(__name__)

#: Skipped files listed one by one in the text summary; the rest are counted by reason.
SHOW_SKIPPED = 20


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `index` subcommand."""
    p = subparsers.add_parser("index", help="index a Rust workspace (cached) and summarise it",
                              description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("paths", nargs="+", metavar="PATH", help="workspace folder(s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--max-file-bytes", type=int, default=MAX_FILE_BYTES,
                   help="skip larger files (default: %(default)s)")
    p.add_argument("--no-deps", action="store_true",
                   help="leave out dependency sources from Cargo.lock")
    p.add_argument("--no-std", action="store_true", help="leave out the standard library")
    p.add_argument("--workers", type=int, default=None,
                   help="parsing processes (default: CPU count; 0: in this process)")
    p.add_argument("--cache-dir", default=None,
                   help="folder for the index database (default: the user cache folder)")
    p.add_argument("--rebuild", action="store_true", help="drop the cached index first")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Index, print the summary; 0 done, 2 bad PATH, 1 unexpected failure."""
    bad = [p for p in args.paths if not os.path.isdir(p)]
    if bad:
        return _fail(args, f"Expected a folder, got {bad[0]!r}", 2)
    options = ScanOptions(
        max_file_bytes=args.max_file_bytes, include_deps=not args.no_deps,
        include_std=not args.no_std, cargo_home=None if args.no_deps else default_cargo_home(),
        rust_src=None if args.no_std else default_rust_src())
    try:
        with Index(args.paths, options=options, cache_dir=args.cache_dir,
                   workers=args.workers) as index:
            if args.rebuild:
                index.clear()
            stats = index.reconcile(progress=_Bar())
            summary = _summary(index, stats)
    except Exception as exc:  # the CLI reports any failure as one line / one JSON object
        log.exception("indexing failed")
        return _fail(args, f"indexing failed: {type(exc).__name__}: {exc}", 1)
    if args.json:
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
    else:
        _print_text(summary)
    sys.stdout.flush()
    return 0


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.json:
        sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
    else:
        print(f"hybrid-lsp index: {message}", file=sys.stderr)
    return code


class _Bar:
    """tqdm on stderr (off when stderr is no terminal), created on the first report."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int, path: str) -> None:
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="file", file=sys.stderr, desc="indexing",
                            leave=False, dynamic_ncols=True, disable=None)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()




def _summary(index: Index, s: ScanStats) -> dict[str, Any]:
    reasons = Counter(_reason_kind(k.reason) for k in s.skipped)
    mbps = s.parsed_bytes / 1e6 / s.seconds if s.seconds > 0 else 0.0
    return {
        "roots": index.roots,
        "database": index.db_path if index.persistent else None,
        "rebuilt": index.rebuilt_reason,
        "files": s.files, "items": s.items, "bytes": s.bytes,
        "parsed_files": s.parsed, "parsed_bytes": s.parsed_bytes,
        "unchanged_files": s.unchanged, "removed_files": s.removed,
        "seconds": round(s.seconds, 3), "mb_per_s": round(mbps, 2),
        "skipped": [{"path": k.path, "reason": k.reason} for k in s.skipped],
        "skipped_by_reason": dict(sorted(reasons.items())),
        "generation": index.generation,
    }


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


def _print_text(d: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(f"indexed {d['files']} files, {d['items']} items, {d['bytes'] / 1e6:.2f} MB "
              f"in {d['seconds']:.2f} s\n")
    out.write(f"parsed {d['parsed_files']} files ({d['parsed_bytes'] / 1e6:.2f} MB, "
              f"{d['mb_per_s']:.2f} MB/s); {d['unchanged_files']} unchanged, "
              f"{d['removed_files']} removed\n")
    if d["rebuilt"]:
        out.write(f"cached index was rebuilt: {d['rebuilt']}\n")
    if d["skipped"]:
        out.write(f"skipped {len(d['skipped'])} files:\n")
        for k in d["skipped"][:SHOW_SKIPPED]:
            out.write(f"  {k['path']}: {k['reason']}\n")
        if len(d["skipped"]) > SHOW_SKIPPED:
            rest = ", ".join(f"{r}: {n}" for r, n in d["skipped_by_reason"].items())
            out.write(f"  ... by reason: {rest}\n")
    out.write(f"database: {d['database'] or '(in memory: cache folder unusable)'}\n")
