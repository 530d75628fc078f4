"""Bad input (issue 4, reliability-notes R1/R14): every case is skipped or handled with a
reason; indexing never crashes and never loses the rest of the index."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from indexer.build import WORKER_STACK_BYTES, _parse_batch
from indexer.codec import decode
from indexer.parse import parse_file
from indexer.store import Index
from indexer.workspace import MAX_FILE_BYTES, ScanOptions

OPTS = ScanOptions(include_deps=False, include_std=False)


def index_of(ws: Path, tmp_path: Path, **kw) -> Index:
    return Index([ws], options=kw.pop("options", OPTS), cache_dir=str(tmp_path / "cache"),
                 workers=0, **kw)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "Cargo.toml").write_text('[package]\nname = "bad"\n')
    (root / "src" / "lib.rs").write_text("pub struct Good;\n")
    return root


def reasons(index: Index) -> dict[str, str]:
    return {s.path: s.reason for s in index.skipped()}


def test_invalid_utf8_is_indexed_with_replacement(ws: Path, tmp_path: Path) -> None:
    (ws / "src" / "latin1.rs").write_bytes(b"/// caf\xe9\npub fn cafe() {}\n")
    with index_of(ws, tmp_path) as index:
        index.reconcile()
        fi = index.file("src/latin1.rs")
        assert [it.name for it in fi.items] == ["cafe"]
        assert fi.items[0].doc == "caf\ufffd"
        assert fi.errors[0].startswith("invalid UTF-8 at byte 7")
        assert index.text("src/latin1.rs").startswith("/// caf\ufffd")
        assert index.items_named("Good")


def test_binary_file_named_rs_is_skipped(ws: Path, tmp_path: Path) -> None:
    (ws / "src" / "blob.rs").write_bytes(bytes(range(256)) * 40)
    with index_of(ws, tmp_path) as index:
        index.reconcile()
        assert "src/blob.rs" not in index.files()
        assert reasons(index)["src/blob.rs"].startswith("binary file")
    fi = parse_file("x.rs", b"\x00\x01fn f() {}")
    assert fi.items == () and fi.errors[0].startswith("binary file")


def test_ten_megabyte_file(ws: Path, tmp_path: Path) -> None:
    big = b"pub fn f() { let x = (1 + 2) * 3; }\n" * (10_000_000 // 36)
    (ws / "src" / "generated.rs").write_bytes(big)
    with index_of(ws, tmp_path) as index:
        index.reconcile()
        assert reasons(index)["src/generated.rs"].startswith(
            f"too large ({len(big)} bytes > {MAX_FILE_BYTES})")
        assert index.items_named("Good")
    # Parsed anyway (a larger limit), it is cut at the deadline, not hanging the indexer.
    t0 = time.perf_counter()
    fi = parse_file("src/generated.rs", big, deadline_s=0.2)
    elapsed = time.perf_counter() - t0
    assert fi.items == () and "deadline" in fi.errors[-1]
    assert elapsed < 1.5


def test_one_ten_megabyte_line_is_cut_by_the_deadline() -> None:
    line = b"const X: &[u8] = &[" + b"1," * 5_000_000 + b"];"
    fi = parse_file("src/line.rs", line, deadline_s=0.2)
    assert fi.errors and "deadline" in fi.errors[-1]


@pytest.mark.parametrize("opener,closer", [(b"(", b")"), (b"{", b"}"), (b"[", b"]"),
                                           (b"Vec<", b">")])
def test_5000_deep_nesting(opener: bytes, closer: bytes) -> None:
    src = b"pub fn deep() { let x = " + opener * 5000 + b"1" + closer * 5000 + b"; }\n"
    fi = parse_file("src/deep.rs", src)
    assert [it.name for it in fi.items] == ["deep"]


def test_5000_nested_modules_and_functions() -> None:
    fi = parse_file("src/lib.rs", b"mod m { " * 5000 + b"}" * 5000)
    assert len(fi.items) == 5000 and fi.errors == ()
    assert fi.items[-1].module == "crate" + "::m" * 4999
    fi = parse_file("src/lib.rs", b"fn f() { " * 5000 + b"}" * 5000)
    assert len(fi.items) == 5000 and {it.kind for it in fi.items} == {"fn"}


def test_100k_deep_nesting_on_a_worker_stack() -> None:
    src = b"fn f() { let x = " + b"(" * 100_000 + b"1" + b")" * 100_000 + b"; }\n"
    assert WORKER_STACK_BYTES >= 64 << 20
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"deep-{os.getpid()}.rs"
    path.write_bytes(src)
    try:
        (reply,) = _parse_batch([("src/deep.rs", str(path), "crate", "", False)])
    finally:
        path.unlink()
    blob, reason = reply[0], reply[5]
    assert reason is None and [it.name for it in decode(blob).items] == ["f"]


def test_unbalanced_and_garbage_source() -> None:
    for src in [b"}}}}", b"fn", b"impl for {", b"pub use ::{", b"mod ;", b"\xef\xbb\xbffn bom() {}",
                b"fn crlf() {}\r\nstruct S;\r\n", b"'\"" * 1000, b"/* unterminated"]:
        fi = parse_file("src/x.rs", src)
        assert isinstance(fi.errors, tuple)
    assert [it.name for it in parse_file("x.rs", b"\xef\xbb\xbffn bom() {}").items] == ["bom"]


def test_symlink_loops_and_fifo(ws: Path, tmp_path: Path) -> None:
    os.symlink("..", ws / "src" / "loop")
    os.symlink("me.rs", ws / "src" / "me.rs")
    os.mkfifo(ws / "src" / "pipe.rs")
    with index_of(ws, tmp_path) as index:
        index.reconcile()
        assert index.files() == ["src/lib.rs"]
        r = reasons(index)
        assert r["src/pipe.rs"] == "not a regular file"
        assert "symlink loop" in r["src/loop"]
        assert r["src/me.rs"].startswith("unreadable")


UNREADABLE_SCRIPT = """
import json, sys
from indexer.store import Index
from indexer.workspace import ScanOptions
ws, cache = sys.argv[1], sys.argv[2]
with Index([ws], options=ScanOptions(include_deps=False, include_std=False), cache_dir=cache,
           workers=0) as index:
    index.reconcile()
    print(json.dumps({"reasons": {s.path: s.reason for s in index.skipped()},
                      "good": bool(index.items_named("Good"))}))
"""


def _unreadable_as_unprivileged(ws: Path, tmp_path: Path) -> dict:
    """Index `ws` in a child process for which mode 0 really means no access.

    Root reads files whatever their mode, so when the tests run as root (as CI does) the
    child runs without the capabilities that let it (util-linux `setpriv`).
    """
    locked = ws / "src" / "locked.rs"
    locked.write_text("fn l() {}\n")
    locked.chmod(0)
    (ws / "src" / "closed").mkdir()
    (ws / "src" / "closed").chmod(0)
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "running as root needs util-linux setpriv to drop file capabilities"
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        out = subprocess.run([*prefix, sys.executable, "-c", UNREADABLE_SCRIPT, str(ws),
                              str(tmp_path / "cache")], capture_output=True, text=True,
                             env=env, timeout=120)
    finally:
        locked.chmod(0o644)
        (ws / "src" / "closed").chmod(0o755)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_unreadable_file_and_folder(ws: Path, tmp_path: Path) -> None:
    got = _unreadable_as_unprivileged(ws, tmp_path)
    r = got["reasons"]
    assert r["src/locked.rs"].startswith("unreadable")
    assert r["src/closed/"].startswith("folder unreadable")
    assert got["good"]


def test_unreadable_file_as_any_user(tmp_path: Path) -> None:
    (tmp_path / "folder.rs").mkdir()       # opening a folder fails even for root
    (blob, _t, _s, _m, _h, reason, *_rest), = _parse_batch(
        [("folder.rs", str(tmp_path / "folder.rs"), "crate", "", False)])
    assert blob is None and reason.startswith("unreadable")


def test_files_deleted_and_renamed_mid_index(ws: Path, tmp_path: Path) -> None:
    for i in range(6):
        (ws / "src" / f"f{i}.rs").write_text(f"pub struct F{i};\n")

    def meddle(done: int, total: int, path: str) -> None:
        if done == 1:
            for p in (ws / "src" / "f4.rs", ws / "src" / "f5.rs"):
                if p.exists():
                    p.unlink()
            if (ws / "src" / "f3.rs").exists():
                (ws / "src" / "f3.rs").rename(ws / "src" / "g3.rs")

    with index_of(ws, tmp_path) as index:
        index.reconcile(progress=meddle)
        files = set(index.files())
        assert {"src/lib.rs", "src/f0.rs"} <= files
        r = reasons(index)
        for gone in ("src/f3.rs", "src/f4.rs", "src/f5.rs"):
            assert gone in files or r.get(gone) == "vanished during indexing"
        index.reconcile()                      # the next scan converges on the disk
        assert "src/g3.rs" in index.files()
        assert not {"src/f3.rs", "src/f4.rs", "src/f5.rs"} & set(index.files())


def test_empty_workspace(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with index_of(empty, tmp_path) as index:
        st = index.reconcile()
        assert (st.files, st.items, st.parsed, index.files()) == (0, 0, 0, [])
        assert index.items_named("anything") == []


def test_missing_root_is_a_skip(tmp_path: Path) -> None:
    with index_of(tmp_path / "nope", tmp_path) as index:
        st = index.reconcile()
        assert st.files == 0 and st.skipped[0].reason.startswith("root unreadable")
