"""End to end: the real server over stdio (pytest-lsp), with the engine child on a tiny model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from tests.hybrid_lsp.conftest import test_backend
from tests.hybrid_lsp.lsp_session import (
    SECRET,
    command,
    lsp_session,
    make_workspace,
    open_file,
    poll,
    status,
    wait_ready,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


def line_col(text: str, needle: str) -> types.Position:
    """UTF-16 position just after `needle`."""
    idx = text.index(needle) + len(needle)
    line = text.count("\n", 0, idx)
    col = idx - (text.rfind("\n", 0, idx) + 1)
    return types.Position(line=line, character=len(text[idx - col:idx].encode("utf-16-le")) // 2)


async def test_completions_status_and_settings(tmp_path: Path, tiny_model: Path) -> None:
    ws = make_workspace(tmp_path)
    registrations: list[types.Registration] = []
    async with lsp_session(tmp_path, tiny_model, ws, backend=test_backend(),
                           registrations=registrations) as client:
        caps = client.init_result.capabilities
        assert caps.inline_completion_provider is not None
        assert caps.completion_provider is not None
        st = await status(client)
        assert st["engineState"] == "ready", st
        assert st["backend"] == test_backend() and st["model"] == "tiny-test"
        lib = ws / "src" / "lib.rs"
        uri = open_file(client, lib)
        open_file(client, ws / "src" / "shapes.rs")
        open_file(client, ws / "src" / "secret_notes.rs")
        text = lib.read_text()
        pos = line_col(text, "let x = ")  # after emoji and CJK on the same line
        assert pos.character == len("    let name = \"圆😀\"; let x = ") + 1  # 😀 is 2 units

        inline = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=pos,
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        assert isinstance(inline, types.InlineCompletionList)
        for item in inline.items:  # a random model may say nothing useful: then no items
            assert item.insert_text.strip() and item.insert_text == item.insert_text.rstrip()
            assert "<|" not in item.insert_text
            assert item.range.start == pos

        comp = await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=pos))
        assert isinstance(comp, types.CompletionList)
        for item in comp.items:
            assert item.text_edit.range.end == pos
            assert "ms" in item.detail and "hybrid-lsp" in item.detail

        st = await status(client)
        assert st["latencyMs"]["count"] >= 0 and st["engineRestarts"] == 0

        # Settings: a bad value is reported and the previous value stays.
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"completion": {"debounceMs": -5, "maxTokens": 8}}))
        msg = await asyncio.wait_for(client.wait_for_notification("window/showMessage"), 10)
        assert "debounceMs" in msg.message
        st = await status(client)
        assert st["settings"]["completion"]["debounceMs"] == 0
        assert st["settings"]["completion"]["maxTokens"] == 8

        await check_code_actions(client, ws)
        await check_client_file_watching(client, ws, registrations)

        reindexed = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="hybridLsp.reindex"))
        assert reindexed["indexFiles"] >= 2
        reports = [r for v in client.progress_reports.values() for r in v]
        assert any(isinstance(r, types.WorkDoneProgressEnd) for r in reports), reports

        log_text = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log*"))
        assert SECRET not in log_text


async def test_cancellation_storm(tmp_path: Path, tiny_model: Path) -> None:
    """50 requests in a second, each cancelling the last: all answered once, newest answered."""
    ws = make_workspace(tmp_path)
    async with lsp_session(tmp_path, tiny_model, ws, backend=test_backend()) as client:
        lib = ws / "src" / "lib.rs"
        uri = open_file(client, lib)
        pos = line_col(lib.read_text(), "let mut total = ")
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=pos,
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic))
        proto = client.protocol
        futures = []
        for i in range(50):
            if i:
                client.cancel_request(types.CancelParams(id=f"storm-{i - 1}"))
            futures.append(asyncio.wrap_future(proto.send_request(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=f"storm-{i}")))
            await asyncio.sleep(0.02)
        results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 30)
        assert len(results) == 50
        assert isinstance(results[-1], types.InlineCompletionList), results[-1]
        for r in results[:-1]:
            assert isinstance(r, types.InlineCompletionList | JsonRpcException), r
        # Still responsive, and the engine never died.
        t0 = time.monotonic()
        st = await status(client)
        assert time.monotonic() - t0 < 2.0
        assert st["engineState"] == "ready" and st["engineRestarts"] == 0


async def test_engine_crash_restarts_and_server_survives(tmp_path: Path, tiny_model: Path) -> None:
    ws = make_workspace(tmp_path)
    health = {"HYBRID_LSP_HEALTH_INTERVAL_S": "0.5", "HYBRID_LSP_HEALTH_TIMEOUT_S": "2"}
    async with lsp_session(tmp_path, tiny_model, ws, backend=test_backend(),
                           env=health) as client:
        uri = open_file(client, ws / "src" / "lib.rs")
        crashed = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="hybridLsp.test.crashEngine", arguments=["abort"]))
        assert crashed is True
        await asyncio.sleep(0.3)
        # While the engine restarts, requests are answered (empty), not hung.
        res = await asyncio.wait_for(client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                   position=types.Position(line=7, character=4))), 20)
        assert isinstance(res, types.CompletionList)
        st = await wait_ready(client, 60)
        assert st["engineState"] == "ready" and st["engineRestarts"] >= 1

        # A child that hangs in native code (test hook) is found by the idle health
        # check and restarted; requests work again afterwards.
        hung = await command(client, "hybridLsp.test.crashEngine", "hang")
        assert hung is True
        st = await poll(client, lambda s: s["engineRestarts"] >= 2
                        and s["engineState"] == "ready", timeout=30)
        assert st["healthChecks"] >= 1
        res = await asyncio.wait_for(client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                   position=types.Position(line=7, character=4))), 20)
        assert isinstance(res, types.CompletionList)


ACTIONS_FILE = """use std::fmt;
use crate::shapes::Shape;
struct P;
impl fmt::Display for P {
}
fn kind(s: &Shape) -> u8 {
    match s {
        Shape::Square(_) => 1,
    }
}
fn later() -> u8 {
    todo!()
}
"""


async def check_code_actions(client, ws: Path) -> None:
    """Every action resolves lazily to an edit that adds no parse errors."""
    from hybrid_lsp.postprocess import error_count

    uri = (ws / "src" / "extra.rs").as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="rust", version=1,
                                             text=ACTIONS_FILE)))
    expected = {"impl fmt::Display": "fn fmt(", "match s": "Shape::Circle(..) => todo!(),",
                "todo!()": ""}
    for needle, must in expected.items():
        pos = line_col(ACTIONS_FILE, needle)
        found = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(start=pos, end=pos), context=types.CodeActionContext(diagnostics=[])))
        assert found and all(a.edit is None for a in found)  # edits come in resolve
        action = found[0]
        resolved = await client.code_action_resolve_async(action)
        assert resolved.edit is not None, resolved
        (edit,) = resolved.edit.changes[uri]
        assert must in edit.new_text
        lines = ACTIONS_FILE.split("\n")
        start = sum(len(ln) + 1 for ln in lines[:edit.range.start.line])
        start += edit.range.start.character
        end = sum(len(ln) + 1 for ln in lines[:edit.range.end.line]) + edit.range.end.character
        after = ACTIONS_FILE[:start] + edit.new_text + ACTIONS_FILE[end:]
        assert error_count(after) <= error_count(ACTIONS_FILE)
        if needle == "todo!()":
            assert "todo!()" not in edit.new_text or "did not parse" in resolved.title
    await check_model_bodies(client, uri)


async def resolve_at(client, uri: str, text: str, needle: str) -> types.CodeAction:
    pos = line_col(text, needle)
    found = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=pos, end=pos), context=types.CodeActionContext(diagnostics=[])))
    return await client.code_action_resolve_async(found[0])


async def check_model_bodies(client, uri: str) -> None:
    """Whatever the model says, implement-trait inserts exactly `fn fmt` and parses."""
    from hybrid_lsp.postprocess import error_count

    cases = [("x } fn evil() {", False), ("let = = ;(", False), ("", False),
             ('write!(f, "P")', True)]
    for said, kept in cases:
        assert await command(client, "hybridLsp.test.modelText", said) is True
        action = await resolve_at(client, uri, ACTIONS_FILE, "impl fmt::Display")
        (edit,) = action.edit.changes[uri]
        assert edit.new_text.count("fn ") == 1 and "fn fmt(&self, f: &mut std::fmt::Formatter" \
            in edit.new_text
        assert error_count(edit.new_text.join(["impl X for P {", "}"])) == 0
        if kept:
            assert said in edit.new_text and "todo!()" not in action.title
        else:
            assert "todo!()" in edit.new_text and "did not parse" in action.title, action.title
    await command(client, "hybridLsp.test.modelText", None)


async def check_client_file_watching(client, ws: Path, registrations: list) -> None:
    """Watchers registered with the client; its events are hints, a scan decides."""
    await poll(client, lambda s: bool(registrations))
    (reg,) = [r for r in registrations if r.method == "workspace/didChangeWatchedFiles"]
    globs = sorted(w["globPattern"] if isinstance(w, dict) else w.glob_pattern
                   for w in (reg.register_options["watchers"]
                             if isinstance(reg.register_options, dict)
                             else reg.register_options.watchers))
    assert globs == ["**/*.rs", "**/Cargo.toml"]
    st = await poll(client, lambda s: s["watching"] == "client")
    before = st["indexFiles"]
    new = ws / "src" / "created_later.rs"
    new.write_text("pub fn later() {}\n")
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
        types.FileEvent(uri=new.as_uri(), type=types.FileChangeType.Created)]))
    await poll(client, lambda s: s["indexFiles"] == before + 1)
    new.unlink()
    client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
        types.FileEvent(uri=new.as_uri(), type=types.FileChangeType.Deleted)]))
    await poll(client, lambda s: s["indexFiles"] == before)
