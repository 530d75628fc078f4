"""The server and its engine child open no AF_INET/AF_INET6 socket (strace, whole session)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from lsprotocol import types

from tests.hybrid_lsp.conftest import test_backend
from tests.hybrid_lsp.lsp_session import SECRET, lsp_session, make_workspace, open_file

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


@pytest.fixture
def strace() -> str:
    path = shutil.which("strace")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("strace is required in CI (apt-get install strace)")
        pytest.skip("strace is not installed")
    return path


async def test_no_network_sockets(tmp_path: Path, tiny_model: Path, strace: str) -> None:
    ws = make_workspace(tmp_path)
    trace = tmp_path / "strace.log"
    command = [strace, "-f", "-qq", "-e", "trace=network", "-o", str(trace),
               sys.executable, "-m", "hybrid_lsp.serve_cmd"]
    async with lsp_session(tmp_path, tiny_model, ws, backend=test_backend(),
                           command=command) as client:
        uri = open_file(client, ws / "src" / "lib.rs")
        open_file(client, ws / "src" / "secret_notes.rs")
        result = await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=7, character=20),
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        assert all(SECRET not in i.insert_text for i in result.items)
    log = trace.read_text()
    inet = [ln for ln in log.splitlines() if "AF_INET" in ln]
    assert not inet, "\n".join(inet[:10])
    assert "AF_UNIX" in log  # the trace did see the process (asyncio's self-pipe)
