"""Start the real server over stdio with pytest-lsp, on a copy of the fixture workspace."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "ws"
SECRET = "CANARY_SECRET_7f3a9"


def make_workspace(tmp: Path) -> Path:
    """The fixture crate plus secrets that must never reach a prompt."""
    ws = tmp / "shapes"
    shutil.copytree(FIXTURE, ws)
    (ws / ".env").write_text(f"API_KEY={SECRET}\n")
    (ws / "src" / "secret_notes.rs").write_text(f"// {SECRET}\npub fn x() {{}}\n")
    return ws


def server_env(tmp: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HYBRID_LSP_LOG_DIR=str(tmp / "logs"), HYBRID_LSP_TEST_HOOKS="1",
               HYBRID_LSP_CACHE_DIR=str(tmp / "cache"),
               PYTHONPATH=str(ROOT))
    env.update(extra or {})
    return env


def server_command() -> list[str]:
    return [sys.executable, "-m", "hybrid_lsp.serve_cmd"]


@contextlib.asynccontextmanager
async def lsp_session(tmp: Path, model: Path, ws: Path, *, backend: str,
                      settings: dict[str, Any] | None = None,
                      capabilities: str = "visual-studio-code",
                      command: list[str] | None = None, env: dict[str, str] | None = None,
                      registrations: list | None = None) -> AsyncIterator[LanguageClient]:
    """An initialized client whose server has a ready engine.

    `registrations`: when a list, the client accepts `client/registerCapability` and
    appends each registration to it (pytest-lsp's client would refuse it).
    """
    config = ClientServerConfig(server_command=command or server_command(),
                                server_env=server_env(tmp, env))
    client: LanguageClient = await config.start()
    if registrations is not None:
        @client.feature(types.CLIENT_REGISTER_CAPABILITY)
        def register(params: types.RegistrationParams) -> None:
            registrations.extend(params.registrations)

    options = {"model": {"path": str(model), "backend": backend},
               "completion": {"debounceMs": 0, "latencyBudgetMs": 5000, "maxTokens": 16,
                              "contextBudgetTokens": 1024}}
    client.set_configuration(settings or {}, section="hybridLsp")
    client.init_result = await client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities(capabilities), root_uri=ws.as_uri(),
        initialization_options=options))
    try:
        await wait_ready(client)
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.shutdown_session(), 10)


async def command(client: LanguageClient, name: str, *args: Any) -> Any:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=name, arguments=list(args)))


async def poll(client: LanguageClient, check, timeout: float = 20.0) -> dict[str, Any]:
    """Status until `check(status)` holds (AssertionError with the last status if not)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        st = await status(client)
        if check(st):
            return st
        if loop.time() > end:
            raise AssertionError(f"condition not met in {timeout} s: {st}")
        await asyncio.sleep(0.1)


async def status(client: LanguageClient) -> dict[str, Any]:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hybridLsp.status"))


async def wait_ready(client: LanguageClient, timeout: float = 60.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        st = await status(client)
        if st["engineState"] == "ready" or loop.time() > end:
            return st
        await asyncio.sleep(0.2)


def open_file(client: LanguageClient, path: Path) -> str:
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="rust", version=1,
                                             text=path.read_text())))
    return uri
