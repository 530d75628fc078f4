"""R6: engine crash isolation: the engine child killed mid-request, again and again."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.reliability.harness import TimedServer, stub_env

pytestmark = [pytest.mark.timeout(150)]

KILLS = 20
BUDGET_MS = 2000        # the completion's deadline (latencyBudgetMs)
BACK_WITHIN_S = 10.0


def test_r06_engine_crash_isolation(tmp_path: Path, tiny_model: Path) -> None:
    """20 kills of the engine child (SIGKILL and SIGABRT alternately) while a completion
    is in flight (stub engine, 150-200 ms per request): the server never dies, the
    in-flight request is answered (empty) within its deadline, the engine is ready again
    within 10 s and the next completion returns an item."""
    server = TimedServer(tmp_path, stub_env((150, 200)))
    answer_ms: list[float] = []
    back_s: list[float] = []
    try:
        server.initialize(None, tiny_model, completion={"latencyBudgetMs": BUDGET_MS})
        uri = server.open(tmp_path / "crash.rs", "fn main() {\n    \n}\n")
        params = {"textDocument": {"uri": uri}, "position": {"line": 2, "character": 4}}
        for k in range(KILLS):
            server.send({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                "textDocument": {"uri": uri, "version": k + 2},       # no cache hits
                "contentChanges": [{"text": f"fn main() {{\n    // {k}\n    \n}}\n"}]}})
            (child,) = server.children()
            server.send({"jsonrpc": "2.0", "id": f"c{k}", "method": "textDocument/completion",
                         "params": params})
            t_sent = time.monotonic()
            time.sleep(0.05)                # the request is now in the child
            os.kill(child, signal.SIGKILL if k % 2 == 0 else signal.SIGABRT)
            t_kill = time.monotonic()
            res = server.request(f"c{k}-wait", "workspace/executeCommand",
                                 {"command": "hybridLsp.status"})
            server.wait_answers({f"c{k}"}, timeout=BUDGET_MS / 1e3 + 1)
            got = next(m for m in server.responses() if m.get("id") == f"c{k}")
            answer_ms.append((server.arrived[server.received.index(got)] - t_sent) * 1e3)
            assert got["result"]["items"] == [], got      # answered, empty
            assert res["result"]["engineRestarts"] >= k
            while server.status(f"s{k}-{time.monotonic()}")["engineState"] != "ready":
                assert time.monotonic() - t_kill < BACK_WITHIN_S, f"kill {k}: not back"
                time.sleep(0.05)
            back_s.append(time.monotonic() - t_kill)
            ok = server.request(f"ok{k}", "textDocument/completion", params)
            assert ok["result"]["items"], ok                # the new child answers
            assert server.proc.poll() is None
        st = server.status("end")
        assert st["engineRestarts"] == KILLS and st["engineState"] == "ready"
        assert server.close() == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    print(f"\nR6: {KILLS} kills; in-flight answered in max {max(answer_ms):.0f} ms "
          f"(deadline {BUDGET_MS}); engine back in max {max(back_s):.2f} s, "
          f"mean {sum(back_s) / len(back_s):.2f} s")
    assert max(answer_ms) <= BUDGET_MS
