"""R10: a closed index database with random bytes flipped, then opened (SQLite corruptC)."""

from __future__ import annotations

import random
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from indexer.store import Index, default_db_path
from indexer.workspace import ScanOptions
from tests.reliability.test_r08_kill9_indexing import dump

pytestmark = [pytest.mark.timeout(120)]

TRIALS = 100
FIXTURE = Path(__file__).parents[1] / "indexer" / "fixtures" / "ctx_geo"
OPTS = ScanOptions(include_deps=False, include_std=False)


def test_r10_corrupt_database(tmp_path: Path) -> None:
    """100 trials: 1-8 random bytes of a closed database flipped (anywhere in the file).
    No exception from open, reconcile or queries; a database SQLite finds corrupt is moved
    aside (`.bad-*`) and rebuilt (at open by integrity_check, or by the first scan that
    reads a damaged row); a row that cannot be decoded is re-parsed by the next scan;
    afterwards integrity_check is ok and the index answers. Flips inside row payloads that
    still decode (a path, source text) are counted: SQLite keeps no checksums."""
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE, ws)
    pristine = tmp_path / "pristine"
    with Index([ws], options=OPTS, cache_dir=str(pristine), workers=0) as ix:
        ix.reconcile()
        names = {n: len(ix.items_named(n)) for n in ("Shape", "area", "render")}
    src = Path(default_db_path([ws], str(pristine)))
    assert not Path(str(src) + "-wal").exists() or Path(str(src) + "-wal").stat().st_size == 0
    clean = dump(str(src))
    data0 = src.read_bytes()
    rng = random.Random(10)
    detected = silent = harmless = 0
    t0 = time.monotonic()
    for trial in range(TRIALS):
        cache = tmp_path / f"c{trial}"
        db = Path(default_db_path([ws], str(cache)))
        db.parent.mkdir(parents=True, mode=0o700)
        data = bytearray(data0)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
        db.write_bytes(bytes(data))
        db.chmod(0o600)
        with Index([ws], options=OPTS, cache_dir=str(cache), workers=0) as ix:
            assert ix.persistent
            ix.reconcile()
            got = {n: len(ix.items_named(n)) for n in names}
            for path in ix.files():
                ix.file(path)
                ix.text(path)
            ix.reconcile()                  # rows found unreadable above are re-parsed
            rebuilt = ix.rebuilt_reason is not None
        with sqlite3.connect(db) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok", trial
        if rebuilt:
            detected += 1
            assert list(db.parent.glob(db.name + ".bad-*")), trial
            assert dump(str(db)) == clean and got == names, trial
        elif dump(str(db)) == clean:
            harmless += 1                   # flips in free space, or repaired by the scan
        else:
            silent += 1

        shutil.rmtree(cache)
    elapsed = time.monotonic() - t0
    print(f"\nR10: {TRIALS} trials ({len(data0)} byte database) in {elapsed:.1f} s: "
          f"{detected} detected and rebuilt, {harmless} harmless, {silent} undetected "
          "payload changes")
    assert detected >= TRIALS // 10 and detected + harmless + silent == TRIALS
