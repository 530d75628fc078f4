"""Disk events as hints: a watchdog observer feeds a debounced worker that updates the index.

Events never are the truth (reliability-notes §5): watchdog drops queue overflows silently
(#654) and leaves folders unwatched at the inotify limit. So a few changed files that the
index already holds are re-read (`Index.refresh`); anything else (a new file, a folder
event, a burst, Cargo.toml/.gitignore/.git/HEAD) runs a reconcile scan; a scan also runs
every `rescan_s` while idle, and every `poll_s` once the observer failed (ENOSPC/EMFILE),
after one warning. Symlinked folders are not followed (`follow_symlink=False`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from indexer.store import Index

log = logging.getLogger(__name__)

#: Quiet time before hints are acted on (an editor's save is several events in ~10 ms).
DEBOUNCE_S = 0.2
#: More hinted files than this in one window is a burst (branch checkout): scan instead.
BURST_FILES = 200
#: Idle scan period (reliability-notes §5: "every 60 s while idle").
RESCAN_S = 60.0
#: Scan period when events are unavailable.
POLL_S = 5.0
#: File names whose change may change what the workspace holds.
_LAYOUT_FILES = frozenset({"Cargo.toml", "Cargo.lock", ".gitignore", "HEAD"})


@dataclass
class WatchStats:
    refreshes: int = 0
    scans: int = 0
    polling: bool = False
    last_error: str | None = None


class Watcher:
    """Keeps `index` equal to the disk while running (`start`/`stop`, or a `with` block)."""

    def __init__(self, index: Index, *, debounce_s: float = DEBOUNCE_S,
                 burst_files: int = BURST_FILES, rescan_s: float = RESCAN_S,
                 poll_s: float = POLL_S, on_update: Callable[[int], None] | None = None,
                 observer_factory: Callable[[], object] = Observer) -> None:
        self.index = index
        self.debounce_s, self.burst_files = debounce_s, burst_files
        self.rescan_s, self.poll_s = rescan_s, poll_s
        self.on_update = on_update
        self.stats = WatchStats()
        self._observer_factory = observer_factory
        self._observer: object | None = None
        self._cond = threading.Condition()
        self._hints: set[str] = set()
        self._scan = False
        self._last_event = 0.0
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._stop = False
        try:
            observer = self._observer_factory()
            handler = _Handler(self)
            for root in self.index.roots:
                observer.schedule(handler, root, recursive=True)
            observer.start()
            self._observer = observer
        except OSError as exc:      # ENOSPC: inotify watch limit; EMFILE: instance limit
            self._fall_back(exc)
        self._thread = threading.Thread(target=self._run, name="indexer-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=5)
            except (OSError, RuntimeError) as exc:
                log.debug("observer stop: %s", exc)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _fall_back(self, exc: OSError) -> None:
        log.warning("file watching unavailable (%s); scanning the workspace every %g s "
                    "instead", exc, self.poll_s)
        self.stats.polling = True
        self.stats.last_error = str(exc)
        self._observer = None

    # -- hints ---------------------------------------------------------------------------

    def hint(self, abspath: str, *, is_dir: bool = False) -> None:
        """One changed path (from an event, or the editor's didSave)."""
        name = os.path.basename(abspath)
        key = self.index.key_for(abspath)
        with self._cond:
            if is_dir or name in _LAYOUT_FILES:
                self._scan = True
            elif name.endswith(".rs") and key is not None:
                self._hints.add(key)
            else:
                return
            self._last_event = time.monotonic()
            self._cond.notify_all()

    def _take(self) -> tuple[set[str], bool] | None:
        """Wait for a quiet window after hints (or a scan period); None to stop."""
        with self._cond:
            period = self.poll_s if self.stats.polling else self.rescan_s
            deadline = time.monotonic() + period
            while not self._stop:
                now = time.monotonic()
                if self._hints or self._scan:
                    quiet = self._last_event + self.debounce_s - now
                    if quiet <= 0:
                        break
                    self._cond.wait(quiet)
                elif now >= deadline:
                    self._scan = True
                    break
                else:
                    self._cond.wait(deadline - now)
            if self._stop:
                return None
            hints, scan = self._hints, self._scan
            self._hints, self._scan = set(), False
            return hints, scan

    def _run(self) -> None:
        while (work := self._take()) is not None:
            hints, scan = work
            try:
                known = set(self.index.files())
                if scan or len(hints) > self.burst_files or not hints <= known:
                    st = self.index.reconcile()
                    self.stats.scans += 1
                    changed = st.parsed + st.removed
                else:
                    changed = self.index.refresh(sorted(hints))
                    self.stats.refreshes += 1
            except Exception as exc:  # keep watching: the next scan repairs the index
                log.exception("index update failed")
                self.stats.last_error = str(exc)
                continue
            if changed and self.on_update is not None:
                self.on_update(changed)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed", "closed_no_write"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                p = os.fsdecode(path)
                if _hidden_or_target(p, self.watcher.index.roots):
                    continue
                self.watcher.hint(p, is_dir=event.is_directory)


def _hidden_or_target(path: str, roots: list[str]) -> bool:
    """Events under hidden folders (except .git/HEAD) or target/ are noise."""
    for root in roots:
        if path.startswith(root.rstrip(os.sep) + os.sep):
            parts = path[len(root) + 1:].split(os.sep)
            if parts[:2] == [".git", "HEAD"]:
                return False
            return any(p.startswith(".") or p == "target" for p in parts[:-1]) or \
                parts[-1].startswith(".")
    return True
