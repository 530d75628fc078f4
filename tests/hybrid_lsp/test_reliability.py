"""Reliability (shared/docs/reliability-notes.md, CI scale): cache warming by the child's
counters, the watchdog fallback, fault injection in every handler, a protocol-only
storm with exactly one answer per id and bounded RSS, and the log-file cap."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from hybrid_lsp.transport import FrameReader
from tests.hybrid_lsp.conftest import test_backend
from tests.hybrid_lsp.lsp_session import (
    ROOT,
    command,
    lsp_session,
    make_workspace,
    open_file,
    poll,
    server_env,
    status,
)

pytestmark = [pytest.mark.timeout(120)]


def counters(st: dict) -> dict[str, int]:
    return st.get("engineCounters", {})


def edit(client, uri: str, version: int, line: int, col: int, text: str) -> None:
    pos = types.Position(line=line, character=col)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=pos, end=pos), text=text)]))


@pytest.mark.asyncio
async def test_warming_watchdog_and_fault_injection(tmp_path: Path, tiny_model: Path) -> None:
    ws = make_workspace(tmp_path)
    async with lsp_session(tmp_path, tiny_model, ws, backend=test_backend(),
                           capabilities="neovim@v0.10.0") as client:
        # Warm requests hold (as a long prefill would) until something preempts them.
        assert await command(client, "hybridLsp.test.tuneEngine", 60.0) is True
        st = await poll(client, lambda s: s["watching"] == "watchdog")

        # 1. A file opened: one warm request starts in the child, generating nothing.
        uri = open_file(client, ws / "src" / "lib.rs")
        st = await poll(client, lambda s: counters(s).get("warm_started", 0) >= 1)
        # 2. A real request preempts it.
        res = await asyncio.wait_for(client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                   position=types.Position(line=7, character=4))), 20)
        assert isinstance(res, types.CompletionList)
        st = await poll(client, lambda s: counters(s).get("real_done", 0) >= 1)
        c = counters(st)
        stopped = sum(c.get(k, 0) for k in ("warm_cancelled", "warm_preempted", "warm_dropped"))
        assert stopped >= 1 and c["real_done"] >= 1, c
        assert c.get("warm_done", 0) == 0 and c.get("warm_generated_tokens", 0) == 0, c
        received = c["warm_received"]
        # 3. The cursor entering another item warms again; typing inside it does not.
        edit(client, uri, 2, 23, 4, " ")  # in the body of `unit`, the last function
        st = await poll(client, lambda s: counters(s)["warm_received"] > received)
        received = counters(st)["warm_received"]
        edit(client, uri, 3, 23, 5, " ")
        await asyncio.sleep(0.8)  # longer than the warm delay: a warm would have been sent
        assert counters(await status(client))["warm_received"] == received
        # 4. An index update (a new file on disk, seen by the watchdog observer) warms
        #    again, and the index follows the disk both ways.
        before = st["indexFiles"]
        new = ws / "src" / "from_disk.rs"
        new.write_text("pub fn from_disk() -> u8 { 1 }\n")
        st = await poll(client, lambda s: s["indexFiles"] == before + 1)
        await poll(client, lambda s: counters(s)["warm_received"] > received)
        new.unlink()
        await poll(client, lambda s: s["indexFiles"] == before)
        assert counters(await status(client)).get("warm_generated_tokens", 0) == 0
        await command(client, "hybridLsp.test.tuneEngine", 0.0)

        await check_fault_injection(client, uri)


async def check_fault_injection(client, uri: str) -> None:
    """A fault forced in each handler: its request gets an error (or an empty result),
    notifications are dropped, the server stays up; then mixed traffic at p = 0.2."""
    doc = types.TextDocumentIdentifier(uri=uri)
    pos = types.Position(line=7, character=4)
    rng = types.Range(start=pos, end=pos)
    requests = {
        "textDocument/completion": lambda: client.text_document_completion_async(
            types.CompletionParams(text_document=doc, position=pos)),
        "textDocument/inlineCompletion": lambda: client.text_document_inline_completion_async(
            types.InlineCompletionParams(text_document=doc, position=pos,
                                         context=types.InlineCompletionContext(
                                             trigger_kind=types.InlineCompletionTriggerKind.Invoked))),
        "textDocument/codeAction": lambda: client.text_document_code_action_async(
            types.CodeActionParams(text_document=doc, range=rng,
                                   context=types.CodeActionContext(diagnostics=[]))),
        "codeAction/resolve": lambda: client.code_action_resolve_async(types.CodeAction(
            title="x", data={"kind": "addDoc", "uri": uri, "offset": 10})),
        "hybridLsp.reindex": lambda: command(client, "hybridLsp.reindex"),
        "hybridLsp.status": lambda: command(client, "hybridLsp.status"),
    }
    notifications = {
        "textDocument/didChange": lambda: edit(client, uri, 10, 0, 0, ""),
        "textDocument/didSave": lambda: client.text_document_did_save(
            types.DidSaveTextDocumentParams(text_document=doc)),
        "workspace/didChangeConfiguration": lambda: client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"completion": {"maxTokens": 8}})),
        "workspace/didChangeWatchedFiles": lambda: client.workspace_did_change_watched_files(
            types.DidChangeWatchedFilesParams(changes=[])),
    }
    base = (await status(client))["failures"]
    for method, call in requests.items():
        await command(client, "hybridLsp.test.faults", 1.0, [method])
        with pytest.raises(JsonRpcException):
            await asyncio.wait_for(call(), 10)
    for method, call in notifications.items():
        await command(client, "hybridLsp.test.faults", 1.0, [method])
        call()
    await command(client, "hybridLsp.test.faults", 0.0)
    st = await status(client)
    assert st["failures"] - base == len(requests) + len(notifications), st
    # Mixed traffic with random faults: every request answered once (result or error).
    await command(client, "hybridLsp.test.faults", 0.2, None, 7)
    calls = [requests[m] for m in ("textDocument/codeAction", "hybridLsp.status",
                                   "textDocument/completion")] * 20
    results = await asyncio.wait_for(asyncio.gather(*(c() for c in calls),
                                                    return_exceptions=True), 60)
    await command(client, "hybridLsp.test.faults", 0.0)
    errors = [r for r in results if isinstance(r, JsonRpcException)]
    assert len(results) == 60 and 0 < len(errors) < 60
    assert not [r for r in results if isinstance(r, Exception) and r not in errors]
    # Afterwards everything works.
    res = await requests["textDocument/completion"]()
    assert isinstance(res, types.CompletionList)
    assert (await status(client))["engineState"] == "ready"


# -- protocol-only storm -----------------------------------------------------------------

def frame(obj: object) -> bytes:
    data = json.dumps(obj).encode()
    return b"Content-Length: %d\r\n\r\n" % len(data) + data


class RawServer:
    """The real server over pipes; a thread collects every message it sends."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.stderr_path = tmp / "server.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "hybrid_lsp.serve_cmd"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, cwd=ROOT, env=server_env(tmp, env))
        self.received: list[dict] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        reader = FrameReader(self.proc.stdout)
        while (f := reader.read()) is not None:
            with self._cond:
                self.received.append(json.loads(f.body))
                self._cond.notify_all()

    def send(self, obj: object, flush: bool = True) -> None:
        self.proc.stdin.write(frame(obj) if not isinstance(obj, bytes) else obj)
        if flush:
            self.proc.stdin.flush()

    def responses(self) -> list[dict]:
        with self._cond:
            return [m for m in self.received if "method" not in m]

    def wait_answers(self, ids: set, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        with self._cond:
            while not ids <= {m.get("id") for m in self.received if "method" not in m}:
                left = end - time.monotonic()
                got = {m.get("id") for m in self.received}
                assert left > 0, f"unanswered: {sorted(map(str, ids - got))[:10]}"
                self._cond.wait(left)

    def stderr_tail(self, n: int = 3000) -> str:
        """The end of what the server wrote to stderr (for failure messages)."""
        return self.stderr_path.read_bytes()[-n:].decode("utf-8", "replace")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def storm_batch(start: int, n: int, uri: str, version: list[int]) -> tuple[list, set]:
    """`n` mixed messages from id `start`: edits, completions, cancels, actions, unknown
    methods, malformed bodies; returns (messages, ids that must be answered)."""
    pos = {"line": 1, "character": 4}
    doc = {"uri": uri}
    msgs: list = []
    ids: set = set()
    for i in range(start, start + n):
        kind = i % 10
        if kind in (0, 5):
            version[0] += 1
            msgs.append({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                "textDocument": {"uri": uri, "version": version[0]},
                "contentChanges": [{"range": {"start": pos, "end": pos}, "text": "x"}]}})
            continue
        if kind == 9:
            msgs.append(b"Content-Length: 9\r\n\r\n{not json")
            continue
        if kind == 3:
            msgs.append({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": i - 1}})
            continue
        method, params = {
            1: ("textDocument/completion", {"textDocument": doc, "position": pos}),
            2: ("textDocument/inlineCompletion", {"textDocument": doc, "position": pos,
                                                  "context": {"triggerKind": 2}}),
            4: ("textDocument/codeAction", {"textDocument": doc, "range": {"start": pos,
                                            "end": pos}, "context": {"diagnostics": []}}),
            6: ("textDocument/hover", {"textDocument": doc, "position": pos}),
            7: ("workspace/executeCommand", {"command": "hybridLsp.status"}),
            8: ("textDocument/completion", {"textDocument": doc,
                                            "position": {"line": -1, "character": 0}}),
        }[kind]
        msgs.append({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
        ids.add(i)
    return msgs, ids


def test_protocol_storm_one_answer_per_id_bounded_rss_and_log_cap(tmp_path: Path) -> None:
    """2,000 mixed messages without a model: every id answered exactly once, RSS growth
    from message 500 to 2,000 bounded, the log file within its cap."""
    cap = 8192
    server = RawServer(tmp_path, {"HYBRID_LSP_LOG_MAX_BYTES": str(cap)})
    try:
        uri = (tmp_path / "storm.rs").as_uri()
        server.send({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "processId": None, "rootUri": None, "capabilities": {},
            "initializationOptions": {"model": {"path": str(tmp_path / "none.gguf")},
                                      "completion": {"debounceMs": 0},
                                      "log": {"level": "debug"}}}})
        server.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
        server.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": {"uri": uri, "languageId": "rust", "version": 1,
                             "text": "fn main() {\n    let x = 1;\n}\n"}}})
        server.wait_answers({"init"}, timeout=30)
        version = [1]
        all_ids: set = {"init"}
        rss = []
        for start in range(0, 2000, 500):
            msgs, ids = storm_batch(start, 500, uri, version)
            for m in msgs:
                server.send(m, flush=False)
            server.proc.stdin.flush()
            server.wait_answers(ids)
            all_ids |= ids
            rss.append(server.rss_kb())
        server.send({"jsonrpc": "2.0", "id": "bye", "method": "shutdown"})
        server.send({"jsonrpc": "2.0", "method": "exit"})
        server.proc.stdin.close()
        assert server.proc.wait(30) == 0, server.stderr_tail()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    answered: dict = {}
    for r in server.responses():
        answered[r.get("id")] = answered.get(r.get("id"), 0) + 1
    all_ids.add("bye")
    assert {i: n for i, n in answered.items() if i in all_ids and n != 1} == {}
    assert all_ids <= set(answered)
    assert answered.get(None) == 200  # the malformed bodies: -32700 each, id null
    assert set(answered) - all_ids == {None}
    assert rss[-1] - rss[0] <= 20 * 1024, rss  # KB: at most 20 MB from 500 to 2,000
    popups = [m for m in server.received if m.get("method") == "window/showMessage"]
    assert len(popups) <= 1  # the missing model, once
    logs = sorted((tmp_path / "logs").glob("server.log*"))
    assert 2 <= len(logs) <= 4, logs  # rotated, at most 3 backups kept
    assert all(p.stat().st_size <= cap for p in logs), [p.stat().st_size for p in logs]


def test_log_cap_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """setup_logging: the file rotates at the cap and keeps LOG_BACKUPS copies."""
    import logging

    from hybrid_lsp import transport

    monkeypatch.setenv("HYBRID_LSP_LOG_DIR", str(tmp_path))
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        path = transport.setup_logging("info", max_bytes=4096)
        for i in range(2000):
            logging.getLogger("hybrid_lsp.test").info("line %d %s", i, "x" * 40)
    finally:
        for h in root.handlers[len(saved[0]):]:
            h.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    files = sorted(path.parent.glob("server.log*"))
    assert len(files) == 1 + transport.LOG_BACKUPS
    assert sum(p.stat().st_size for p in files) <= 4096 * (1 + transport.LOG_BACKUPS)



def test_bench_serve_writes_only_its_section(tmp_path: Path) -> None:
    from hybrid_lsp.bench_serve import SECTION, percentile, write_section

    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\n## Kernels\n\nk\n\n## Server\n\nold\n\n## Index\n\ni\n")
    write_section(doc, f"{SECTION}\n\nnew\n")
    text = doc.read_text()
    assert "old" not in text and "new" in text and "## Kernels\n\nk" in text
    assert text.index("## Kernels") < text.index(SECTION) < text.index("## Index\n\ni")
    fresh = tmp_path / "none.md"
    write_section(fresh, f"{SECTION}\n\nx\n")
    assert fresh.read_text().startswith("# Benchmarks\n\n## Server")
    assert percentile(list(range(1, 101)), 0.5) == 50 and percentile([3.0], 0.95) == 3.0
