"""R8: `kill -9` at a uniform random moment of indexing, 50 rounds, then convergence."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hybrid_lsp.lsp_session import ROOT

pytestmark = [pytest.mark.timeout(150)]

ROUNDS = 50
FILES = 150
CHANGED = 40            # modules rewritten before each round


def make_workspace(root: Path, nfiles: int) -> Path:
    """A crate of `nfiles` modules, 30 documented functions each, one nested module."""
    (root / "src" / "deep").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[package]\nname = "killme"\nversion = "0.1.0"\n')
    (root / "src" / "lib.rs").write_text(
        "pub mod deep;\n" + "".join(f"pub mod m{k};\n" for k in range(nfiles)))
    (root / "src" / "deep" / "mod.rs").write_text("pub fn deep() -> u8 { 0 }\n")
    for k in range(nfiles):
        write_module(root, k, 0)
    return root


def write_module(root: Path, k: int, gen: int) -> None:
    body = "".join(f"/// f{j} of m{k}\npub fn f{j}_g{gen}(x: u32) -> u32 {{ x + {j} }}\n"
                   for j in range(30))
    (root / "src" / f"m{k}.rs").write_text(f"pub struct S{k}G{gen};\n{body}")


def check(db: str, root: Path) -> list[str]:
    """integrity_check, foreign_key_check and the app invariants; the problems found."""
    from indexer.parse import content_hash

    problems: list[str] = []
    c = sqlite3.connect(db)
    try:
        if (r := c.execute("PRAGMA integrity_check").fetchone()[0]) != "ok":
            problems.append(f"integrity_check: {r}")
        if c.execute("PRAGMA foreign_key_check").fetchall():
            problems.append("foreign_key_check")
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "files" not in tables:
            return problems                 # killed before the schema existed
        for sql, what in [
            ("SELECT count(*) FROM names WHERE path NOT IN (SELECT path FROM files)",
             "name without a file"),
            ("SELECT count(*) FROM files WHERE path NOT IN (SELECT path FROM contents)",
             "file without contents"),
            ("SELECT count(*) FROM files f WHERE nitems > 0 AND NOT EXISTS "
             "(SELECT 1 FROM names n WHERE n.path = f.path)", "file without its names")]:
            if (n := c.execute(sql).fetchone()[0]):
                problems.append(f"{n} {what}")
        # A row whose stat matches the disk must hold the disk's hash (else it is never
        # re-read): any other row is stale and will be re-hashed by the next scan.
        for path, h, size, mtime in c.execute(
                "SELECT path, content_hash, size, mtime_ns FROM files WHERE origin='disk'"):
            p = root / path
            if not p.exists():
                continue
            st = p.stat()
            if (st.st_size, st.st_mtime_ns) == (size, mtime) and \
                    content_hash(p.read_bytes()) != h:
                problems.append(f"{path}: stat matches, hash does not")
    finally:
        c.close()
    return problems


def dump(db: str) -> bytes:
    """Every table's rows, sorted (the `generation` counter left out)."""
    c = sqlite3.connect(db)
    c.text_factory = bytes                  # damaged text must not stop the dump
    try:
        out = []
        tables = [t.decode() for (t,) in
                  c.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY 1")]
        for t in tables:
            rows = sorted(map(repr, c.execute(f"SELECT * FROM {t}")))
            if t == "meta":
                rows = [r for r in rows if "b'generation'" not in r]
            out.append(f"{t}\n" + "\n".join(rows))
        return "\n".join(out).encode()
    finally:
        c.close()


def drive(ws: str, cache: str, clean_cache: str, rounds: int, seed: int) -> dict:
    """Run in a fresh process: index in forked children killed at a uniform random moment;
    check after each kill; converge; compare with a clean index."""
    from indexer import store
    from indexer.store import Index, default_db_path
    from indexer.workspace import ScanOptions

    store.COMMIT_EVERY_FILES = 5
    opts = ScanOptions(include_deps=False, include_std=False)
    root = Path(ws)
    db = default_db_path([ws], cache)
    rng = random.Random(seed)

    def index_in_child() -> int:
        pid = os.fork()
        if pid == 0:
            try:
                with Index([ws], options=opts, cache_dir=cache, workers=0) as ix:
                    ix.reconcile()
            finally:
                os._exit(0)
        return pid

    t0 = time.monotonic()                   # a full cold index, timed (then thrown away)
    os.waitpid(index_in_child(), 0)
    full_s = time.monotonic() - t0
    for suffix in ("", "-wal", "-shm"):
        Path(db + suffix).unlink(missing_ok=True)
    report: dict = {"full_s": full_s, "killed": 0, "finished": 0, "problems": [],
                    "rebuilt": 0}
    gen = 0
    for r in range(rounds):
        if r:                               # the disk changes between rounds
            gen += 1
            for k in rng.sample(range(FILES), CHANGED):
                write_module(root, k, gen)
        pid = index_in_child()
        time.sleep(rng.uniform(0, full_s))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        report["killed" if os.WIFSIGNALED(status) else "finished"] += 1
        report["problems"] += [f"round {r}: {p}" for p in check(db, root)]
    with Index([ws], options=opts, cache_dir=cache, workers=0) as ix:
        report["rebuilt"] = int(ix.rebuilt_reason is not None)
        ix.reconcile()
        report["items"] = len(ix.items_named(f"f29_g{gen}"))
    report["expected_items"] = sum(f"f29_g{gen}(" in p.read_text()
                                   for p in root.rglob("m*.rs"))
    report["problems"] += [f"converged: {p}" for p in check(db, root)]
    with Index([ws], options=opts, cache_dir=clean_cache, workers=0) as ix:
        ix.reconcile()
    clean = dump(default_db_path([ws], clean_cache))
    report["dump_bytes"] = len(clean)
    report["equal"] = dump(db) == clean
    return report


def test_r08_kill9_during_indexing(tmp_path: Path) -> None:
    """50 rounds on a 152-file crate (0.6 MB): an indexing process is SIGKILLed at a uniform
    random moment (0 to the time of a full cold index), 40 files rewritten before each round
    (so each round has parsing and commits to interrupt); after every kill
    integrity_check ok, foreign_key_check empty, invariants hold; after convergence the
    canonical dump equals a clean index's byte for byte."""
    ws = make_workspace(tmp_path / "ws", FILES)
    code = ("import json, sys; from tests.reliability.test_r08_kill9_indexing import drive; "
            "print(json.dumps(drive(*sys.argv[1:4], int(sys.argv[4]), 8)))")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, str(ws), str(tmp_path / "cache"),
                          str(tmp_path / "clean"), str(ROUNDS)], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=140,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nR8: {ROUNDS} rounds in {time.monotonic() - t0:.1f} s (full index "
          f"{report['full_s']:.2f} s): {report['killed']} killed mid-way, "
          f"{report['finished']} finished; dump {report['dump_bytes']} bytes, "
          f"equal={report['equal']}")
    assert report["problems"] == []
    assert report["killed"] >= ROUNDS // 3      # the rest finished before the kill
    assert report["rebuilt"] == 0 and report["items"] == report["expected_items"] > 0
    assert report["equal"]
