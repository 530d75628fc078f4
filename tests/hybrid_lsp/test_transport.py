"""Transport hardening: framing, malformed messages, one response per readable id."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.lsp.server import LanguageServer

from hybrid_lsp.transport import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    SERVER_NOT_INITIALIZED,
    FrameReader,
    HardenedProtocol,
    sniff_id,
    valid_id,
)
from tests.hybrid_lsp.lsp_session import ROOT, server_env


def frame(body: bytes | str) -> bytes:
    data = body.encode() if isinstance(body, str) else body
    return b"Content-Length: %d\r\n\r\n" % len(data) + data


def msg(obj: object) -> bytes:
    return frame(json.dumps(obj))


def test_frame_reader_recovers_from_bad_framing() -> None:
    stream = io.BytesIO(
        b"garbage line\r\n\r\n"                         # header block without a length
        + b"Content-Length: abc\r\n\r\n"                # bad length
        + frame(b'{"a": 1}')
        + b"Content-Length: 100000\r\n\r\n" + b'{"id": 7, "x": "' + b"y" * 99982 + b'"}'
        + frame(b'{"b": 2}'))
    reader = FrameReader(stream, max_body=1000)
    frames = []
    while (f := reader.read()) is not None:
        frames.append(f)
    assert [f.body for f in frames] == [None, None, b'{"a": 1}', None, b'{"b": 2}']
    assert "malformed header" in frames[0].error and "bad Content-Length" in frames[1].error
    assert frames[3].sniffed_id == 7 and "cap" in frames[3].error


def test_truncated_body_is_end_of_input() -> None:
    assert FrameReader(io.BytesIO(b"Content-Length: 50\r\n\r\n{}")).read() is None


@pytest.mark.parametrize("value,ok", [(1, True), (2**31 - 1, True), (-(2**31), True),
                                      ("string-id-1", True), (2**31, False),
                                      (-(2**31) - 1, False), (1.0, False), (True, False),
                                      (None, False)])
def test_valid_ids_follow_lsprotocol(value: object, ok: bool) -> None:
    assert valid_id(value) is ok


def test_sniff_id() -> None:
    assert sniff_id(b'{"jsonrpc":"2.0","id":"abc","method":"x","params":{"t":"') == "abc"
    assert sniff_id(b'{"jsonrpc":"2.0","method":"x"') is None


def _read_responses(out: bytes) -> list[dict]:
    reader = FrameReader(io.BytesIO(out))
    got = []
    while (f := reader.read()) is not None:
        got.append(json.loads(f.body))
    return got


def test_malformed_corpus_over_stdio(tmp_path: Path) -> None:
    """Every request with a readable id gets exactly one response; the server stays up."""
    init = {"processId": None, "rootUri": None, "capabilities": {},
            "initializationOptions": {"model": {"path": str(tmp_path / "missing.gguf")}}}
    pos = {"textDocument": {"uri": "file:///x.rs"}, "position": {"line": 0, "character": 0}}
    bad_pos = {"textDocument": {"uri": "file:///x.rs"},
               "position": {"line": 0, "character": 9223372036854776000}}
    stream = b"".join([
        msg({"jsonrpc": "2.0", "id": 1, "method": "textDocument/hover", "params": pos}),
        msg({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": init}),
        msg({"jsonrpc": "2.0", "method": "initialized", "params": {}}),
        frame(b"{not json"),                                          # -32700, id null
        frame(b"\xff\xfe invalid utf-8"),                             # -32700, id null
        frame(b"[" * 100_000),                                        # deep nesting: -32700
        msg([1, 2, 3]),                                               # -32600, id null
        msg({"jsonrpc": "2.0", "id": 3, "method": "textDocument/completion",
             "params": bad_pos}),                                     # -32602, id 3
        msg({"jsonrpc": "2.0", "id": 4, "method": "textDocument/completion",
             "params": {"nope": 1}}),                                 # -32602, id 4
        msg({"jsonrpc": "2.0", "id": 2**31, "method": "shutdown"}),  # -32600, id null
        msg({"jsonrpc": "2.0", "id": True, "method": "shutdown"}),   # -32600, id null
        msg({"jsonrpc": "2.0", "id": 5}),                             # a response to nothing
        msg({"id": 6, "method": "shutdown"}),                         # no jsonrpc: -32600
        msg({"jsonrpc": "2.0", "id": 7, "method": "no/such/method"}),  # -32601
        b"Content-Length: 70000000\r\n\r\n" + b'{"jsonrpc":"2.0","id":8,' + b" " * 69_999_976,
        msg({"jsonrpc": "2.0", "id": "last", "method": "workspace/executeCommand",
             "params": {"command": "hybridLsp.status"}}),
        msg({"jsonrpc": "2.0", "id": 9, "method": "shutdown"}),
        msg({"jsonrpc": "2.0", "id": 10, "method": "textDocument/hover", "params": pos}),
        msg({"jsonrpc": "2.0", "method": "exit"}),
    ])
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hybrid_lsp.serve_cmd"], input=stream,
                          capture_output=True, env=server_env(tmp_path), cwd=ROOT, timeout=60)
    assert time.monotonic() - t0 < 30
    responses = [r for r in _read_responses(proc.stdout) if "method" not in r]
    by_id: dict[object, list[dict]] = {}
    for r in responses:
        by_id.setdefault(r.get("id"), []).append(r)
    codes = {k: [r.get("error", {}).get("code") for r in v] for k, v in by_id.items()}
    assert codes[1] == [SERVER_NOT_INITIALIZED]
    assert codes[2] == [None]                               # initialize result
    assert codes[3] == [INVALID_PARAMS] and codes[4] == [INVALID_PARAMS]
    assert codes[7] == [-32601] and codes[8] == [INVALID_REQUEST]
    assert codes["last"] == [None] and by_id["last"][0]["result"]["malformedMessages"] >= 9
    assert codes[9] == [None] and codes[10] == [INVALID_REQUEST]  # after shutdown
    assert sorted(codes[None]) == sorted([PARSE_ERROR] * 3 + [INVALID_REQUEST] * 3)
    assert 5 not in codes and 6 in codes                          # id 6 is readable
    assert proc.returncode == 0, proc.stderr[-2000:]
    notes = [r for r in _read_responses(proc.stdout) if r.get("method") == "window/showMessage"]
    assert len(notes) <= 1  # only the unusable model file, no popup per bad message


def test_pipelined_exit_after_a_slow_shutdown_exits_0(monkeypatch) -> None:
    """LSP: exit gives 0 when `shutdown` was received, even if its handler is still running
    when a pipelined `exit` is handled (pygls sets its flag only after the handler)."""
    ls = LanguageServer("t", "v", protocol_cls=HardenedProtocol)

    @ls.feature(types.SHUTDOWN)
    async def slow_shutdown(ls: LanguageServer, params: None) -> None:
        await asyncio.sleep(0.5)

    proto = ls.protocol
    sent = []
    proto._send_data = lambda data: sent.append(data)
    orig = HardenedProtocol._exit_when_answered
    monkeypatch.setattr(HardenedProtocol, "_exit_when_answered",
                        lambda self, m, timeout=5.0: orig(self, m, timeout=0.05))
    codes = []
    monkeypatch.setattr("sys.exit", lambda code=0: codes.append(code))

    async def run() -> None:
        def body(obj: dict) -> None:
            proto.handle_body(json.dumps(obj).encode())
        body({"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"processId": None, "rootUri": None, "capabilities": {}}})
        await asyncio.sleep(0.05)
        body({"jsonrpc": "2.0", "id": 2, "method": "shutdown"})
        body({"jsonrpc": "2.0", "method": "exit"})
        for _ in range(100):
            if codes:
                break
            await asyncio.sleep(0.02)

    asyncio.run(run())
    assert codes == [0]
