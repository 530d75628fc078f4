"""The watcher: events are hints, a scan decides; atomic saves; ENOSPC falls back to polling."""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from indexer.store import Index
from indexer.watch import Watcher
from indexer.workspace import ScanOptions


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def index(tmp_path: Path):
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "Cargo.toml").write_text('[package]\nname = "w"\n')
    (ws / "src" / "lib.rs").write_text("pub struct First;\n")
    with Index([ws], options=ScanOptions(include_deps=False, include_std=False),
               cache_dir=str(tmp_path / "cache"), workers=0) as idx:
        idx.reconcile()
        yield idx


def names(index: Index, name: str) -> list[str]:
    return [it.path for it in index.items_named(name)]


def test_events_update_the_index(index: Index) -> None:
    src = Path(index.roots[0]) / "src"
    with Watcher(index, debounce_s=0.05, rescan_s=3600):
        (src / "lib.rs").write_text("pub struct Second;\n")
        assert wait_for(lambda: names(index, "Second") == ["src/lib.rs"])
        (src / "new.rs").write_text("pub struct Third;\n")
        assert wait_for(lambda: names(index, "Third") == ["src/new.rs"])
        # Editor atomic save: write a temporary file, rename it over the original.
        tmp = src / ".new.rs.swp"
        tmp.write_text("pub struct Fourth;\n")
        os.replace(tmp, src / "new.rs")
        assert wait_for(lambda: names(index, "Fourth") == ["src/new.rs"])
        (src / "new.rs").unlink()
        assert wait_for(lambda: names(index, "Fourth") == [])
        # Hidden and gitignored files never enter, whatever the events say.
        (Path(index.roots[0]) / ".gitignore").write_text("src/secret.rs\n")
        (src / "secret.rs").write_text("pub struct Secret;\n")
        time.sleep(0.5)
        assert names(index, "Secret") == []


def test_enospc_falls_back_to_polling_with_one_warning(index: Index, caplog) -> None:
    class Broken:
        def schedule(self, *a, **k) -> None:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    caplog.set_level(logging.WARNING, logger="indexer.watch")
    src = Path(index.roots[0]) / "src"
    with Watcher(index, poll_s=0.2, observer_factory=Broken) as w:
        assert w.stats.polling
        (src / "polled.rs").write_text("pub struct Polled;\n")
        assert wait_for(lambda: names(index, "Polled") == ["src/polled.rs"])
        (src / "polled.rs").write_text("pub struct Polled2;\n")
        assert wait_for(lambda: names(index, "Polled2") == ["src/polled.rs"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()


def test_burst_becomes_one_scan(index: Index) -> None:
    src = Path(index.roots[0]) / "src"
    with Watcher(index, debounce_s=0.3, burst_files=5, rescan_s=3600) as w:
        for i in range(40):
            (src / f"b{i}.rs").write_text(f"pub struct B{i};\n")
        assert wait_for(lambda: len(index.files()) == 41)
        assert w.stats.scans <= 3
