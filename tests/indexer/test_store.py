"""The SQLite index: persistence, warm start, incremental updates, atomicity, corruption."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from indexer import store as store_mod
from indexer.store import SCHEMA_VERSION, Index, default_db_path
from indexer.workspace import ScanOptions

FIX = Path(__file__).parent / "fixtures"
OPTS = ScanOptions(include_deps=False)        # std stub included: it is part of a real index


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    shutil.copytree(FIX / "wordcount", tmp_path / "ws")
    return tmp_path / "ws"


def open_index(ws: Path, tmp_path: Path, **kw) -> Index:
    return Index([ws], options=OPTS, cache_dir=str(tmp_path / "cache"), workers=0, **kw)


def names(index: Index, name: str) -> list[tuple[str, str, str]]:
    return [(it.kind, it.path, it.module) for it in index.items_named(name)]


def test_cold_index_view_and_path_modules(ws: Path, tmp_path: Path) -> None:
    with open_index(ws, tmp_path) as index:
        assert index.generation == 0 and index.files() == []
        st = index.reconcile()
        assert (st.parsed, st.unchanged, st.removed) == (6, 0, 0)
        assert index.files() == ["<std-stub>/lib.rs", "src/count.rs", "src/lib.rs",
                                 "src/text/lexer.rs", "src/text/mod.rs",
                                 "src/weird/other_name.rs"]
        assert index.generation > 0
        assert names(index, "WordCount") == [
            ("struct", "src/count.rs", "crate::count"), ("impl", "src/count.rs", "crate::count"),
            ("impl", "src/count.rs", "crate::count"), ("impl", "src/count.rs", "crate::count")]
        # #[path = "weird/other_name.rs"] mod renamed; -> the file's items move module.
        assert names(index, "renamed_fn") == [("fn", "src/weird/other_name.rs",
                                               "crate::renamed")]
        assert index.file("src/weird/other_name.rs").module == "crate::renamed"
        assert ("trait", "<std-stub>/lib.rs", "crate::fmt") in names(index, "Display")
        assert index.file("<std-stub>/lib.rs").read_only
        assert index.text("src/count.rs") == (ws / "src/count.rs").read_text()
        assert index.file("nope.rs") is None and index.text("nope.rs") is None
        files, items, size = index.totals()
        assert files == 6 and items == st.items and size == st.bytes
        assert index.key_for(ws / "src" / "lib.rs") == "src/lib.rs"
        assert index.key_for("/elsewhere/x.rs") is None


def test_warm_start_reparses_only_changed(ws: Path, tmp_path: Path, monkeypatch) -> None:
    with open_index(ws, tmp_path) as index:
        index.reconcile()
        gen = index.generation
    parsed: list[str] = []
    real = store_mod.parse_many

    def spy(jobs, **kw):
        parsed.extend(j.path for j in jobs)
        return real(jobs, **kw)

    monkeypatch.setattr(store_mod, "parse_many", spy)
    with open_index(ws, tmp_path) as index:
        assert index.generation == gen                     # persisted
        st = index.reconcile()
        assert (st.parsed, st.unchanged, parsed) == (0, 6, [])
        assert index.generation == gen                     # nothing changed, same generation
        # Same bytes, new mtime: hashed, not parsed.
        p = ws / "src" / "count.rs"
        os.utime(p, ns=(1, 1))
        st = index.reconcile()
        assert (st.parsed, parsed) == (0, [])
        # New content in one file; one new file; one deleted file.
        p.write_text(p.read_text().replace("pub fn get(", "pub fn lookup("))
        (ws / "src" / "extra.rs").write_text("pub struct Extra;\n")
        (ws / "src" / "text" / "lexer.rs").unlink()
        st = index.reconcile()
        assert sorted(parsed) == ["src/count.rs", "src/extra.rs"]
        assert (st.parsed, st.removed) == (2, 1)
        assert names(index, "get") == []
        assert names(index, "lookup") == [("method", "src/count.rs", "crate::count")]
        assert names(index, "Lexer") == []
        assert "src/text/lexer.rs" not in index.files()
        assert index.generation > gen


def test_editor_buffer_wins_until_dropped(ws: Path, tmp_path: Path) -> None:
    with open_index(ws, tmp_path) as index:
        index.reconcile()
        g0 = index.generation
        fi = index.update_text("src/count.rs", "pub struct Unsaved;\n")
        assert [it.name for it in fi.items] == ["Unsaved"]
        assert index.generation == g0 + 1
        assert index.text("src/count.rs") == "pub struct Unsaved;\n"
        assert names(index, "Unsaved") == [("struct", "src/count.rs", "crate::count")]
        assert names(index, "WordCount") == []
        # The same text again is no change (prefix caching relies on a stable generation).
        index.update_text("src/count.rs", "pub struct Unsaved;\n")
        assert index.generation == g0 + 1
        # A scan leaves the buffer alone even when the disk changes.
        (ws / "src" / "count.rs").write_text("pub struct OnDisk;\n")
        index.reconcile()
        assert names(index, "Unsaved") != [] and names(index, "OnDisk") == []
        index.drop_buffer("src/count.rs")
        assert names(index, "OnDisk") == [("struct", "src/count.rs", "crate::count")]
        assert names(index, "Unsaved") == []
        # A buffer for a file not on disk yet (new, unsaved).
        fi = index.update_text("src/text/fresh.rs", "pub fn fresh() {}\n")
        assert fi.module == "crate::text::fresh" and fi.crate == "wordcount"
        index.remove("src/text/fresh.rs")
        assert names(index, "fresh") == []


def test_buffers_do_not_survive_a_restart(ws: Path, tmp_path: Path) -> None:
    with open_index(ws, tmp_path) as index:
        index.reconcile()
        index.update_text("src/count.rs", "pub struct Unsaved;\n")
    with open_index(ws, tmp_path) as index:
        st = index.reconcile()
        assert st.parsed == 1
        assert names(index, "Unsaved") == [] and len(names(index, "WordCount")) == 4


def test_update_is_atomic_per_file(ws: Path, tmp_path: Path, monkeypatch) -> None:
    with open_index(ws, tmp_path) as index:
        index.reconcile()
        before = index.file("src/count.rs")
        g0 = index.generation
        real = Index._write

        def half_write(self, p, **kw):
            real(self, p, **kw)          # rows of the new version are written ...
            raise OSError("disk gone")   # ... then the transaction fails

        monkeypatch.setattr(Index, "_write", half_write)
        with pytest.raises(OSError):
            index.update_text("src/count.rs", "pub struct Half;\n")
        monkeypatch.undo()
        assert index.generation == g0
        assert index.file("src/count.rs") == before
        assert names(index, "Half") == []
        assert len(names(index, "WordCount")) == 4
        assert index.text("src/count.rs") == (ws / "src/count.rs").read_text()


def test_refresh_single_files(ws: Path, tmp_path: Path) -> None:
    with open_index(ws, tmp_path) as index:
        index.reconcile()
        (ws / "src" / "lib.rs").write_text("pub fn only() {}\n")
        (ws / "src" / "new.rs").write_text("pub fn newer() {}\n")
        (ws / "src" / "count.rs").unlink()
        assert index.refresh(["src/lib.rs", "src/new.rs", "src/count.rs"]) == 3
        assert names(index, "only") == [("fn", "src/lib.rs", "crate")]
        assert names(index, "newer") == [("fn", "src/new.rs", "crate::new")]
        assert names(index, "WordCount") == []
        assert index.refresh(["src/lib.rs"]) == 0


def test_corrupt_database_is_rebuilt(ws: Path, tmp_path: Path) -> None:
    with open_index(ws, tmp_path) as index:
        index.reconcile()
        db = Path(index.db_path)
    db.write_bytes(b"this is not a database" * 100)
    with open_index(ws, tmp_path) as index:
        assert index.rebuilt_reason and index.persistent
        assert index.files() == []
        st = index.reconcile()
        assert st.parsed == 6 and len(names(index, "WordCount")) == 4
    assert list(db.parent.glob(db.name + ".bad-*"))     # the bad copy is kept aside


def test_damaged_pages_are_rebuilt(ws: Path, tmp_path: Path) -> None:
    with open_index(ws, tmp_path) as index:
        index.reconcile()
        db = Path(index.db_path)
    data = bytearray(db.read_bytes())
    assert len(data) > 8192
    for i in range(4096, len(data), 512):     # corruptC-style damage after the header page
        data[i:i + 16] = b"\xff" * 16
    db.write_bytes(bytes(data))
    with open_index(ws, tmp_path) as index:
        index.reconcile()
        assert len(names(index, "WordCount")) == 4


def test_old_schema_is_rebuilt(ws: Path, tmp_path: Path) -> None:
    db = default_db_path([ws], str(tmp_path / "cache"))
    Path(db).parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE files(path TEXT)")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 99}")
    with open_index(ws, tmp_path) as index:
        assert "schema version" in index.rebuilt_reason
        assert index.reconcile().parsed == 6


def test_unusable_cache_folder_falls_back_to_memory(ws: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with open_index(ws, tmp_path) as index:
        assert not index.persistent
        assert index.reconcile().parsed == 6
        assert len(names(index, "WordCount")) == 4


def test_permissions_and_secrets(ws: Path, tmp_path: Path) -> None:
    canary = "CANARY-7f3a9c"
    (ws / ".env").write_text(f"API_KEY={canary}\n")
    (ws / ".env.local").write_text(f"API_KEY={canary}\n")
    (ws / ".gitignore").write_text("src/secret.rs\n")
    (ws / "src" / "secret.rs").write_text(f'const KEY: &str = "{canary}";\n')
    with open_index(ws, tmp_path) as index:
        st = index.reconcile()
        assert ("src/secret.rs", "gitignored") in [(s.path, s.reason) for s in st.skipped]
        db = Path(index.db_path)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    for f in db.parent.iterdir():
        assert canary.encode() not in f.read_bytes(), f


def test_token_counts_persist(ws: Path, tmp_path: Path) -> None:
    with open_index(ws, tmp_path) as index:
        assert index.get_token_count("abc#0", "demo") is None
        index.put_token_count("abc#0", "demo", 17)
        index.put_token_count("abc#0", "other", 19)
        assert index.get_token_count("abc#0", "demo") == 17
    with open_index(ws, tmp_path) as index:
        assert index.get_token_count("abc#0", "demo") == 17
        assert index.get_token_count("abc#0", "other") == 19


def test_one_database_per_workspace(tmp_path: Path) -> None:
    a = default_db_path(["/x/a"], str(tmp_path))
    assert a == default_db_path(["/x/a/"], str(tmp_path))
    assert a != default_db_path(["/x/b"], str(tmp_path))
    assert default_db_path(["/x/a", "/x/b"], str(tmp_path)) == \
        default_db_path(["/x/b", "/x/a"], str(tmp_path))


# -- reliability: kill -9, disk full, WAL growth (reliability-notes §4) --------------------

def _big_ws(root: Path, nfiles: int) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[package]\nname = "big"\nversion = "0.1.0"\n')
    (root / "src" / "lib.rs").write_text("".join(f"pub mod m{k};\n" for k in range(nfiles)))
    body = "".join(f"/// f{j}\npub fn f{j}(x: u32) -> u32 {{ x + {j} }}\n" for j in range(40))
    for k in range(nfiles):
        (root / "src" / f"m{k}.rs").write_text(f"pub struct S{k};\n{body}")
    return root


def _consistent(db: str) -> None:
    """integrity_check, and our invariants: every file row has its contents and names."""
    c = sqlite3.connect(db)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("SELECT count(*) FROM files WHERE path NOT IN "
                         "(SELECT path FROM contents)").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM names WHERE path NOT IN "
                         "(SELECT path FROM files)").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM files f WHERE nitems > 0 AND NOT EXISTS "
                         "(SELECT 1 FROM names n WHERE n.path = f.path)").fetchone()[0] == 0
    finally:
        c.close()


_INDEXER = """
import sys
from indexer import store
from indexer.store import Index
from indexer.workspace import ScanOptions
store.COMMIT_EVERY_FILES = 5
with Index([sys.argv[1]], options=ScanOptions(include_deps=False, include_std=False),
           cache_dir=sys.argv[2], workers=0) as ix:
    ix.reconcile()
"""


@pytest.mark.parametrize("kill_after_files", [5, 40, 120])
def test_kill_9_during_indexing(tmp_path: Path, kill_after_files: int) -> None:
    """A process indexing is SIGKILLed mid-way; the next open is consistent and completes."""
    import signal
    import subprocess
    import sys
    import time
    ws = _big_ws(tmp_path / "ws", 200)
    cache = tmp_path / "cache"
    db = default_db_path([ws], str(cache))
    repo = Path(__file__).parents[2]
    proc = subprocess.Popen([sys.executable, "-c", _INDEXER, str(ws), str(cache)], cwd=repo,
                            env={**os.environ, "PYTHONPATH": str(repo)})
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as c:
                    if c.execute("SELECT count(*) FROM files").fetchone()[0] >= kill_after_files:
                        break
            except sqlite3.Error:
                pass
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL        # killed mid-way, not finished
    _consistent(db)
    with Index([ws], options=ScanOptions(include_deps=False, include_std=False),
               cache_dir=str(cache), workers=0) as index:
        assert index.rebuilt_reason is None
        st = index.reconcile()
        assert st.files == 201 and not st.skipped
        assert len(index.items_named("f39")) == 200
    _consistent(db)


def test_disk_full_mid_index_keeps_the_index_consistent(tmp_path: Path, caplog,
                                                         monkeypatch) -> None:
    """SQLITE_FULL in the middle of a scan and of an editor update: logged, rolled back,
    no exception; the rows already committed stay, and the index recovers once space is
    back."""
    ws = _big_ws(tmp_path / "ws", 60)
    monkeypatch.setattr(store_mod, "COMMIT_EVERY_FILES", 10)
    opts = ScanOptions(include_deps=False, include_std=False)
    with Index([ws], options=opts, cache_dir=str(tmp_path / "cache"), workers=0) as index:
        index._conn.execute("PRAGMA max_page_count=60")      # ~240 kB: "the disk is full"
        st = index.reconcile()
        assert st.failed > 0
        assert "not saved" in caplog.text
        n_files = index.totals()[0]
        assert 0 < n_files < 61
        fi = index.update_text("src/m1.rs", "pub struct Edited;\n" * 2000)
        assert fi.items and fi.items[0].name == "Edited"
        _consistent(index.db_path)
        index._conn.execute("PRAGMA max_page_count=1000000")
        st = index.reconcile()
        assert st.failed == 0 and index.totals()[0] == 61
    _consistent(index.db_path)


def test_wal_stays_bounded_over_many_updates(ws: Path, tmp_path: Path) -> None:
    """Hundreds of editor updates and scans with queries in between: the -wal file is
    checkpointed and truncated, so it stays bounded."""
    with open_index(ws, tmp_path) as index:
        index.reconcile()
        text = (ws / "src" / "count.rs").read_text()
        wal = index.db_path + "-wal"
        biggest = 0
        for k in range(400):
            index.update_text("src/count.rs", text + f"\npub fn added{k}() {{}}\n" * 50)
            assert index.items_named(f"added{k}")
            if k % 50 == 0:
                index.refresh(["src/lib.rs"])
            biggest = max(biggest, os.path.getsize(wal))
        assert biggest < store_mod.WAL_LIMIT_BYTES + (4 << 20)
    _consistent(index.db_path)


# -- I/O-error injection (reliability-notes §4: SQLite's own I/O-error loop) ----------------

apsw = pytest.importorskip("apsw")


class FaultVFS(apsw.VFS):
    """A VFS over the default one that fails the `fail_at`-th read, write, sync or truncate
    (counted from `arm`) with SQLITE_IOERR, as SQLite's I/O-error tests do."""

    def __init__(self, name: str) -> None:
        self.name, self.count, self.fail_at, self.fired = name, 0, 0, False
        super().__init__(name, "")

    def arm(self, fail_at: int) -> None:
        self.count, self.fail_at, self.fired = 0, fail_at, False

    def xOpen(self, name, flags):  # noqa: N802 (apsw's method names)
        return FaultFile(self, name, flags)

    def tick(self) -> None:
        self.count += 1
        if self.count == self.fail_at:
            self.fired = True
            raise apsw.IOError("injected I/O error")


class FaultFile(apsw.VFSFile):
    def __init__(self, vfs: FaultVFS, name, flags) -> None:
        self.vfs = vfs
        super().__init__("", name, flags)

    def xRead(self, amount, offset):  # noqa: N802
        self.vfs.tick()
        return super().xRead(amount, offset)

    def xWrite(self, data, offset):  # noqa: N802
        self.vfs.tick()
        return super().xWrite(data, offset)

    def xSync(self, flags):  # noqa: N802
        self.vfs.tick()
        return super().xSync(flags)

    def xTruncate(self, newsize):  # noqa: N802
        self.vfs.tick()
        return super().xTruncate(newsize)


class _Rows:
    def __init__(self, rows: list) -> None:
        self.rows = rows

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list:
        return self.rows

    def __iter__(self):
        return iter(self.rows)


class ApswConnection:
    """The part of `sqlite3.Connection` the store uses, over apsw (whose SQLite sees the
    Python VFS), with apsw's errors turned into sqlite3's."""

    def __init__(self, path: str, vfs: str) -> None:
        self.conn = self._call(apsw.Connection, path, vfs=vfs)
        self.conn.set_busy_timeout(10_000)

    @staticmethod
    def _call(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (apsw.CorruptError, apsw.NotADBError) as exc:
            raise sqlite3.DatabaseError(str(exc)) from exc
        except apsw.Error as exc:
            raise sqlite3.OperationalError(f"{type(exc).__name__}: {exc}") from exc

    def execute(self, sql: str, params=()) -> _Rows:
        return self._call(lambda: _Rows(list(self.conn.execute(sql, params))))

    def executemany(self, sql: str, seq) -> _Rows:
        return self._call(lambda: _Rows(list(self.conn.executemany(sql, list(seq)))))

    def executescript(self, sql: str) -> None:
        self._call(lambda: list(self.conn.execute(sql)))

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def close(self) -> None:
        self._call(self.conn.close)


def _state(index: Index) -> dict[str, str]:
    return {p: fi.content_hash for p in index.files() if (fi := index.file(p)) is not None}


def _fault_loop(tmp_path: Path, ws: Path, base_db: Path, vfs: FaultVFS, run, want, caplog,
                step: int = 1) -> int:
    """Count the I/O calls of `run(index)` on a copy of `base_db`, then for n = 1..N fail
    the nth: nothing may escape, the file passes integrity_check, and the index reopens
    and reconciles to `want`. Returns N."""
    db = tmp_path / "fault.sqlite3"

    def attempt(fail_at: int) -> int:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        shutil.copy(base_db, db)
        vfs.arm(fail_at)
        caplog.clear()
        with Index([ws], options=OPTS, db_path=str(db), workers=0,
                   connect=lambda p: ApswConnection(p, vfs.name)) as index:
            run(index)                  # must not raise
        calls = vfs.count
        vfs.arm(0)
        if vfs.fired and not index.rebuilt_reason:
            assert any(r.levelname == "WARNING" for r in caplog.records), fail_at
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", fail_at
        with Index([ws], options=OPTS, db_path=str(db), workers=0) as index:
            st = index.reconcile()
            assert st.error is None and _state(index) == want, fail_at
        return calls

    total = attempt(0)
    for n in range(1, total + 1, step):
        attempt(n)
    return total


def test_io_errors_during_scan_and_update_leave_a_consistent_index(
        ws: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vfs = FaultVFS(f"fault-{os.getpid()}")
    try:
        base = tmp_path / "base.sqlite3"
        with Index([ws], options=OPTS, db_path=str(base), workers=0) as index:
            index.reconcile()
        # The scan: one file edited, one added, one deleted since the base index.
        (ws / "src" / "count.rs").write_text((ws / "src" / "count.rs").read_text()
                                             + "\npub fn added() {}\n")
        (ws / "src" / "extra.rs").write_text("pub struct Extra;\n")
        (ws / "src" / "lib.rs").write_text((ws / "src" / "lib.rs").read_text()
                                           + "\npub mod extra;\n")
        clean = tmp_path / "clean.sqlite3"
        with Index([ws], options=OPTS, db_path=str(clean), workers=0) as index:
            index.reconcile()
            want = _state(index)
        n_scan = _fault_loop(tmp_path, ws, base, vfs, lambda ix: ix.reconcile(), want,
                             caplog)
        # The update: an editor buffer over the scanned index (buffer rows do not outlive
        # the session: the reopened index equals the disk again).
        text = (ws / "src" / "count.rs").read_text() + "\nfn typed() {}\n"

        def update(index: Index) -> None:
            fi = index.update_text("src/count.rs", text)
            assert any(it.name == "typed" for it in fi.items)

        n_update = _fault_loop(tmp_path, ws, clean, vfs, update, want, caplog)
        assert n_scan > 20 and n_update > 5, (n_scan, n_update)
    finally:
        vfs.unregister()


def test_reconcile_leaves_its_objects_out_of_full_collections(ws: Path, tmp_path: Path) -> None:
    """After a scan, what it loaded sits in the collector's permanent generation (full
    passes over a big index landed on keystrokes: 126 ms each on 24K files)."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with open_index(ws, tmp_path) as index:
        index.reconcile()
        assert gc.get_freeze_count() > 0
    gc.unfreeze()
