"""Shared helpers of the reliability suite: a raw stdio server with a stub engine child."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tests.hybrid_lsp.lsp_session import ROOT
from tests.hybrid_lsp.test_reliability import RawServer

SITE = Path(__file__).parent / "site"


def stub_env(latency_ms: tuple[int, int] = (5, 200), **extra: str) -> dict[str, str]:
    """Environment for a server whose engine child runs the stub backend (site/)."""
    return {"PYTHONPATH": f"{SITE}{os.pathsep}{ROOT}",
            "HYBRID_LSP_STUB_ENGINE": f"{latency_ms[0]},{latency_ms[1]}", **extra}


class TimedServer(RawServer):
    """`RawServer` that also stamps every message with its arrival time and can wait
    for any condition on what arrived."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.arrived: list[float] = []
        self.int_responses = 0      # responses to requests with an integer id
        super().__init__(tmp, env)

    def _read(self) -> None:
        from hybrid_lsp.transport import FrameReader

        reader = FrameReader(self.proc.stdout)
        while (f := reader.read()) is not None:
            msg = json.loads(f.body)
            with self._cond:
                self.received.append(msg)
                self.arrived.append(time.monotonic())
                if "method" not in msg and isinstance(msg.get("id"), int):
                    self.int_responses += 1
                self._cond.notify_all()

    def wait_for(self, check, timeout: float = 30.0) -> None:
        """Block until `check()` (called under the lock) is true."""
        end = time.monotonic() + timeout
        with self._cond:
            while not check():
                left = end - time.monotonic()
                assert left > 0, "condition not met in time"
                self._cond.wait(left)

    def request(self, msg_id: Any, method: str, params: Any = None,
                timeout: float = 30.0) -> dict:
        """Send one request and return its response."""
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        self.wait_answers({msg_id}, timeout)
        return next(m for m in self.responses() if m.get("id") == msg_id)

    def status(self, msg_id: Any) -> dict:
        return self.request(msg_id, "workspace/executeCommand",
                            {"command": "hybridLsp.status"})["result"]

    def initialize(self, root: Path | None, model: Path, **options: Any) -> None:
        """initialize + initialized, then wait for a ready engine."""
        opts = {"model": {"path": str(model)},
                "completion": {"debounceMs": 0, "latencyBudgetMs": 2000, "maxTokens": 16}}
        for key, value in options.items():
            opts.setdefault(key, {}).update(value)
        self.request("init", "initialize", {
            "processId": None, "rootUri": root.as_uri() if root else None,
            "capabilities": {"workspace": {"configuration": True}},
            "initializationOptions": opts})
        self.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        end = time.monotonic() + 60
        n = 0
        while self.status(f"ready-{n}")["engineState"] != "ready":
            n += 1
            assert time.monotonic() < end, "engine never ready"
            time.sleep(0.1)

    def open(self, path: Path, text: str | None = None) -> str:
        uri = path.as_uri()
        self.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": {"uri": uri, "languageId": "rust", "version": 1,
                             "text": path.read_text() if text is None else text}}})
        return uri

    def close(self) -> int:
        """shutdown + exit; the exit status."""
        try:
            self.request("bye", "shutdown", timeout=30)
            self.send({"jsonrpc": "2.0", "method": "exit"})
            self.proc.stdin.close()
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def proc_status(self, key: str, pid: int | None = None) -> int:
        """A number from /proc/<pid>/status (`VmRSS` in KB, `Threads`)."""
        for line in Path(f"/proc/{pid or self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def children(self) -> list[int]:
        """Pids of the server's child processes (the engine)."""
        out: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            out += [int(p) for p in (task / "children").read_text().split()]
        return out


def answered_counts(server: RawServer) -> dict[Any, int]:
    """Responses per id."""
    counts: dict[Any, int] = {}
    for r in server.responses():
        counts[r.get("id")] = counts.get(r.get("id"), 0) + 1
    return counts


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0

