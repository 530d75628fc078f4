"""The language server: one handler per LSP method, state on `HybridLanguageServer`.

Handlers are `async def` and thin: read the document, call the completion pipeline
(debounce -> cache -> prompt -> engine child -> post-processing) or the actions module,
convert, return. Blocking work (tokenizing, tree-sitter) runs in threads; the model runs
in the engine child process (engine_client.py). Any failure inside a feature is logged
and becomes an empty result.

Cancellation: a new completion request supersedes the previous one (its cancel event is
set; it answers empty); `$/cancelRequest` cancels the handler's task (pygls answers
-32800) and the engine child is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from engine.prompt import FimRequest, special_token_strings
from hybrid_lsp import __version__, actions
from hybrid_lsp.completion import (
    CONTEXT_SHARE,
    CompletionCache,
    IgnoreRules,
    LatencyStats,
    PromptBuilder,
    Stopwatch,
    gather_context,
    is_secret,
    prompt_digest,
)
from hybrid_lsp.convert import (
    UTF16,
    lsp_completion_item,
    lsp_inline_item,
    lsp_text_edit,
    offset_at,
)
from hybrid_lsp.engine_client import READY, EngineClient, EngineConfig, EngineUnavailable
from hybrid_lsp.postprocess import clean_completion, cut_at_markers
from hybrid_lsp.settings import SECTION, Settings, merge_settings, to_wire
from hybrid_lsp.transport import REDACT, HardenedProtocol

log = logging.getLogger(__name__)

CMD_STATUS, CMD_REINDEX = "hybridLsp.status", "hybridLsp.reindex"
CMD_TEST_CRASH = "hybridLsp.test.crashEngine"
WARM_DELAY_S = 0.3
#: Special-token text (`<|fim_middle|>`, ...) never reaches the editor.
SPECIAL_TEXTS = tuple(special_token_strings().values())


def default_model_path() -> str:
    """The bundled demo model (engine/models/demo.gguf)."""
    return str(importlib.resources.files("engine").joinpath("models", "demo.gguf"))


class _Slot:
    """The newest completion request; setting `cancel` supersedes it."""

    def __init__(self) -> None:
        self.cancel = asyncio.Event()


class HybridLanguageServer(LanguageServer):
    """Server state: settings, engine child, caches, statistics."""

    def __init__(self) -> None:
        super().__init__(name="hybrid-lsp", version=__version__, protocol_cls=HardenedProtocol)
        self.settings = Settings()
        self.engine: EngineClient | None = None
        self.prompts: PromptBuilder | None = None
        self.model_name = ""
        self.cache = CompletionCache()
        self.latencies = LatencyStats()
        self.failures = 0
        self.root: Path | None = None
        self.rules = IgnoreRules(None)
        self._slot: _Slot | None = None
        self._warm_task: asyncio.Task | None = None
        self._warmed: str = ""
        self._tasks: set[asyncio.Task] = set()
        self.index = None          # indexer.store.Index once built
        self.assembler = None      # indexer.context.ContextAssembler over it
        self.index_stats = None
        self._ctx_lock = threading.Lock()

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Errors outside requests go to the (rate-limited) log, never to popups."""
        log.warning("server error (%s): %s", getattr(source, "__name__", source), error)

    # -- settings ------------------------------------------------------------------------
    def apply_settings(self, raw: Any, source: str) -> None:
        """Merge client settings; report rejected values; reconfigure what changed."""
        new, errors = merge_settings(self.settings, raw)
        for err in errors:
            log.warning("settings (%s): %s", source, err)
        if errors:
            self.window_show_message(types.ShowMessageParams(
                type=types.MessageType.Warning,
                message="hybrid-lsp: invalid settings ignored: " + "; ".join(errors)))
        old, self.settings = self.settings, new
        REDACT.include_text = new.log.include_text
        logging.getLogger().setLevel(new.log.level.upper())
        if self.engine is not None and (old.model != new.model or
                                        old.completion.context_budget_tokens !=
                                        new.completion.context_budget_tokens):
            self.spawn(self.start_engine())

    def engine_config(self) -> EngineConfig:
        c = self.settings.completion
        n_ctx = -(-(c.context_budget_tokens + c.max_tokens + 16) // 256) * 256
        return EngineConfig(model_path=self.settings.model.path or default_model_path(),
                            backend=self.settings.model.backend, n_ctx=n_ctx)

    async def start_engine(self) -> None:
        """(Re)start the engine child for the current settings; load the tokenizer here."""
        config = self.engine_config()
        try:
            from engine.gguf_io import read_model_info

            info = await asyncio.to_thread(read_model_info, config.model_path)
            self.prompts, self.model_name = PromptBuilder(info.tokenizer), info.name
            self._make_assembler()
        except Exception as e:  # an unusable model file: say so once, keep serving
            log.error("model %s cannot be used: %s", config.model_path, " ".join(str(e).split()))
            self.window_show_message(types.ShowMessageParams(
                type=types.MessageType.Error, message=f"hybrid-lsp: model not loaded: {e}"))
        if self.engine is None:
            self.engine = EngineClient(config)
            await self.engine.start()
        else:
            await self.engine.configure(config)
        self._warmed = ""

    def spawn(self, coro) -> asyncio.Task:
        """Run `coro` in the background, keeping a reference and logging its failure."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %r", task.exception())

    # -- documents -----------------------------------------------------------------------
    @property
    def encoding(self) -> str:
        enc = self.workspace.position_encoding
        return str(getattr(enc, "value", enc) or UTF16)

    def rust_text(self, uri: str) -> str | None:
        """The text of an open Rust document, or None (other files are not served)."""
        path = to_fs_path(uri) or uri
        if not path.endswith(".rs") or is_secret(path):
            return None
        return self.workspace.get_text_document(uri).source

    def open_documents(self) -> list[tuple[str, str]]:
        docs = self.workspace.text_documents
        return [(to_fs_path(uri) or uri, doc.source) for uri, doc in list(docs.items())]

    def _context(self, path: str):
        budget = self.settings.completion.context_budget_tokens
        return gather_context(path, self.open_documents(), rules=self.rules,
                              budget_chars=int(budget * CONTEXT_SHARE * 3))

    def _request(self, uri: str, text: str, offset: int) -> FimRequest:
        """The FIM request: context from the index when it has the file, else open files."""
        path = to_fs_path(uri) or uri
        if self.assembler is not None and self.prompts is not None:
            try:
                return self._indexed_request(path, text, offset)
            except Exception:  # the index is an optimisation: fall back to open files
                log.exception("context from the index failed")
        shown = Path(path).name
        if self.root is not None:
            with contextlib.suppress(ValueError):
                shown = Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        repo = self.root.name if self.root is not None else ""
        return FimRequest(path=shown, prefix=text[:offset], suffix=text[offset:],
                          repo_name=repo, context=self._context(path))

    def _indexed_request(self, path: str, text: str, offset: int) -> FimRequest:
        from engine.prompt import ContextFile

        key = self.index.key_for(path)
        if key is None:
            raise ValueError("file not in the index")
        line = text.count("\n", 0, offset)
        col = offset - (text.rfind("\n", 0, offset) + 1)
        with self._ctx_lock:
            ctx = self.assembler.assemble(key, text, line, col,
                                          budget=self.settings.completion.context_budget_tokens)
        return FimRequest(path=ctx.path, prefix=ctx.prefix, suffix=ctx.suffix,
                          repo_name=ctx.repo_name,
                          context=tuple(ContextFile(p, t) for p, t in ctx.context_files()))

    def _build_ids(self, uri: str, text: str, offset: int) -> list[int]:
        return self.prompts.build(self._request(uri, text, offset),
                                  self.settings.completion.context_budget_tokens)

    # -- index ---------------------------------------------------------------------------
    async def build_index(self) -> None:
        """Index the workspace on start-up, reporting `$/progress` (percentage, files)."""
        if self.root is None:
            return
        from indexer.store import Index

        token = str(uuid.uuid4())
        progress = self.work_done_progress
        window = self.client_capabilities.window
        shown = bool(window and window.work_done_progress)
        if shown:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(progress.create_async(token), 5.0)
            progress.begin(token, types.WorkDoneProgressBegin(
                title="hybrid-lsp: indexing", percentage=0, cancellable=False))
        loop = asyncio.get_running_loop()

        def report(done: int, total: int, path: str) -> None:
            if shown:
                pct = int(100 * done / max(total, 1))
                loop.call_soon_threadsafe(progress.report, token, types.WorkDoneProgressReport(
                    message=f"{done}/{total} files", percentage=pct))

        try:
            index = await asyncio.to_thread(
                Index, [str(self.root)], cache_dir=os.environ.get("HYBRID_LSP_CACHE_DIR"))
            self.index_stats = await asyncio.to_thread(index.reconcile, progress=report)
            self.index = index
            self._make_assembler()
        finally:
            if shown:
                files = self.index_stats.files if self.index_stats else 0
                progress.end(token, types.WorkDoneProgressEnd(message=f"{files} files indexed"))
        log.info("indexed %d files in %.2f s", self.index_stats.files, self.index_stats.seconds)

    def _make_assembler(self) -> None:
        from indexer.context import ContextAssembler

        if self.index is None or self.prompts is None:
            return
        self.assembler = ContextAssembler(
            self.index, self.prompts.count, special_token_strings(),
            repo_name=self.root.name if self.root is not None else "")

    # -- completion pipeline -------------------------------------------------------------
    async def complete(self, uri: str,
                       position: types.Position) -> tuple[str, int, str, str] | None:
        """(completion, offset, document text, detail) at `position`, or None."""
        text = self.rust_text(uri)
        if text is None:
            return None
        watch = Stopwatch()
        offset = offset_at(text, position, self.encoding)
        cached = self.cache.lookup(uri, text[:offset], text[offset:])
        if cached is not None:
            return cached, offset, text, f"hybrid-lsp · cache · {watch.ms:.0f} ms"
        if self._slot is not None:
            self._slot.cancel.set()
        slot = self._slot = _Slot()
        await asyncio.sleep(self.settings.completion.debounce_ms / 1e3)
        if slot.cancel.is_set():
            return None
        raw = await self._generate(uri, text, offset, slot)
        if raw is None:
            return None
        cleaned = await asyncio.to_thread(clean_completion, raw, text, offset)
        if cleaned is None:
            return None
        self.cache.store(uri, text[:offset], text[offset:], cleaned)
        self.latencies.add(watch.ms)
        detail = f"hybrid-lsp · {self.model_name} ({self.engine.ready.backend}) · {watch.ms:.0f} ms"
        return cleaned, offset, text, detail

    async def _generate(self, uri: str, text: str, offset: int, slot: _Slot) -> str | None:
        c = self.settings.completion
        if self.engine is None or self.prompts is None:
            return None
        if not await self.engine.wait_ready(c.latency_budget_ms / 1e3):
            return None
        ids = await asyncio.to_thread(self._build_ids, uri, text, offset)
        line_after = text[offset:].split("\n", 1)[0]
        stops = ["\n"] if line_after.strip() else ["\n\n\n"]
        try:
            res = await self.engine.generate(ids, max_tokens=c.max_tokens,
                                             budget_s=c.latency_budget_ms / 1e3,
                                             stop_strings=stops, cancel=slot.cancel)
        except EngineUnavailable as e:
            log.warning("no completion: %s", e)
            return None
        if res is None or res.stop_reason == "cancelled":
            return None
        log.info("completion: %d prompt tokens (%d evaluated), %d generated, %.0f ms engine",
                 res.prompt_tokens, res.evaluated_prompt_tokens, res.generated_tokens,
                 res.total_ms)
        if self.settings.log.include_text:
            log.debug("completion text: %r", res.text)
        return cut_at_markers(res.text, SPECIAL_TEXTS)

    # -- cache warming -------------------------------------------------------------------
    def schedule_warm(self, uri: str) -> None:
        """Warm the engine's KV cache with this file's prompt prefix, soon, in the background."""
        if not self.settings.features.cache_warming or self.rust_text(uri) is None:
            return
        if self._warm_task is not None:
            self._warm_task.cancel()
        self._warm_task = self.spawn(self._warm(uri))

    async def _warm(self, uri: str) -> None:
        await asyncio.sleep(WARM_DELAY_S)
        if self.engine is None or self.prompts is None or self.engine.state != READY:
            return
        req = self._request(uri, "", 0)
        ids = await asyncio.to_thread(self.prompts.warm_prefix, req.repo_name, req.context,
                                      req.path)
        digest = prompt_digest(ids)
        if digest == self._warmed or len(ids) >= self.engine.config.n_ctx:
            return
        with contextlib.suppress(EngineUnavailable):
            res = await self.engine.generate(ids, max_tokens=0, budget_s=30.0, warm=True)
            if res is not None and res.stop_reason != "cancelled":
                self._warmed = digest
                log.info("warmed %d prompt tokens in %.0f ms", res.evaluated_prompt_tokens,
                         res.total_ms)

    # -- code actions --------------------------------------------------------------------
    def workspace_sources(self, limit: int = 300) -> dict[str, str]:
        """Rust sources for trait and enum lookups: open documents, then files on disk."""
        out = {p: t for p, t in self.open_documents() if p.endswith(".rs") and not is_secret(p)}
        if self.root is not None:
            for path in sorted(self.root.rglob("*.rs"))[:limit]:
                if str(path) in out or self.rules.ignored(path) or "target" in path.parts:
                    continue
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    out[str(path)] = path.read_text(encoding="utf-8")
        return out

    async def resolve_action(self, kind: str, text: str, offset: int):
        """(Insertion or None, title or None) for an action found at `offset`."""
        if kind in (actions.IMPLEMENT_TRAIT, actions.FILL_MATCH):
            sources = await asyncio.to_thread(self.workspace_sources)
            fn = actions.implement_trait if kind == actions.IMPLEMENT_TRAIT else actions.fill_match
            return await asyncio.to_thread(fn, text, offset, sources), None
        found = next((f for f in actions.find_actions(text, offset) if f.kind == kind), None)
        if found is None:
            return None, None
        if kind == actions.ADD_DOC:
            indent = actions.indent_of(text, found.start)
            doc = await self._model_text(text[:found.start] + "/// ", "\n" + text[found.start:],
                                         stop="\n")
            line = doc.strip() if doc and doc.strip() else "TODO: document this item."
            return actions.Insertion(found.start, found.start, f"/// {line}\n{indent}"), None
        body_start = text.index("{", found.start) + 1
        body_end = found.end - 1
        indent = actions.indent_of(text, found.start)
        raw = await self._model_text(text[:body_start] + "\n" + indent + "    ",
                                     "\n" + indent + text[body_end:], stop="\n}")
        body, from_model = actions.body_or_todo(raw or "")
        inner = "\n".join(indent + "    " + ln.strip() for ln in body.splitlines())
        title = None if from_model else f"{found.title} (todo!(): the model's body did not parse)"
        return actions.Insertion(body_start, body_end, f"\n{inner}\n{indent}"), title

    async def _model_text(self, prefix: str, suffix: str, stop: str) -> str | None:
        """A FIM generation for a code action (no debounce, no cache); None if unavailable."""
        c = self.settings.completion
        if self.engine is None or self.prompts is None or self.engine.state != READY:
            return None
        req = FimRequest(path="lib.rs", prefix=prefix, suffix=suffix)
        ids = await asyncio.to_thread(self.prompts.build, req, c.context_budget_tokens)
        try:
            res = await self.engine.generate(ids, max_tokens=c.max_tokens * 2,
                                             budget_s=c.latency_budget_ms / 1e3,
                                             stop_strings=[stop])
        except EngineUnavailable:
            return None
        return None if res is None else cut_at_markers(res.text, SPECIAL_TEXTS)

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        eng = self.engine
        ready = eng.ready if eng is not None else None
        return {
            "version": __version__,
            "model": self.model_name or None,
            "modelPath": eng.config.model_path if eng else None,
            "backend": ready.backend if ready else None,
            "device": ready.device if ready else None,
            "engineState": eng.state if eng else "stopped",
            "engineDetail": eng.detail if eng else "",
            "engineRestarts": eng.restarts if eng else 0,
            "contextBudgetTokens": self.settings.completion.context_budget_tokens,
            "indexFiles": self.index_stats.files if self.index_stats else len(
                [p for p, _ in self.open_documents() if p.endswith(".rs")]),
            "latencyMs": self.latencies.summary(),
            "cacheHits": self.cache.hits,
            "malformedMessages": self.protocol.malformed,
            "settings": to_wire(self.settings),
        }


SERVER = HybridLanguageServer()


@SERVER.feature(types.INITIALIZE)
def initialize(ls: HybridLanguageServer, params: types.InitializeParams) -> None:
    root = params.root_uri or (params.workspace_folders[0].uri if params.workspace_folders
                               else None)
    if root:
        ls.root = Path(to_fs_path(root) or root)
        ls.rules = IgnoreRules(ls.root)
    ls.apply_settings(params.initialization_options, "initializationOptions")


@SERVER.feature(types.INITIALIZED)
async def initialized(ls: HybridLanguageServer, params: types.InitializedParams) -> None:
    await pull_configuration(ls)
    ls.spawn(ls.start_engine())
    ls.spawn(ls.build_index())


async def pull_configuration(ls: HybridLanguageServer) -> None:
    """Ask the client for the `hybridLsp` section, if it can answer."""
    ws = ls.client_capabilities.workspace
    if not (ws and ws.configuration):
        return
    try:
        result = await asyncio.wait_for(ls.workspace_configuration_async(
            types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])), 5.0)
    except Exception as e:  # a client that does not answer keeps the current settings
        log.warning("workspace/configuration failed: %r", e)
        return
    if result and result[0] is not None:
        ls.apply_settings(result[0], "workspace/configuration")


@SERVER.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def did_change_configuration(ls: HybridLanguageServer,
                                   params: types.DidChangeConfigurationParams) -> None:
    settings = params.settings
    if isinstance(settings, dict) and settings:
        ls.apply_settings(settings, "didChangeConfiguration")
    else:
        await pull_configuration(ls)


@SERVER.feature(types.TEXT_DOCUMENT_DID_OPEN)
async def did_open(ls: HybridLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
    ls.schedule_warm(params.text_document.uri)


@SERVER.feature(types.TEXT_DOCUMENT_DID_CHANGE)
async def did_change(ls: HybridLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.schedule_warm(params.text_document.uri)


@SERVER.feature(types.TEXT_DOCUMENT_DID_CLOSE)
async def did_close(ls: HybridLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.cache.clear(params.text_document.uri)


@SERVER.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: HybridLanguageServer, params: types.InlineCompletionParams
                            ) -> types.InlineCompletionList | None:
    if not ls.settings.features.inline_completion:
        return None
    try:
        got = await ls.complete(params.text_document.uri, params.position)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception:
        ls.failures += 1
        log.exception("inline completion failed")
        return None
    if got is None:
        return types.InlineCompletionList(items=[])
    completion, offset, text, _ = got
    return types.InlineCompletionList(items=[lsp_inline_item(text, offset, completion,
                                                             ls.encoding)])


@SERVER.feature(types.TEXT_DOCUMENT_COMPLETION,
                types.CompletionOptions(trigger_characters=[".", ":", "("]))
async def completion(ls: HybridLanguageServer, params: types.CompletionParams
                     ) -> types.CompletionList | None:
    if not ls.settings.features.completion:
        return None
    try:
        got = await ls.complete(params.text_document.uri, params.position)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception:
        ls.failures += 1
        log.exception("completion failed")
        return None
    if got is None:
        return types.CompletionList(is_incomplete=True, items=[])
    text_, offset, text, detail = got
    item = lsp_completion_item(text, offset, text_, detail=detail, encoding=ls.encoding)
    return types.CompletionList(is_incomplete=True, items=[item])


@SERVER.command(CMD_STATUS)
async def status(ls: HybridLanguageServer, *args: Any) -> dict[str, Any]:
    return ls.status()


@SERVER.command(CMD_REINDEX)
async def reindex(ls: HybridLanguageServer, *args: Any) -> dict[str, Any]:
    ls.cache.clear()
    ls._warmed = ""
    if ls.index is not None:
        ls.index_stats = await asyncio.to_thread(ls.index.reconcile)
        if ls.assembler is not None:
            ls.assembler.invalidate()
    return {"indexFiles": ls.status()["indexFiles"]}


@SERVER.feature(types.TEXT_DOCUMENT_DID_SAVE)
async def did_save(ls: HybridLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
    await refresh_paths(ls, [to_fs_path(params.text_document.uri) or ""])


@SERVER.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
async def did_change_watched_files(ls: HybridLanguageServer,
                                   params: types.DidChangeWatchedFilesParams) -> None:
    await refresh_paths(ls, [to_fs_path(c.uri) or "" for c in params.changes])


async def refresh_paths(ls: HybridLanguageServer, paths: list[str]) -> None:
    """Re-read changed files into the index (hints; the next reconcile decides)."""
    if ls.index is None:
        return
    keys = [k for k in (ls.index.key_for(p) for p in paths if p) if k]
    if keys:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(ls.index.refresh, keys)
        if ls.assembler is not None:
            ls.assembler.invalidate()


@SERVER.command(CMD_TEST_CRASH)
async def crash_engine(ls: HybridLanguageServer, *args: Any) -> bool:
    """Test hook: make the engine child abort (ignored unless HYBRID_LSP_TEST_HOOKS=1)."""
    if ls.engine is None:
        return False
    with contextlib.suppress(EngineUnavailable):
        await ls.engine.crash_for_test(str(args[0]) if args else "abort")
        return True
    return False


CODE_ACTION_KIND = types.CodeActionKind.RefactorRewrite


@SERVER.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
    code_action_kinds=[CODE_ACTION_KIND], resolve_provider=True))
async def code_action(ls: HybridLanguageServer, params: types.CodeActionParams
                      ) -> list[types.CodeAction] | None:
    text = ls.rust_text(params.text_document.uri)
    if text is None or not ls.settings.features.code_actions:
        return None
    offset = offset_at(text, params.range.start, ls.encoding)
    try:
        found = await asyncio.to_thread(actions.find_actions, text, offset)
    except Exception:
        log.exception("code actions failed")
        return None
    return [types.CodeAction(title=f.title, kind=CODE_ACTION_KIND, data={
        "kind": f.kind, "uri": params.text_document.uri, "offset": offset}) for f in found]


@SERVER.feature(types.CODE_ACTION_RESOLVE)
async def code_action_resolve(ls: HybridLanguageServer, action: types.CodeAction
                              ) -> types.CodeAction:
    data = action.data if isinstance(action.data, dict) else {}
    text = ls.rust_text(str(data.get("uri", "")))
    if text is None:
        return action
    try:
        ins, title = await ls.resolve_action(str(data.get("kind")), text,
                                             int(data.get("offset", 0)))
    except Exception:
        log.exception("resolving a code action failed")
        return action
    if ins is None or not actions.no_new_errors(text, ins):
        return action
    action.title = title or action.title
    action.edit = types.WorkspaceEdit(changes={data["uri"]: [
        lsp_text_edit(text, ins.at, ins.end, ins.text, ls.encoding)]})
    return action


@SERVER.feature(types.SHUTDOWN)
async def shutdown(ls: HybridLanguageServer, params: None) -> None:
    if ls.engine is not None:
        await ls.engine.close()
