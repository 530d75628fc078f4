"""The language server: one handler per LSP method, state on `HybridLanguageServer`.

Handlers are `async def` and thin: read the document, call the completion pipeline
(debounce -> cache -> prompt -> engine child -> post-processing) or the actions module,
convert, return. Blocking work (tokenizing, tree-sitter) runs in threads; the model runs
in the engine child process (engine_client.py). Any failure inside a feature is logged
and becomes an empty result.

Cancellation: a new completion request supersedes the previous one (its cancel event is
set; it answers empty); `$/cancelRequest` cancels the handler's task (pygls answers
-32800) and the engine child is told to stop.

Cache warming: when the repository context changes (a file opened, an index update, the
cursor entering another item: `current_item`, from the index's item spans) the server
sends the engine a warm request (the prompt prefix for that cursor, `max_tokens=0`) after
`WARM_DELAY_S`; a real request cancels it (and the child preempts it).

Debugging: with the `log.includeText` setting, every completion logs one line
`TRACE_PREFIX` + JSON (raw model text, the text shown, stop reason), which
`hybrid-lsp bench serve --trace` collects.

File watching: with a client that registers watchers dynamically, the server registers
`**/*.rs` and `**/Cargo.toml` and feeds `workspace/didChangeWatchedFiles` to the index's
`Watcher` as hints; otherwise the watcher runs its own watchdog observer. Either way a
reconcile scan decides what the index holds (indexer/watch.py).

Every handler runs behind `guarded`: an exception is logged and counted (`failures`) and
the request gets an error response; the server goes on. Test hooks (only with
`HYBRID_LSP_TEST_HOOKS=1`): `hybridLsp.test.faults` makes handlers raise at a rate,
`hybridLsp.test.crashEngine`, `hybridLsp.test.tuneEngine`, `hybridLsp.test.modelText`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import threading
import uuid
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from engine.prompt import FimRequest, special_token_strings, unheal_completion
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
from hybrid_lsp.postprocess import (
    clean_completion,
    cut_at_markers,
    generation_limits,
    rust_parser,
)
from hybrid_lsp.settings import SECTION, Settings, merge_settings, to_wire
from hybrid_lsp.transport import REDACT, HardenedProtocol

if TYPE_CHECKING:
    from tree_sitter import Node

    from indexer.items import FileIndex

log = logging.getLogger(__name__)

CMD_STATUS, CMD_REINDEX = "hybridLsp.status", "hybridLsp.reindex"
CMD_TEST_CRASH, CMD_TEST_FAULTS = "hybridLsp.test.crashEngine", "hybridLsp.test.faults"
CMD_TEST_TUNE, CMD_TEST_MODEL_TEXT = "hybridLsp.test.tuneEngine", "hybridLsp.test.modelText"
TEST_HOOKS_ENV = "HYBRID_LSP_TEST_HOOKS"
WARM_DELAY_S = 0.3
#: Glob patterns registered with clients that watch files for us.
WATCH_GLOBS = ("**/*.rs", "**/Cargo.toml")
#: tree-sitter node kinds of items (the cursor's item, when the index lacks the file).
_TS_ITEMS = frozenset({"function_item", "function_signature_item", "impl_item", "trait_item",
                       "struct_item", "enum_item", "union_item", "mod_item", "type_item",
                       "const_item", "static_item", "macro_definition"})
#: Start of the log line with a completion's raw and shown text (`log.includeText` only).
TRACE_PREFIX = "completion trace: "
#: Special-token text (`<|fim_middle|>`, ...) never reaches the editor.
SPECIAL_TEXTS = tuple(special_token_strings().values())


def default_model_path() -> str:
    """The embedded default model (engine/models/hybrid-lsp.gguf)."""
    from engine.default_model import default_model_path as path

    return str(path())


def test_hooks() -> bool:
    """True when test hooks are enabled (`HYBRID_LSP_TEST_HOOKS=1`)."""
    return os.environ.get(TEST_HOOKS_ENV) == "1"


class InjectedFault(RuntimeError):
    """Raised by the fault-injection test hook."""


class FaultInjector:
    """Test hook: make handlers raise at `rate` (all methods, or only `methods`)."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.methods: frozenset[str] | None = None
        self.injected = 0
        self._rng = random.Random(0)

    def configure(self, rate: float, methods: list[str] | None = None, seed: int = 0) -> None:
        self.rate = max(0.0, min(1.0, float(rate)))
        self.methods = frozenset(methods) if methods else None
        self._rng = random.Random(seed)

    def check(self, method: str) -> None:
        """Raise InjectedFault for `method` with probability `rate`."""
        if self.rate <= 0 or method.startswith("hybridLsp.test."):
            return
        if self.methods is not None and method not in self.methods:
            return
        if self._rng.random() < self.rate:
            self.injected += 1
            raise InjectedFault(f"injected fault in {method}")


def current_item(text: str, offset: int, fi: FileIndex | None = None) -> Hashable:
    """The identity (no positions) of the innermost item the cursor is in; None outside.

    With the file's index entry `fi`: its item spans (`find_enclosing`/`item_key`, as the
    context assembler picks the enclosing item, whose repository part then changes).
    Without: the tree-sitter items around the cursor in `text` (nested ones too: a method
    in an `impl`, a test in `mod tests`), as (kind, first line) pairs, outermost first.
    """
    if fi is not None:
        from indexer.signals import find_enclosing, item_key

        item = find_enclosing(fi, text.count("\n", 0, offset))
        return None if item is None else item_key(fi, item)
    data = text.encode("utf-8")
    at = len(text[:offset].encode("utf-8"))
    node: Node | None = rust_parser().parse(data).root_node.descendant_for_byte_range(at, at)
    path: list[tuple[str, str]] = []
    while node is not None:
        if node.type in _TS_ITEMS:
            head = data[node.start_byte:node.end_byte].split(b"\n", 1)[0]
            path.append((node.type, head.decode("utf-8", "replace").strip()))
        node = node.parent
    return tuple(reversed(path)) or None


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
        self.faults = FaultInjector()
        self.watcher = None        # indexer.watch.Watcher once the index exists
        self.watch_mode = "off"    # "client" (registered watchers) or "watchdog"
        self.model_text_override: str | None = None  # test hook for code actions
        self.cursor: dict[str, int] = {}
        self.active_uri: str | None = None
        self._warm_keys: dict[str, tuple] = {}
        self.warm_requests = 0

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
            self.engine = EngineClient(config, **_health_settings())
            await self.engine.start()
        else:
            await self.engine.configure(config)
        self._warmed = ""
        if self.active_uri is not None:
            self.schedule_warm(self.active_uri, force=True)

    def guard_failure(self, method: str) -> None:
        """Count a failed handler (the caller logs it)."""
        self.failures += 1

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

    def _build_ids(self, uri: str, text: str, offset: int) -> tuple[list[int], str]:
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
            self.start_watching(index)
            self.index_updated()
        finally:
            if shown:
                files = self.index_stats.files if self.index_stats else 0
                progress.end(token, types.WorkDoneProgressEnd(message=f"{files} files indexed"))
        log.info("indexed %d files in %.2f s", self.index_stats.files, self.index_stats.seconds)

    def start_watching(self, index) -> None:
        """Keep the index current: a Watcher fed by the client's events or by watchdog."""
        from indexer.watch import Watcher

        client = self._client_watches()
        loop = asyncio.get_running_loop()

        def updated(changed: int) -> None:
            loop.call_soon_threadsafe(self.index_updated)

        kwargs: dict[str, Any] = {"on_update": updated}
        if client:
            kwargs["observer_factory"] = _NoObserver
        self.watcher = Watcher(index, **kwargs)
        self.watcher.start()
        self.watch_mode = "client" if client else "watchdog"
        if client:
            self.spawn(self._register_watchers())
        log.info("file watching: %s", self.watch_mode)

    def _client_watches(self) -> bool:
        ws = self.client_capabilities.workspace
        cap = ws.did_change_watched_files if ws else None
        return bool(cap and cap.dynamic_registration)

    async def _register_watchers(self) -> None:
        """Register our globs; a client that refuses gets the watchdog observer instead."""
        reg = types.Registration(
            id=f"hybrid-lsp-watch-{uuid.uuid4()}", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
            register_options=types.DidChangeWatchedFilesRegistrationOptions(
                watchers=[types.FileSystemWatcher(glob_pattern=g) for g in WATCH_GLOBS]))
        try:
            await asyncio.wait_for(self.client_register_capability_async(
                types.RegistrationParams(registrations=[reg])), 10.0)
        except Exception as e:  # refused or unanswered: watch the disk ourselves
            log.warning("client did not register file watchers (%r); using watchdog", e)
            await self.stop_watching()
            if self.index is not None:
                from indexer.watch import Watcher

                loop = asyncio.get_running_loop()
                self.watcher = Watcher(self.index, on_update=lambda n: loop.call_soon_threadsafe(
                    self.index_updated))
                self.watcher.start()
                self.watch_mode = "watchdog"

    async def stop_watching(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            await asyncio.to_thread(watcher.stop)

    def hint_paths(self, paths: list[str]) -> None:
        """Changed paths (events, saves): hints for the watcher; a scan decides."""
        if self.watcher is None:
            return
        for p in paths:
            if p:
                self.watcher.hint(p)

    def index_updated(self) -> None:
        """The index changed: drop derived caches and warm the engine for the new context."""
        if self.assembler is not None:
            self.assembler.invalidate()
        if self.active_uri is not None:
            self.schedule_warm(self.active_uri, force=True)

    def _make_assembler(self) -> None:
        from hybrid_lsp.context_cmd import tokenizer_counter
        from indexer.context import ContextAssembler

        if self.index is None or self.prompts is None:
            return
        self.assembler = ContextAssembler(
            self.index, tokenizer_counter(self.prompts.tok), special_token_strings(),
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
        self.cursor[uri], self.active_uri = offset, uri
        cached = self.cache.lookup(uri, text[:offset], text[offset:])
        if cached is not None:
            return cached, offset, text, f"hybrid-lsp · cache · {watch.ms:.0f} ms"
        if self._slot is not None:
            self._slot.cancel.set()
        self.cancel_warm()
        slot = self._slot = _Slot()
        await asyncio.sleep(self.settings.completion.debounce_ms / 1e3)
        if slot.cancel.is_set():
            return None
        generated = await self._generate(uri, text, offset, slot)
        if generated is None:
            return None
        res, healed = generated
        raw = unheal_completion(cut_at_markers(res.text, SPECIAL_TEXTS), healed)
        cleaned = await asyncio.to_thread(clean_completion, raw, text, offset)
        if self.settings.log.include_text:  # a debug setting: `hybrid-lsp bench serve --trace`
            log.info("%s%s", TRACE_PREFIX, json.dumps({
                "offset": offset, "raw": raw, "shown": cleaned, "stop": res.stop_reason,
                "tokens": res.generated_tokens, "engine_ms": round(res.total_ms, 1)}))
        if cleaned is None:
            return None
        self.cache.store(uri, text[:offset], text[offset:], cleaned)
        self.latencies.add(watch.ms)
        detail = f"hybrid-lsp · {self.model_name} ({self.engine.ready.backend}) · {watch.ms:.0f} ms"
        return cleaned, offset, text, detail

    async def _generate(self, uri: str, text: str, offset: int, slot: _Slot):
        """(the engine's answer, the text token healing took off the prompt), or None."""
        c = self.settings.completion
        if self.engine is None or self.prompts is None:
            return None
        if not await self.engine.wait_ready(c.latency_budget_ms / 1e3):
            return None
        ids, healed = await asyncio.to_thread(self._build_ids, uri, text, offset)
        stops, max_tokens = generation_limits(text, offset, c.max_tokens)
        try:
            res = await self.engine.generate(ids, max_tokens=max_tokens,
                                             budget_s=c.latency_budget_ms / 1e3,
                                             stop_strings=stops, cancel=slot.cancel,
                                             text_prefix=healed)
        except EngineUnavailable as e:
            log.warning("no completion: %s", e)
            return None
        if res is None or res.stop_reason == "cancelled":
            return None
        log.info("completion: %d prompt tokens (%d evaluated), %d generated (%s), %.0f ms "
                 "engine", res.prompt_tokens, res.evaluated_prompt_tokens,
                 res.generated_tokens, res.stop_reason, res.total_ms)
        return res, healed

    # -- cache warming -------------------------------------------------------------------
    def note_cursor(self, uri: str, offset: int) -> None:
        """The cursor moved (an edit): warm if it entered another top-level item."""
        self.cursor[uri], self.active_uri = offset, uri
        self.schedule_warm(uri)

    def schedule_warm(self, uri: str, *, force: bool = False) -> None:
        """Warm the engine's KV cache with the prompt prefix at the cursor, soon.

        Without `force`, only when the context may have changed since the last warm of
        `uri`: another top-level item at the cursor, or a newer index.
        """
        text = self.rust_text(uri)
        if not self.settings.features.cache_warming or text is None:
            return
        offset = min(self.cursor.get(uri, 0), len(text))
        generation = getattr(self.index, "generation", 0)
        key = (self.cursor_item(uri, text, offset), generation,
               self.engine is not None and self.engine.restarts)
        if not force and self._warm_keys.get(uri) == key:
            return
        self._warm_keys[uri] = key
        self.cancel_warm()
        self._warm_task = self.spawn(self._warm(uri))

    def cursor_item(self, uri: str, text: str, offset: int) -> Hashable:
        """`current_item` at `offset`, from the index's item spans when it has the file."""
        fi = None
        if self.index is not None:
            try:
                key = self.index.key_for(to_fs_path(uri) or uri)
                fi = self.index.file(key) if key is not None else None
            except Exception:  # the index is an optimisation
                log.exception("index lookup for the cursor's item failed")
        return current_item(text, offset, fi)

    def cancel_warm(self) -> None:
        """Stop a pending or running warm request (a real request needs the engine)."""
        if self._warm_task is not None and not self._warm_task.done():
            self._warm_task.cancel()
        self._warm_task = None

    def _warm_ids(self, uri: str) -> list[int] | None:
        text = self.rust_text(uri)
        if text is None or self.prompts is None:
            return None
        offset = min(self.cursor.get(uri, 0), len(text))
        req = self._request(uri, text, offset)
        return self.prompts.warm_prefix(req.repo_name, req.context, req.path)

    async def _warm(self, uri: str) -> None:
        await asyncio.sleep(WARM_DELAY_S)
        if self.engine is None or self.prompts is None or self.engine.state != READY:
            return
        ids = await asyncio.to_thread(self._warm_ids, uri)
        if not ids:
            return
        digest = prompt_digest(ids)
        if digest == self._warmed or len(ids) >= self.engine.config.n_ctx:
            return
        self.warm_requests += 1
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

    def action_sources(self, kind: str, text: str, offset: int) -> dict[str, str]:
        """Sources that may define the trait or enum an action needs: open documents, then
        the files the index names for it (the std stub included), else files on disk."""
        name = actions.target_name(kind, text, offset)
        out = {p: t for p, t in self.open_documents() if p.endswith(".rs") and not is_secret(p)}
        if name is None:
            return out
        if self.index is None:
            return {**self.workspace_sources(), **out}
        for item in self.index.items_named(name):
            if item.kind in ("trait", "enum") and item.path not in out:
                body = self.index.text(item.path)
                if body is not None and not is_secret(item.path):
                    out[item.path] = body
        return out

    async def resolve_action(self, kind: str, text: str, offset: int
                             ) -> tuple[actions.Insertion | None, str | None]:
        """(Insertion or None, title or None) for an action found at `offset`."""
        if kind == actions.FILL_MATCH:
            sources = await asyncio.to_thread(self.action_sources, kind, text, offset)
            return await asyncio.to_thread(actions.fill_match, text, offset, sources), None
        if kind == actions.IMPLEMENT_TRAIT:
            return await self._implement_trait(text, offset)
        found = next((f for f in actions.find_actions(text, offset) if f.kind == kind), None)
        if found is None:
            return None, None
        indent = actions.indent_of(text, found.start)
        if kind == actions.ADD_DOC:
            doc = await self._model_text(text[:found.start] + "/// ", "\n" + text[found.start:],
                                         stop="\n")
            line = doc.strip() if doc and doc.strip() else "TODO: document this item."
            return actions.Insertion(found.start, found.start, f"/// {line}\n{indent}"), None
        body_start = text.index("{", found.start) + 1
        body_end = found.end - 1
        raw = await self._model_text(text[:body_start] + "\n" + indent + "    ",
                                     "\n" + indent + text[body_end:], stop="\n" + indent + "}")
        ins = self._body_insertion(text, body_start, body_end, indent, raw)
        if not actions.no_new_errors(text, ins):
            ins = self._body_insertion(text, body_start, body_end, indent, None)
            raw = raw or ""  # parsed alone, broke the file: it did not fit
        note = actions.fallback_note(ins.fallbacks, {"body": raw}, named=False)
        return ins, (found.title + note if note else None)

    @staticmethod
    def _body_insertion(text: str, start: int, end: int, indent: str,
                        raw: str | None) -> actions.Insertion:
        body, ok = actions.body_or_todo(raw or "")
        inner = actions.reindent(body, indent + "    ")
        return actions.Insertion(start, end, f"\n{inner}\n{indent}",
                                 () if ok else ("body",))

    async def _implement_trait(self, text: str, offset: int
                               ) -> tuple[actions.Insertion | None, str | None]:
        """The trait's missing items; model bodies where they parse, else `todo!()`."""
        sources = await asyncio.to_thread(self.action_sources, actions.IMPLEMENT_TRAIT, text,
                                          offset)
        plan = await asyncio.to_thread(actions.plan_impl, text, offset, sources)
        if plan is None:
            return None, None
        bodies: dict[str, str | None] = {}
        for name, (prefix, suffix) in actions.body_slots(text, plan).items():
            bodies[name] = await self._model_text(prefix, suffix,
                                                  stop="\n" + plan.inner + "}")
        ins = actions.render_impl(plan, bodies)
        if not actions.no_new_errors(text, ins):  # parsed alone, broke the file together
            bodies = {n: "" if b is None else b for n, b in bodies.items()}
            ins = actions.render_impl(plan, {n: None for n in bodies})
            ins = actions.Insertion(ins.at, ins.end, ins.text, tuple(bodies))
        title = f"Implement missing items of {plan.trait}"
        return ins, title + actions.fallback_note(ins.fallbacks, bodies)

    async def _model_text(self, prefix: str, suffix: str, stop: str) -> str | None:
        """A FIM generation for a code action (no debounce, no cache); None if unavailable."""
        c = self.settings.completion
        if self.model_text_override is not None and test_hooks():
            return self.model_text_override
        if self.engine is None or self.prompts is None or self.engine.state != READY:
            return None
        self.cancel_warm()
        req = FimRequest(path="lib.rs", prefix=prefix, suffix=suffix)
        ids, healed = await asyncio.to_thread(self.prompts.build, req, c.context_budget_tokens)
        try:
            res = await self.engine.generate(ids, max_tokens=c.max_tokens * 2,
                                             budget_s=c.latency_budget_ms / 1e3,
                                             stop_strings=[stop], text_prefix=healed)
        except EngineUnavailable:
            return None
        if res is None:
            return None
        return unheal_completion(cut_at_markers(res.text, SPECIAL_TEXTS), healed)

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The status command's answer (see `status_async` for the engine's counters)."""
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
            "failures": self.failures,
            "faultsInjected": self.faults.injected,
            "watching": self.watch_mode,
            "warmRequests": self.warm_requests,
            "healthChecks": eng.health_checks if eng else 0,
            "settings": to_wire(self.settings),
        }


class _NoObserver:
    """A watchdog observer stand-in for when the client watches files (events come in
    `workspace/didChangeWatchedFiles`)."""

    def schedule(self, *args: Any, **kwargs: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


def _health_settings() -> dict[str, float]:
    """Health-check period and timeout, overridable for tests through the environment."""
    out = {}
    for key, env in (("health_interval_s", "HYBRID_LSP_HEALTH_INTERVAL_S"),
                     ("health_timeout_s", "HYBRID_LSP_HEALTH_TIMEOUT_S")):
        with contextlib.suppress(KeyError, ValueError):
            out[key] = float(os.environ[env])
    return out


def guarded(method: str, fn: Callable) -> Callable:
    """Wrap a handler: injected faults (test hook), and every failure logged and counted.

    The exception still propagates, so pygls answers a request with an error (-32603).
    """
    if asyncio.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(ls: HybridLanguageServer, *args: Any) -> Any:
            try:
                ls.faults.check(method)
                return await fn(ls, *args)
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:
                ls.guard_failure(method)
                log.warning("%s failed: %r", method, e, exc_info=not isinstance(
                    e, InjectedFault))
                raise
        return run_async

    @functools.wraps(fn)
    def run(ls: HybridLanguageServer, *args: Any) -> Any:
        try:
            ls.faults.check(method)
            return fn(ls, *args)
        except Exception as e:
            ls.guard_failure(method)
            log.warning("%s failed: %r", method, e, exc_info=not isinstance(e, InjectedFault))
            raise
    return run


SERVER = HybridLanguageServer()


def feature(method: str, options: Any = None) -> Callable[[Callable], Callable]:
    """`SERVER.feature`, with the handler behind `guarded`."""
    def register(fn: Callable) -> Callable:
        return SERVER.feature(method, options)(guarded(method, fn))
    return register


def command(name: str) -> Callable[[Callable], Callable]:
    """`SERVER.command`, with the handler behind `guarded`."""
    def register(fn: Callable) -> Callable:
        return SERVER.command(name)(guarded(name, fn))
    return register


@feature(types.INITIALIZE)
def initialize(ls: HybridLanguageServer, params: types.InitializeParams) -> None:
    root = params.root_uri or (params.workspace_folders[0].uri if params.workspace_folders
                               else None)
    if root:
        ls.root = Path(to_fs_path(root) or root)
        ls.rules = IgnoreRules(ls.root)
    ls.apply_settings(params.initialization_options, "initializationOptions")


@feature(types.INITIALIZED)
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


@feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def did_change_configuration(ls: HybridLanguageServer,
                                   params: types.DidChangeConfigurationParams) -> None:
    settings = params.settings
    if isinstance(settings, dict) and settings:
        ls.apply_settings(settings, "didChangeConfiguration")
    else:
        await pull_configuration(ls)


@feature(types.TEXT_DOCUMENT_DID_OPEN)
async def did_open(ls: HybridLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
    ls.active_uri = params.text_document.uri
    ls.schedule_warm(params.text_document.uri, force=True)


@feature(types.TEXT_DOCUMENT_DID_CHANGE)
async def did_change(ls: HybridLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    last = params.content_changes[-1] if params.content_changes else None
    if isinstance(last, types.TextDocumentContentChangePartial):
        text = ls.rust_text(uri)
        if text is not None:  # the cursor is at the end of the newest edit
            ls.note_cursor(uri, offset_at(text, last.range.start, ls.encoding) + len(last.text))
            return
    ls.schedule_warm(uri)


@feature(types.TEXT_DOCUMENT_DID_CLOSE)
async def did_close(ls: HybridLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.cache.clear(params.text_document.uri)


async def _complete_logged(ls: HybridLanguageServer, params, what: str):
    """(failed, result of `ls.complete`): a failure is counted and logged, never raised."""
    try:
        return False, await ls.complete(params.text_document.uri, params.position)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception:
        ls.failures += 1
        log.exception("%s failed", what)
        return True, None


@feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: HybridLanguageServer, params: types.InlineCompletionParams
                            ) -> types.InlineCompletionList | None:
    if not ls.settings.features.inline_completion:
        return None
    failed, got = await _complete_logged(ls, params, "inline completion")
    if failed:
        return None
    if got is None:
        return types.InlineCompletionList(items=[])
    completion, offset, text, _ = got
    return types.InlineCompletionList(items=[lsp_inline_item(text, offset, completion,
                                                             ls.encoding)])


@feature(types.TEXT_DOCUMENT_COMPLETION,
                types.CompletionOptions(trigger_characters=[".", ":", "("]))
async def completion(ls: HybridLanguageServer, params: types.CompletionParams
                     ) -> types.CompletionList | None:
    if not ls.settings.features.completion:
        return None
    failed, got = await _complete_logged(ls, params, "completion")
    if failed:
        return None
    if got is None:
        return types.CompletionList(is_incomplete=True, items=[])
    text_, offset, text, detail = got
    item = lsp_completion_item(text, offset, text_, detail=detail, encoding=ls.encoding)
    return types.CompletionList(is_incomplete=True, items=[item])


@command(CMD_STATUS)
async def status(ls: HybridLanguageServer, *args: Any) -> dict[str, Any]:
    out = ls.status()
    if ls.index is not None:
        out["indexFiles"] = (await asyncio.to_thread(ls.index.totals))[0]
    if ls.engine is not None and ls.engine.state == READY:
        with contextlib.suppress(EngineUnavailable):
            out["engineCounters"] = await ls.engine.counters()
    return out


@command(CMD_REINDEX)
async def reindex(ls: HybridLanguageServer, *args: Any) -> dict[str, Any]:
    ls._warmed = ""
    if ls.index is not None:
        ls.index_stats = await asyncio.to_thread(ls.index.reconcile)
        ls.index_updated()
        return {"indexFiles": (await asyncio.to_thread(ls.index.totals))[0]}
    return {"indexFiles": ls.status()["indexFiles"]}


@feature(types.TEXT_DOCUMENT_DID_SAVE)
async def did_save(ls: HybridLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.hint_paths([to_fs_path(params.text_document.uri) or ""])


@feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
async def did_change_watched_files(ls: HybridLanguageServer,
                                   params: types.DidChangeWatchedFilesParams) -> None:
    ls.hint_paths([to_fs_path(c.uri) or "" for c in params.changes])


@command(CMD_TEST_CRASH)
async def crash_engine(ls: HybridLanguageServer, *args: Any) -> bool:
    """Test hook: make the engine child abort, exit or hang (child needs test hooks on)."""
    if ls.engine is None or not test_hooks():
        return False
    with contextlib.suppress(EngineUnavailable):
        await ls.engine.crash_for_test(str(args[0]) if args else "abort")
        return True
    return False


@command(CMD_TEST_TUNE)
async def tune_engine(ls: HybridLanguageServer, *args: Any) -> bool:
    """Test hook: `[warm_hold_s]`: warm requests hold until preempted (engine child)."""
    if ls.engine is None or not test_hooks():
        return False
    with contextlib.suppress(EngineUnavailable):
        await ls.engine.tune_for_test(float(args[0]) if args else 0.0)
        return True
    return False


@command(CMD_TEST_FAULTS)
async def set_faults(ls: HybridLanguageServer, *args: Any) -> bool:
    """Test hook: `[rate, methods?, seed?]`: handlers raise at `rate` (0 turns it off)."""
    if not test_hooks():
        return False
    rate = float(args[0]) if args else 0.0
    methods = list(args[1]) if len(args) > 1 and args[1] else None
    ls.faults.configure(rate, methods, int(args[2]) if len(args) > 2 else 0)
    return True


@command(CMD_TEST_MODEL_TEXT)
async def set_model_text(ls: HybridLanguageServer, *args: Any) -> bool:
    """Test hook: `[text or null]`: what the model "says" for code actions."""
    if not test_hooks():
        return False
    ls.model_text_override = None if not args or args[0] is None else str(args[0])
    return True


CODE_ACTION_KIND = types.CodeActionKind.RefactorRewrite


@feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
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


@feature(types.CODE_ACTION_RESOLVE)
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
        log.warning("code action %s: no edit that keeps the file parsing", data.get("kind"))
        return action
    action.title = title or action.title
    action.edit = types.WorkspaceEdit(changes={data["uri"]: [
        lsp_text_edit(text, ins.at, ins.end, ins.text, ls.encoding)]})
    return action


@feature(types.SHUTDOWN)
async def shutdown(ls: HybridLanguageServer, params: None) -> None:
    await ls.stop_watching()
    if ls.engine is not None:
        await ls.engine.close()
