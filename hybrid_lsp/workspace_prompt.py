"""Workspace context for one-shot completions: index the file's workspace, assemble, prompt.

`hybrid-lsp complete` uses it to give the model what the server gives it: the cached
index of the nearest Cargo workspace or package, the context assembled around the cursor
within a token budget, and the engine's prompt format. The server has its own long-lived
assembler (`hybrid_lsp/completion.py`); this is the same pipeline for a single request.
"""

from __future__ import annotations

import logging
from pathlib import Path

from engine.prompt import ContextFile, FimRequest, special_token_strings
from engine.tokenizer import Tokenizer
from hybrid_lsp.context_cmd import find_root, load_index, tokenizer_counter
from hybrid_lsp.settings import CompletionSettings
from indexer.context import ContextAssembler

log = logging.getLogger(__name__)

#: Default context budgets in tokens. On the CPU, the settings' default (2048): the shipped
#: model evaluates about 1,500-2,000 prompt tokens/s on 2 cores, so a cold `complete` stays
#: under 2 s (docs/MODEL.md); on a GPU 64K tokens fit the budget.
CPU_BUDGET = CompletionSettings().context_budget_tokens
GPU_BUDGET = 65536


def workspace_request_builder(path: Path, *, budget: int, cache_dir: str | None = None):
    """A `make_request(tokenizer, text, offset)` for `engine.complete.complete_file`."""

    def make_request(tok: Tokenizer, text: str, offset: int) -> FimRequest:
        root = find_root(path)
        index = load_index(root, cache_dir)
        try:
            rel = path.resolve().relative_to(root).as_posix()
            line = text.count("\n", 0, offset)
            col = offset - (text.rfind("\n", 0, offset) + 1)
            asm = ContextAssembler(index, tokenizer_counter(tok), special_token_strings(),
                                   repo_name=root.name)
            ctx = asm.assemble(rel, text, line, col, budget=budget)
        finally:
            close = getattr(index, "close", None)
            if close is not None:
                close()
        log.info("context: %d chunks, %d of %d tokens", len(ctx.chunks), ctx.total_tokens,
                 budget)
        files = tuple(ContextFile(p, t) for p, t in ctx.context_files())
        return FimRequest(path=ctx.path, prefix=ctx.prefix, suffix=ctx.suffix,
                          repo_name=ctx.repo_name, context=files)

    return make_request
