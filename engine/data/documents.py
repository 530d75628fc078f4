"""Repository-level training documents in the prompt format the server uses.

Two kinds, both built from one crate version (a "repository") at a time:

- Whole-crate documents (`crate_document`): `<|repo_name|>crate\\n`, then the crate's files
  as `<|file_sep|>path\\ntext\\n` in dependency order (`dependency_order`: a file comes after
  the modules it uses or declares). Each file is turned into a FIM example with probability
  `fim_rate` (suffix-prefix-middle with probability `spm_rate`, else prefix-suffix-middle):
  it ends the document with `<|file_sep|>path\\n` + FIM tail + middle + `<|endoftext|>`, and
  the crate's remaining files start a new document with the same header. A document with
  no FIM file ends with `<|endoftext|>` too.
- Served-context examples (`context_example`): the indexer's `ContextAssembler` on the
  crate (in memory, as `hybrid-lsp context` does) assembles the repository part for a
  cursor in one of its files (definitions, skeletons, the repository map) within a
  random budget; the current file follows in FIM with a middle of one to a few lines.
  This is exactly the served prompt, followed by the middle and `<|endoftext|>`.

Evaluation documents (`eval_document`) are whole crates without FIM.
Everything here is deterministic given the `random.Random` passed in; nothing imports torch.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine.prompt import ContextFile, FimRequest, build_prompt, special_token_strings
from engine.tokenizer import Tokenizer


@dataclass(frozen=True)
class Repo:
    """One crate version: its name and its files (path in the crate, text)."""

    name: str
    version: str
    files: tuple[tuple[str, str], ...]

    @property
    def nbytes(self) -> int:
        return sum(len(t.encode()) for _, t in self.files)


_USE_RE = re.compile(r"\b(crate|super|self)((?:::\w+)+)")
_MOD_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", re.M)


def _module(path: str) -> str:
    from indexer.parse import module_for_path

    return module_for_path(path)


def _resolve(base: str, kind: str, rest: str) -> str:
    segs = [s for s in rest.split("::") if s]
    parts = base.split("::")
    if kind == "crate":
        parts = ["crate"]
    elif kind == "super":
        parts = parts[:-1] or ["crate"]
    return "::".join(parts + segs)


def dependency_order(files: Sequence[tuple[str, str]]) -> list[int]:
    """Indices of `files` so that a file follows the files whose modules it uses.

    Edges come from `crate::`/`super::`/`self::` paths (resolved to the longest module
    prefix that is a file of the crate) and `mod x;` declarations; Kahn's algorithm with
    ties by path, and a cycle is broken at its file with the fewest unmet dependencies.
    """
    mods = [_module(p) for p, _ in files]
    by_mod: dict[str, list[int]] = {}
    for i, m in enumerate(mods):
        by_mod.setdefault(m, []).append(i)
    deps: list[set[int]] = [set() for _ in files]
    for i, (_path, text) in enumerate(files):
        base = mods[i]
        targets = [_resolve(base, k, r) for k, r in _USE_RE.findall(text)]
        targets += [f"{base}::{name}" for name in _MOD_RE.findall(text)]
        for t in targets:
            parts = t.split("::")
            while len(parts) > 1 and "::".join(parts) not in by_mod:
                parts.pop()
            key = "::".join(parts)
            if key != base and key in by_mod and key != "crate":
                deps[i].update(j for j in by_mod[key] if j != i)
    users: list[set[int]] = [set() for _ in files]
    for i, d in enumerate(deps):
        for j in d:
            users[j].add(i)
    remaining = {i: len(d) for i, d in enumerate(deps)}
    order: list[int] = []
    while remaining:
        ready = [i for i, n in remaining.items() if n == 0]
        pick = min(ready or remaining, key=lambda i: (remaining[i], files[i][0]))
        order.append(pick)
        del remaining[pick]
        for u in users[pick]:
            if u in remaining:
                remaining[u] -= 1
    return order


def ordered_repo(name: str, version: str, files: Sequence[tuple[str, str]]) -> Repo:
    """A Repo with its files in dependency order."""
    ordered = sorted(files)
    return Repo(name, version, tuple(ordered[i] for i in dependency_order(ordered)))


def _fim_tail(tok: Tokenizer, text: str, rng: random.Random, spm_rate: float) -> list[int]:
    """FIM tail of a file (after its `<|file_sep|>path\\n`) + middle + eot."""
    a, b = sorted((rng.randint(0, len(text)), rng.randint(0, len(text))))
    order = "spm" if rng.random() < spm_rate else "psm"
    pre = [tok.fim_prefix_id, *tok.encode(text[:a])]
    suf = [tok.fim_suffix_id, *tok.encode(text[b:])]
    head = [*suf, *pre] if order == "spm" else [*pre, *suf]
    return [*head, tok.fim_middle_id, *tok.encode(text[a:b]), tok.eot_id]


def crate_document(tok: Tokenizer, repo: Repo, rng: random.Random, *, fim_rate: float = 0.5,
                   spm_rate: float = 0.5) -> list[int]:
    """The whole crate as documents (see the module docstring); token ids."""
    header = [tok.repo_name_id, *tok.encode(f"{repo.name}\n")]
    out = list(header)
    open_doc = True
    for path, text in repo.files:
        if not open_doc:
            out += header
            open_doc = True
        out += [tok.file_sep_id, *tok.encode(f"{path}\n")]
        if rng.random() < fim_rate:
            out += _fim_tail(tok, text, rng, spm_rate)
            open_doc = False
        else:
            out += tok.encode(f"{text}\n")
    if open_doc:
        out.append(tok.eot_id)
    return out


def eval_document(tok: Tokenizer, repo: Repo) -> list[int]:
    """A whole crate, no FIM: the document that held-out bits/byte are measured on."""
    out = [tok.repo_name_id, *tok.encode(f"{repo.name}\n")]
    for path, text in repo.files:
        out += [tok.file_sep_id, *tok.encode(f"{path}\n{text}\n")]
    out.append(tok.eot_id)
    return out


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
