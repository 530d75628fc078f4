"""The embedded default model through the real server: at pinned typing positions in the
fixture crate, a completion survives post-processing and is shown at all but at most one.

Deterministic: the engine decodes greedily (the default), the positions are fixed, and the
prompt comes from the fixture crate's index. A model's text may be dropped at some
positions; every one shown must follow the post-processing rules.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types

from hybrid_lsp.postprocess import error_count
from hybrid_lsp.server import default_model_path
from tests.hybrid_lsp.conftest import llama_available
from tests.hybrid_lsp.lsp_session import lsp_session, make_workspace

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120),
              pytest.mark.skipif(not llama_available(), reason="llama-cpp-python not installed")]

#: (line after which a new line is typed, text typed there): the cursor ends the text.
POSITIONS = (
    ("pub fn label(s: &Shape) -> &'static str {", "let fallback ="),
    ("pub fn label(s: &Shape) -> &'static str {", "let fa"),
    ("    let mut total = 0.0;", "let count ="),
    ("pub fn unit() -> Circle {", "let radius ="),
    ("pub fn unit() -> Circle {", "l"),
    ("    let mut total = 0.0;", "let count = items.len() as f64;"),
)


async def test_default_model_shows_completions(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    lib = ws / "src" / "lib.rs"
    original = lib.read_text()
    shown: list[str] = []
    async with lsp_session(tmp_path, Path(default_model_path()), ws, backend="llama",
                           settings={"completion": {"maxTokens": 48,
                                                    "contextBudgetTokens": 2048}}) as client:
        for version, (anchor, typed) in enumerate(POSITIONS, start=1):
            at = original.index(anchor) + len(anchor)
            text = original[:at] + "\n    " + typed + original[at:]
            offset = at + 5 + len(typed)
            line = text.count("\n", 0, offset)
            col = offset - (text.rfind("\n", 0, offset) + 1)
            uri = lib.as_uri()
            if version == 1:
                client.text_document_did_open(types.DidOpenTextDocumentParams(
                    text_document=types.TextDocumentItem(uri=uri, language_id="rust",
                                                         version=1, text=text)))
            else:
                client.text_document_did_change(types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri,
                                                                        version=version),
                    content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))
            res = await client.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line=line, character=col),  # ASCII line
                    context=types.InlineCompletionContext(
                        trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
            for item in res.items if res else []:
                got = item.insert_text
                assert got.strip() and got == got.rstrip() and "<|" not in got
                assert error_count(text[:offset] + got + text[offset:]) <= error_count(text)
                shown.append(got)
    # The shipped model showed a completion at all 6 positions when this was written
    # (2026-11-23); a regression in the prompt, healing or post-processing shows here.
    assert len(shown) >= len(POSITIONS) - 1, f"shown at {len(shown)} positions: {shown}"
