"""Training data built with the server's own context assembler (trained as served).

`engine` must not import `indexer`, so the tokenize stage of the training pipeline
(`engine.data.tokenize`) takes a context factory from its caller. This module is that
caller: `RepoContext` is the indexer's `ContextAssembler` over one crate held in memory,
and `python -m hybrid_lsp.train_data ARGS` runs the tokenize stage with it (same
arguments as `python -m engine.data.tokenize`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from engine.data.documents import Repo
from engine.prompt import ContextFile, FimRequest, build_prompt, special_token_strings
from engine.tokenizer import Tokenizer


class RepoContext:
    """The indexer's assembler over one crate held in memory (what the server serves)."""

    def __init__(self, tok: Tokenizer, repo: Repo) -> None:
        from indexer.context import ContextAssembler
        from indexer.items import MemoryIndex
        from indexer.parse import parse_file
        from indexer.tokens import TokenCounter

        self.tok, self.repo = tok, repo
        index = MemoryIndex()
        for path, text in repo.files:
            index.entries[path] = parse_file(path, text.encode(), crate=repo.name)
            index.texts[path] = text
        index.generation = 1
        counter = TokenCounter(lambda s: len(tok.encode(s)),
                               count_batch=lambda ts: [len(i) for i in tok.encode_batch(ts)],
                               additive=True, name=f"train-bpe{tok.vocab_size}")
        self.assembler = ContextAssembler(index, counter, special_token_strings(),
                                          repo_name=repo.name)

    def example(self, rng: random.Random, budget: int, *, spm_rate: float = 0.5,
                max_middle_lines: int = 4) -> list[int]:
        """A served prompt for a random cursor + the middle (1..max_middle_lines lines)."""
        weights = [len(t) for _, t in self.repo.files]
        path, text = rng.choices(self.repo.files, weights=weights)[0]
        lines = text.splitlines(keepends=True)
        first = rng.randrange(len(lines))
        col = rng.randint(0, len(lines[first].rstrip("\n")))
        last = min(len(lines), first + rng.randint(1, max_middle_lines))
        start = sum(len(x) for x in lines[:first]) + col
        end = sum(len(x) for x in lines[:last])
        if lines[last - 1].endswith("\n"):
            end -= 1  # the middle stops before the last line's newline
        end = max(end, start)
        live = text[:start] + text[end:]
        self.assembler.invalidate()
        ctx = self.assembler.assemble(path, live, first, col, budget=budget)
        req = FimRequest(path, ctx.prefix, ctx.suffix, ctx.repo_name,
                         tuple(ContextFile(p, t) for p, t in ctx.context_files()))
        order = "spm" if rng.random() < spm_rate else "psm"
        return [*build_prompt(self.tok, req, order=order), *self.tok.encode(text[start:end]),
                self.tok.eot_id]


def main(argv: Sequence[str] | None = None) -> int:
    """The tokenize stage with served-context examples (see the module docstring)."""
    from engine.data.tokenize import main as tokenize_main

    return tokenize_main(argv, context_factory=RepoContext)


if __name__ == "__main__":
    raise SystemExit(main())
