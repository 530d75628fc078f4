"""Loaded by every Python process of a reliability test (this folder is on PYTHONPATH).

- `HYBRID_LSP_AUDIT_LOG=<file>`: a `sys.addaudithook` hook appends process spawns,
  `os.exec*`/`os.system`, `pickle.find_class` and file writes as JSON lines (R16).
- `HYBRID_LSP_STUB_ENGINE=lo,hi` in the engine child (`-m engine.worker`): the backend is
  replaced by a stub that answers after lo..hi ms (uniform), honouring cancellation (R3,
  R6); with `HYBRID_LSP_STUB_PROMPTS=<file>` it appends every decoded prompt (R17).
"""

from __future__ import annotations

import json
import os
import sys

_AUDITED = ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
            "os.fork", "os.forkpty", "pickle.find_class", "ctypes.dlopen", "open")


def _install_audit(path: str) -> None:
    def hook(event: str, args: tuple) -> None:
        if not event.startswith(_AUDITED):
            return
        if event == "open":
            mode = args[1] if len(args) > 1 else "r"
            flags = args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if not writing or str(args[0]) == path:
                return
        try:
            line = json.dumps({"pid": os.getpid(), "event": event,
                               "args": [repr(a)[:300] for a in args]})
        except Exception:  # never break the audited process
            return
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode() + b"\n")
        finally:
            os.close(fd)

    sys.addaudithook(hook)


def _install_stub(spec: str) -> None:
    import random
    import threading
    import time

    import engine.backends as backends
    from engine.backends import Generation

    lo, hi = (float(x) / 1e3 for x in spec.split(","))
    prompts = os.environ.get("HYBRID_LSP_STUB_PROMPTS")

    class StubBackend:
        """Answers `let stub = 1;` after a random delay; stops at once when cancelled."""

        name, device, n_ctx = "stub", "cpu", 4096

        def __init__(self, info) -> None:
            self.info = info
            self.rng = random.Random(os.getpid())

        def generate(self, req) -> Generation:
            t0 = time.monotonic()
            if prompts:
                with open(prompts, "a", encoding="utf-8") as f:
                    f.write(json.dumps(self.info.tokenizer.decode(list(req.tokens))) + "\n")
            cancel = req.cancel or threading.Event()
            stopped = cancel.wait(self.rng.uniform(lo, hi))
            text = "" if stopped or req.max_tokens == 0 else "let stub = 1;"
            total = time.monotonic() - t0
            return Generation(tokens=[1] * (len(text) > 0), text=text, truncated=stopped,
                              stop_reason="cancelled" if stopped else "eog",
                              prompt_tokens=len(req.tokens), evaluated_prompt_tokens=0,
                              timings={"prefill_s": 0.0, "decode_s": total, "total_s": total})

    backends.select_backend = lambda name, path, *, info=None, **kw: StubBackend(info)


if os.environ.get("HYBRID_LSP_AUDIT_LOG"):
    _install_audit(os.environ["HYBRID_LSP_AUDIT_LOG"])
if os.environ.get("HYBRID_LSP_STUB_ENGINE") and sys.orig_argv[1:3] == ["-m", "engine.worker"]:
    _install_stub(os.environ["HYBRID_LSP_STUB_ENGINE"])
if os.environ.get("HYBRID_LSP_TRACEMALLOC") and "engine.worker" not in sys.orig_argv:
    import signal
    import tracemalloc

    tracemalloc.start(8)

    def _dump(signum: int, frame: object) -> None:
        out = os.environ["HYBRID_LSP_TRACEMALLOC"]
        tracemalloc.take_snapshot().dump(f"{out}.{int(__import__('time').time() * 1000)}")

    signal.signal(signal.SIGUSR1, _dump)
