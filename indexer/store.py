"""The persistent index: one SQLite database per workspace, kept equal to the disk by scans.

`Index` implements `IndexView` for context assembly. Rows are keyed by index path and
content hash; `reconcile()` (a discovery scan: stat, then hash, then parse what changed)
decides what is on disk, so a warm start re-parses only changed files. Editor buffers
(`update_text`) win over disk until `drop_buffer`. Each file's rows are replaced inside one
transaction; cold indexing commits in batches of files from one writer (this object).

SQLite settings and failure handling follow reliability-notes §4: WAL + synchronous=NORMAL
(a cache: consistent, may lose the last commits on power loss), schema version in
`PRAGMA user_version` (+ a record-layout fingerprint), `integrity_check` at open, a corrupt or
old database moved aside and rebuilt, an unwritable cache folder -> an in-memory database.
A database error (I/O, disk full) never escapes the public methods: it is logged, the
transaction rolls back, and the method returns an empty answer (`reconcile` sets
`ScanStats.error`); tests/indexer/test_store.py fails the nth I/O call through an apsw VFS.
The database is mode 0600 in a 0700 folder (§7).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from indexer import codec
from indexer.build import Job, Parsed, ProgressFn, parse_job, parse_many
from indexer.items import FileIndex, Item, SkippedFile
from indexer.parse import IncrementalFile, content_hash, module_for_path, parse_file
from indexer.workspace import (
    Crate,
    Discovery,
    ScanOptions,
    SourceFile,
    discover,
    relocate,
    resolve_path_modules,
    root_keys,
)

log = logging.getLogger(__name__)

#: Bump when the table layout changes: an older database is rebuilt.
SCHEMA_VERSION = 1
#: Files per write transaction during a scan (one commit costs ~1 ms in WAL/NORMAL).
COMMIT_EVERY_FILES = 200
#: Size the -wal file is truncated to after a checkpoint.
WAL_LIMIT_BYTES = 8 << 20
#: Decoded FileIndex records kept in memory (LRU).
FILE_CACHE_SIZE = 4096
#: Open editor buffers whose parse trees are kept for incremental updates (the most
#: recently edited ones).
BUFFER_TREES = 32
#: Token counts buffered before a write.
TOKEN_FLUSH_EVERY = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files(
    path TEXT PRIMARY KEY, abspath TEXT, content_hash TEXT NOT NULL, size INTEGER,
    mtime_ns INTEGER, module TEXT, base_module TEXT, crate TEXT, read_only INTEGER,
    origin TEXT, nitems INTEGER, mods TEXT);
CREATE TABLE IF NOT EXISTS contents(path TEXT PRIMARY KEY, blob BLOB, text TEXT);
CREATE TABLE IF NOT EXISTS names(name TEXT NOT NULL, path TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS names_name ON names(name);
CREATE INDEX IF NOT EXISTS names_path ON names(path);
CREATE TABLE IF NOT EXISTS skipped(path TEXT PRIMARY KEY, reason TEXT);
CREATE TABLE IF NOT EXISTS token_counts(
    key TEXT, counter TEXT, n INTEGER, PRIMARY KEY(key, counter)) WITHOUT ROWID;
"""


def default_db_path(roots: Sequence[str | os.PathLike[str]], cache_dir: str | None = None) -> str:
    """`<user cache>/hybrid-lsp/index/<hash of the roots>.sqlite3`."""
    base = Path(cache_dir) if cache_dir else Path(platformdirs.user_cache_dir("hybrid-lsp"))
    key = "\n".join(sorted(os.path.realpath(os.fspath(r)) for r in roots))
    return str(base / "index" / (hashlib.sha256(key.encode()).hexdigest()[:20] + ".sqlite3"))


_T = TypeVar("_T")


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)


def _guarded(default: Any) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """A public method that logs a database error and returns `default` (never raises it):
    the index is a cache, and its callers (completion, context) must go on without it."""
    def wrap(fn: Callable[..., _T]) -> Callable[..., _T]:
        @wraps(fn)
        def guarded(self: Index, *args: Any, **kwargs: Any) -> _T:
            try:
                return fn(self, *args, **kwargs)
            except sqlite3.Error as exc:
                log.warning("index %s failed: %s", fn.__name__, exc)
                with self._lock:
                    _rollback_quietly(self._conn)
                return default
        return guarded
    return wrap


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """Leave no transaction open after an error (SQLite may have rolled back already)."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.warning("index rollback failed: %s", exc)


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error as exc:
        log.warning("index database close failed: %s", exc)


@dataclass
class ScanStats:
    """What one `reconcile()` did."""

    files: int = 0          # files in the index afterwards
    parsed: int = 0
    unchanged: int = 0
    removed: int = 0
    relocated: int = 0      # files whose module changed (#[path])
    parsed_bytes: int = 0
    items: int = 0          # items in the index afterwards
    bytes: int = 0          # bytes of source in the index afterwards
    seconds: float = 0.0
    failed: int = 0         # parsed files whose rows could not be written (disk full, I/O)
    skipped: list[SkippedFile] = field(default_factory=list)
    error: str | None = None    # the database error that stopped the scan (logged)


class Index:
    """A workspace's index (implements `IndexView`). Thread-safe; one writer per process."""

    def __init__(self, roots: Sequence[str | os.PathLike[str]], *,
                 options: ScanOptions | None = None, db_path: str | None = None,
                 cache_dir: str | None = None, workers: int | None = None,
                 connect: Callable[[str], sqlite3.Connection] | None = None) -> None:
        """`connect(path)` opens the database file (default: `sqlite3.connect` in
        autocommit mode); tests pass one that injects I/O errors."""
        self._connect = connect or _connect
        self.roots = [os.path.realpath(os.fspath(r)) for r in roots]
        self.options = options if options is not None else ScanOptions()
        self.workers = workers
        self.db_path = db_path or default_db_path(self.roots, cache_dir)
        self.persistent = True
        self.rebuilt_reason: str | None = None
        self._lock = threading.RLock()         # the connection and caches
        self._scan_lock = threading.Lock()      # one reconcile at a time
        self._cache: OrderedDict[str, FileIndex] = OrderedDict()
        self._files: list[str] | None = None
        self._crates: list[Crate] = []
        self._tokens: dict[tuple[str, str], int] = {}
        self._tokens_pending: list[tuple[str, str, int]] = []
        self._buffers: OrderedDict[str, IncrementalFile] = OrderedDict()
        self._conn = self._open()
        try:
            self.generation = int(self._meta("generation") or 0)
        except (sqlite3.Error, ValueError) as exc:
            log.warning("index generation unreadable (%s); starting from 0", exc)
            self.generation = 0

    # -- opening -------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            return self._open_file()
        except (OSError, sqlite3.Error) as exc:
            log.warning("index database %s unusable (%s); keeping the index in memory",
                        self.db_path, exc)
            self.persistent = False
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._init(conn)
            return conn

    def _open_file(self) -> sqlite3.Connection:
        folder = os.path.dirname(self.db_path)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)
        for attempt in range(2):
            fd = os.open(self.db_path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            conn = None
            try:
                conn = self._connect(self.db_path)
                problem = self._check(conn)
                if problem is None:
                    self._init(conn)
                    return conn
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                # SQLITE_CORRUPT, SQLITE_NOTADB; a damaged schema text can also surface as
                # an error message that is not UTF-8 (tests/reliability R10).
                problem = f"corrupt ({exc})"
            if conn is not None:
                _close_quietly(conn)
            if attempt == 1:
                raise sqlite3.DatabaseError(f"cannot rebuild {self.db_path}: {problem}")
            self.rebuilt_reason = problem
            self._move_aside(problem)
        raise AssertionError("unreachable")

    def _check(self, conn: sqlite3.Connection) -> str | None:
        """None when the database is usable as is, else why it must be rebuilt."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version == 0 and tables == 0:
            return None                             # a new, empty file
        if version != SCHEMA_VERSION:
            return f"schema version {version}, expected {SCHEMA_VERSION}"
        # integrity_check, not quick_check: quick_check misses index entries that do not
        # match their rows (a flipped byte in `names_path` left orphan names behind;
        # tests/reliability R10). It costs ~10 ms on a 10 MB index.
        row = conn.execute("PRAGMA integrity_check(1)").fetchone()
        if row is None or row[0] != "ok":
            return f"integrity_check: {row[0] if row else 'no answer'}"
        fp = conn.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
        if fp is None or fp[0] != codec.FINGERPRINT:
            return "record layout changed"
        return None

    def _move_aside(self, problem: str) -> None:
        log.warning("index database %s: %s; rebuilding", self.db_path, problem)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("-wal", "-shm"):
            try:
                os.remove(self.db_path + suffix)
            except FileNotFoundError:
                pass
        aside = f"{self.db_path}.bad-{stamp}"
        os.replace(self.db_path, aside)
        # Keep only the newest copy aside: it is evidence, not a backup.
        for old in Path(self.db_path).parent.glob(Path(self.db_path).name + ".bad-*"):
            if str(old) != aside:
                old.unlink(missing_ok=True)

    def _init(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # The WAL is checkpointed every 1000 pages (default); this truncates the file after
        # a checkpoint, so its size stays bounded (reliability-notes §4).
        conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)",
                     (codec.FINGERPRINT,))
        # Buffers of an earlier session are gone: their rows must be re-read from disk.
        # (Their text was never stored: an empty hash makes the next scan re-read them.)
        conn.execute("UPDATE files SET origin='disk', mtime_ns=-1, content_hash='' "
                     "WHERE origin='buffer'")

    def close(self) -> None:
        with self._lock:
            self._flush_tokens()
            _close_quietly(self._conn)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    # -- IndexView -----------------------------------------------------------------------

    @_guarded([])
    def files(self) -> list[str]:
        with self._lock:
            if self._files is None:
                self._files = [r[0] for r in self._conn.execute(
                    "SELECT path FROM files ORDER BY path")]
            return list(self._files)

    @_guarded(None)
    def file(self, path: str) -> FileIndex | None:
        with self._lock:
            fi = self._cache.get(path)
            if fi is not None:
                self._cache.move_to_end(path)
                return fi
            row = self._conn.execute("SELECT blob FROM contents WHERE path=?",
                                     (path,)).fetchone()
            if row is None:
                return None
            try:
                fi = codec.decode(row[0])
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("unreadable index row for %s (%s)", path, exc)
                self._mark_stale(path)
                return None
            self._cache[path] = fi
            if len(self._cache) > FILE_CACHE_SIZE:
                self._cache.popitem(last=False)
            return fi

    @_guarded({})
    def record_keys(self) -> dict[str, tuple[str, str, str, bool]]:
        """path -> (content hash, module, crate, read_only) of every file record, read from
        the `files` table without decoding a record. Every write of a record writes these
        columns with it (`_resolve_modules` rewrites module and record together), so a
        record whose key is unchanged is unchanged: `context._Snapshot` re-reads only the
        others when a new generation is built."""
        with self._lock:
            return {p: (h, m or "", c or "", bool(r)) for p, h, m, c, r in self._conn.execute(
                "SELECT path, content_hash, module, crate, read_only FROM files")}

    @_guarded(None)
    def text(self, path: str) -> str | None:
        with self._lock:
            state = self._buffers.get(path)
            if state is not None and state.text is not None:
                return state.text
            try:
                row = self._conn.execute("SELECT text FROM contents WHERE path=?",
                                         (path,)).fetchone()
            except sqlite3.OperationalError as exc:    # damaged text: not UTF-8
                log.warning("unreadable index text for %s (%s)", path, exc)
                self._mark_stale(path)
                return None
            return row[0] if row else None

    @staticmethod
    def _damaged(exc: sqlite3.DatabaseError) -> bool:
        """Damage integrity_check cannot see at open (bytes inside a row), found by a scan."""
        return getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB") \
            or str(exc).startswith("Could not decode")

    def _rebuild(self, problem: str) -> None:
        """Move the database aside and start an empty one (tests/reliability R10)."""
        if not self.persistent:
            raise sqlite3.DatabaseError(problem)
        with self._lock:
            _close_quietly(self._conn)
            self._cache.clear()
            self._files = None
            self.rebuilt_reason = problem
            self._move_aside(problem)
            self._conn = self._open()

    def _mark_stale(self, path: str) -> None:
        """A row that cannot be read (damaged bytes) is re-parsed by the next scan
        (tests/reliability R10); caller holds the lock."""
        try:
            self._conn.execute("UPDATE files SET content_hash='', mtime_ns=-1 WHERE path=?",
                               (path,))
        except sqlite3.Error as exc:
            log.warning("index: cannot mark %s stale: %s", path, exc)

    @_guarded([])
    def items_named(self, name: str) -> list[Item]:
        with self._lock:
            paths = [r[0] for r in self._conn.execute(
                "SELECT path FROM names WHERE name=? ORDER BY path", (name,))]
            out: list[Item] = []
            for p in paths:
                fi = self.file(p)
                if fi is not None:
                    out.extend(it for it in fi.items if it.name == name)
            return out

    # -- more queries --------------------------------------------------------------------

    @_guarded([])
    def skipped(self) -> list[SkippedFile]:
        with self._lock:
            return [SkippedFile(p, r) for p, r in self._conn.execute(
                "SELECT path, reason FROM skipped ORDER BY path")]

    @_guarded((0, 0, 0))
    def totals(self) -> tuple[int, int, int]:
        """(files, items, bytes) in the index."""
        with self._lock:
            n, items, size = self._conn.execute(
                "SELECT count(*), coalesce(sum(nitems), 0), coalesce(sum(size), 0) FROM files"
            ).fetchone()
            return int(n), int(items), int(size)

    @_guarded(None)
    def abspath(self, path: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT abspath FROM files WHERE path=?",
                                     (path,)).fetchone()
            return row[0] if row else None

    def key_for(self, abspath: str | os.PathLike[str]) -> str | None:
        """Index key of a file under one of the roots (None outside them)."""
        real = os.path.realpath(os.fspath(abspath))
        for root, prefix in zip(self.roots, root_keys(self.roots), strict=True):
            if real.startswith(root.rstrip(os.sep) + os.sep):
                return prefix + Path(os.path.relpath(real, root)).as_posix()
        return None

    # -- token counts (for context assembly) ---------------------------------------------

    @_guarded(None)
    def get_token_count(self, key: str, counter: str) -> int | None:
        """Cached token count of a chunk (`key`: content hash or chunk id) for a counter."""
        with self._lock:
            n = self._tokens.get((key, counter))
            if n is not None:
                return n
            row = self._conn.execute("SELECT n FROM token_counts WHERE key=? AND counter=?",
                                     (key, counter)).fetchone()
            if row is None:
                return None
            self._tokens[(key, counter)] = row[0]
            return int(row[0])

    def put_token_count(self, key: str, counter: str, n: int) -> None:
        with self._lock:
            self._tokens[(key, counter)] = n
            self._tokens_pending.append((key, counter, n))
            if len(self._tokens_pending) >= TOKEN_FLUSH_EVERY:
                self._flush_tokens()

    def _flush_tokens(self) -> None:
        if not self._tokens_pending:
            return
        try:
            with self._tx():
                self._conn.executemany("INSERT OR REPLACE INTO token_counts VALUES (?,?,?)",
                                       self._tokens_pending)
        except sqlite3.Error as exc:
            log.warning("token counts not saved: %s", exc)
        self._tokens_pending.clear()

    # -- writing -------------------------------------------------------------------------

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn)

    def _bump(self) -> None:
        self.generation += 1
        self._files = None
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)",
                           (str(self.generation),))

    def _write(self, p: Parsed, *, origin: str, base_module: str) -> None:
        """Replace one file's rows (call inside a transaction)."""
        j = p.job
        c = self._conn
        c.execute("DELETE FROM names WHERE path=?", (j.path,))
        c.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                  (j.path, j.abspath, p.content_hash, p.size, p.mtime_ns, p.module,
                   base_module, j.crate, int(j.read_only), origin, p.nitems, p.mods))
        c.execute("INSERT OR REPLACE INTO contents VALUES (?,?,?)", (j.path, p.blob, p.text))
        if p.names:
            c.executemany("INSERT INTO names VALUES (?,?)",
                          [(n, j.path) for n in p.names.split("\n")])
        c.execute("DELETE FROM skipped WHERE path=?", (j.path,))
        self._cache.pop(j.path, None)

    def _delete(self, path: str) -> None:
        for table in ("files", "contents", "names"):
            self._conn.execute(f"DELETE FROM {table} WHERE path=?", (path,))
        self._cache.pop(path, None)

    @_guarded(None)
    def clear(self) -> None:
        """Drop every file row (the next `reconcile` re-parses everything)."""
        with self._lock, self._tx():
            for table in ("files", "contents", "names", "skipped"):
                self._conn.execute(f"DELETE FROM {table}")
            self._cache.clear()
            self._buffers.clear()
            self._bump()

    def update_text(self, path: str, text: str) -> FileIndex:
        """An editor buffer's text for `path` (index key); it wins over disk until
        `drop_buffer`. A text equal to the indexed one changes nothing (same generation).
        A database error leaves the old rows (logged); the extraction is returned."""
        try:
            return self._update_text(path, text)
        except sqlite3.Error as exc:
            log.warning("index update of %s failed: %s", path, exc)
            with self._lock:
                _rollback_quietly(self._conn)
            module, crate = self._module_of_new(path)
            return parse_file(path, text.encode("utf-8", "replace"), module=module,
                              crate=crate)

    def _update_text(self, path: str, text: str) -> FileIndex:
        data = text.encode("utf-8", "replace")
        with self._lock:
            row = self._conn.execute(
                "SELECT content_hash, module, base_module, crate, read_only, abspath, origin "
                "FROM files WHERE path=?", (path,)).fetchone()
            digest = content_hash(data)
            if row is not None and row[0] == digest and row[6] == "buffer":
                cached = self.file(path)
                if cached is not None:
                    return cached
            if row is not None:
                module, base, crate, read_only, abspath = row[1], row[2], row[3], \
                    bool(row[4]), row[5]
            else:
                module, crate = self._module_of_new(path)
                base, read_only, abspath = module, False, self._abspath_of_new(path)
            fi = self._buffer_state(path, module, crate, read_only).update(data, digest)
            state = self._buffers[path]
            # The buffer's text lives in memory (`text()`); rows of buffers do not outlive
            # the session, and 200 kB per keystroke into the WAL is what made updates slow.
            p = _parsed_from(Job(path, abspath or "", module, crate, read_only), fi, None)
            try:
                with self._tx():
                    self._write(p, origin="buffer", base_module=base)
                    self._bump()
            except sqlite3.Error as exc:    # disk full, I/O error: the old rows stay
                log.warning("index update of %s not saved: %s", path, exc)
                return fi
            state.text = text
            self._cache[path] = fi
            return fi

    def _buffer_state(self, path: str, module: str, crate: str,
                      read_only: bool) -> IncrementalFile:
        """The kept parse state of an open buffer (a new one when its module moved)."""
        state = self._buffers.get(path)
        if state is None or (state.module, state.crate, state.read_only) != (
                module, crate, read_only):
            state = IncrementalFile(path, module=module, crate=crate, read_only=read_only)
        self._buffers[path] = state
        self._buffers.move_to_end(path)
        for old in list(self._buffers.values())[:-BUFFER_TREES]:
            old.forget_tree()               # its text stays: the buffer is still open
        return state

    @_guarded(None)
    def drop_buffer(self, path: str) -> None:
        """The editor closed `path`: the disk decides again."""
        with self._lock:
            self._buffers.pop(path, None)
            self._conn.execute("UPDATE files SET origin='disk', mtime_ns=-1, content_hash='' "
                               "WHERE path=? AND origin='buffer'", (path,))
        self.refresh([path])

    @_guarded(None)
    def remove(self, path: str) -> None:
        """Forget one file (deleted on disk, or no longer part of the workspace)."""
        with self._lock, self._tx():
            exists = self._conn.execute("SELECT 1 FROM files WHERE path=?",
                                        (path,)).fetchone()
            self._delete(path)
            self._buffers.pop(path, None)
            if exists:
                self._bump()

    @_guarded(0)
    def refresh(self, paths: Sequence[str]) -> int:
        """Re-read a few indexed files (watcher hints) in-process; returns how many changed.

        A path the index does not hold yet goes through a full `reconcile` instead: only
        discovery decides what may enter the index (.gitignore, hidden, size; secrets).
        """
        changed = 0
        unknown = False
        for path in paths:
            with self._lock:
                row = self._conn.execute(
                    "SELECT abspath, content_hash, module, base_module, crate, read_only, "
                    "origin FROM files WHERE path=?", (path,)).fetchone()
            if row is None:
                unknown = True
                continue
            if row[6] == "buffer":
                continue
            try:
                too_big = os.stat(row[0]).st_size > self.options.max_file_bytes
            except OSError:
                too_big = False             # parse_job reports it
            p = Parsed(Job(path, row[0]), reason="too large") if too_big else \
                parse_job(Job(path, row[0], row[2], row[4], bool(row[5])))
            with self._lock, self._tx():
                if p.reason is not None:
                    self._delete(path)
                    self._bump()
                    changed += 1
                    if p.reason != "vanished during indexing":
                        self._conn.execute("INSERT OR REPLACE INTO skipped VALUES (?,?)",
                                           (path, p.reason))
                elif row[1] != p.content_hash:
                    self._write(p, origin="disk", base_module=row[3])
                    self._bump()
                    changed += 1
                else:
                    self._conn.execute("UPDATE files SET mtime_ns=? WHERE path=?",
                                       (p.mtime_ns, path))
        if unknown:
            st = self.reconcile()
            changed += st.parsed + st.removed
        return changed

    def _module_of_new(self, path: str) -> tuple[str, str]:
        crate = max((c for c in self._crates if path.startswith(c.key_prefix)),
                    key=lambda c: len(c.key_prefix), default=None)
        if crate is None:
            return module_for_path(path), ""
        return module_for_path(path[len(crate.key_prefix):]), crate.name

    def _abspath_of_new(self, path: str) -> str | None:
        for root, prefix in zip(self.roots, root_keys(self.roots), strict=True):
            if path.startswith(prefix):
                return os.path.join(root, *path[len(prefix):].split("/"))
        return None

    # -- the scan ------------------------------------------------------------------------

    def reconcile(self, *, progress: ProgressFn | None = None,
                  cancel: Callable[[], bool] | None = None) -> ScanStats:
        """Make the index equal to the disk: discover, then parse what is new or changed
        (by size+mtime, then content hash), drop what vanished. Buffers are left alone."""
        with self._scan_lock:
            try:
                try:
                    return self._reconcile(progress, cancel)
                except sqlite3.DatabaseError as exc:
                    if not self._damaged(exc):
                        raise
                    self._rebuild(f"corrupt ({exc})")
                    return self._reconcile(progress, cancel)
            except sqlite3.Error as exc:    # I/O error, disk full: what was committed stays
                log.warning("index scan of %s failed: %s", self.db_path, exc)
                with self._lock:
                    _rollback_quietly(self._conn)
                return ScanStats(error=str(exc))

    def _reconcile(self, progress: ProgressFn | None,
                   cancel: Callable[[], bool] | None) -> ScanStats:
        t0 = time.perf_counter()
        disc = discover(self.roots, self.options)
        stats = ScanStats()
        with self._lock:
            self._crates = disc.crates
            rows = {r[0]: r for r in self._conn.execute(
                "SELECT path, content_hash, size, mtime_ns, module, base_module, origin "
                "FROM files")}
            todo, skips = self._changed(disc, rows, stats)
            changed = False
            with self._tx():
                for path in rows.keys() - {f.path for f in disc.files}:
                    if rows[path][6] != "buffer":
                        self._delete(path)
                        stats.removed += 1
                        changed = True
                self._conn.execute("DELETE FROM skipped")
                self._conn.executemany("INSERT OR REPLACE INTO skipped VALUES (?,?)",
                                       [(s.path, s.reason) for s in [*disc.skipped, *skips]])
            jobs = [Job(f.path, f.abspath, _job_module(f, rows.get(f.path)), f.crate,
                        f.read_only) for f in todo]
        base_of = {f.path: f.module for f in todo}
        # Parse without holding the lock (queries go on meanwhile); commit in batches.
        pending: list[Parsed] = []
        for p in parse_many(jobs, sizes=[f.size for f in todo], workers=self.workers,
                            progress=progress, cancel=cancel):
            pending.append(p)
            if len(pending) >= COMMIT_EVERY_FILES:
                changed |= self._commit(pending, base_of, stats)
                pending = []
        changed |= self._commit(pending, base_of, stats)
        with self._lock:
            if changed:
                try:
                    with self._tx():
                        stats.relocated = self._resolve_modules()
                        self._bump()
                except sqlite3.Error as exc:
                    log.warning("index modules not updated: %s", exc)
            stats.files, stats.items, stats.bytes = self.totals()
            stats.skipped = self.skipped()
        # Whatever is alive after a scan (modules, caches, the caller's own workspace lists)
        # mostly lives on: keep it out of the cyclic collector's full passes, which otherwise
        # land on editing keystrokes (5 per 200 keystrokes on a 24K-file workspace, 100 ms
        # and more each once file records are loaded). Freezing is O(1); the context
        # assembler does the same after each generation build.
        gc.freeze()
        stats.seconds = time.perf_counter() - t0
        return stats

    def _commit(self, batch: list[Parsed], base_of: dict[str, str], stats: ScanStats) -> bool:
        """Write one batch of scan results in one transaction (buffers opened meanwhile
        win). Returns whether anything was written."""
        if not batch:
            return False
        try:
            return self._commit_batch(batch, base_of, stats)
        except sqlite3.Error as exc:    # disk full, I/O error: the batch rolled back
            log.warning("index batch of %d files not saved: %s", len(batch), exc)
            stats.failed += len(batch)
            return False

    def _commit_batch(self, batch: list[Parsed], base_of: dict[str, str],
                      stats: ScanStats) -> bool:
        with self._lock, self._tx():
            buffers = {r[0] for r in self._conn.execute(
                "SELECT path FROM files WHERE origin='buffer'")}
            for p in batch:
                if p.job.path in buffers:
                    continue
                if p.reason is not None:
                    self._conn.execute("INSERT OR REPLACE INTO skipped VALUES (?,?)",
                                       (p.job.path, p.reason))
                    self._delete(p.job.path)
                    continue
                self._write(p, origin="disk", base_module=base_of[p.job.path])
                stats.parsed += 1
                stats.parsed_bytes += p.size
            self._bump()
        return True

    def _changed(self, disc: Discovery, rows: dict[str, tuple],
                 stats: ScanStats) -> tuple[list[SourceFile], list[SkippedFile]]:
        """Files to parse; files whose stat changed but bytes did not are touched."""
        todo: list[SourceFile] = []
        skips: list[SkippedFile] = []
        touch: list[tuple[int, str]] = []
        for f in disc.files:
            r = rows.get(f.path)
            if r is None:
                todo.append(f)
                continue
            if r[6] == "buffer":
                continue
            if r[5] != f.module:
                todo.append(f)                  # crate layout changed
            elif r[3] == f.mtime_ns and r[2] == f.size:
                stats.unchanged += 1
            else:
                try:
                    with open(f.abspath, "rb") as fh:
                        same = content_hash(fh.read()) == r[1]
                except OSError as exc:
                    skips.append(SkippedFile(f.path, f"unreadable: {exc.strerror or exc}"))
                    continue
                if same:
                    touch.append((f.mtime_ns, f.path))
                    stats.unchanged += 1
                else:
                    todo.append(f)
        if touch:
            with self._tx():
                self._conn.executemany("UPDATE files SET mtime_ns=? WHERE path=?", touch)
        return todo, skips

    def _resolve_modules(self) -> int:
        """Apply `#[path]`/mod-tree modules; returns how many files moved module."""
        light = []
        current: dict[str, tuple[str, str]] = {}
        for path, module, base, mods in self._conn.execute(
                "SELECT path, module, base_module, mods FROM files"):
            light.append(FileIndex(path=path, content_hash="", size=0, module=module,
                                   mods=codec.decode_mods(mods or "[]")))
            current[path] = (module, base)
        reached = resolve_path_modules(light)
        moved = 0
        for path, (module, base) in current.items():
            want = reached.get(path, base)
            if want == module:
                continue
            fi = self.file(path)
            if fi is None:
                continue
            new = relocate(fi, want)
            self._conn.execute("UPDATE files SET module=?, mods=? WHERE path=?",
                               (want, codec.encode_mods(new), path))
            self._conn.execute("UPDATE contents SET blob=? WHERE path=?",
                               (codec.encode(new), path))
            self._cache.pop(path, None)
            moved += 1
        return moved


def _job_module(f: SourceFile, row: tuple | None) -> str:
    """Keep a file's resolved (#[path]) module while its path-implied one is unchanged."""
    if row is not None and row[5] == f.module and row[4]:
        return row[4]
    return f.module


def _parsed_from(job: Job, fi: FileIndex, text: str | None) -> Parsed:
    return Parsed(job, blob=codec.encode(fi), text=text, size=fi.size, mtime_ns=-1,
                  content_hash=fi.content_hash, module=fi.module,
                  names="\n".join(sorted({it.name for it in fi.items if it.name})),
                  mods=codec.encode_mods(fi), nitems=len(fi.items))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); nested use joins the outer one."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.owner = False

    def __enter__(self) -> _Transaction:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
            self.owner = True
        return self

    def commit_and_begin(self) -> None:
        if self.owner:
            self.conn.execute("COMMIT")
            self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self.owner:
            return
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error:
                _rollback_quietly(self.conn)
                raise
        else:                               # SQLITE_FULL and I/O errors may roll back first
            _rollback_quietly(self.conn)
