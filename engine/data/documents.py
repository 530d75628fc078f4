"""Repository-level training documents in the prompt format the server uses.

Two kinds, both built from one crate version (a "repository") at a time:

- Whole-crate documents (`crate_document`): `<|repo_name|>crate\\n`, then the crate's files
  as `<|file_sep|>path\\ntext\\n` in dependency order (`dependency_order`: a file comes after
  the modules it uses or declares). Each file is turned into a FIM example with probability
  `fim_rate` (suffix-prefix-middle with probability `spm_rate`, else prefix-suffix-middle):
  it ends the document with `<|file_sep|>path\\n` + FIM tail + middle + `<|endoftext|>`, and
  the crate's remaining files start a new document with the same header. A document with
  no FIM file ends with `<|endoftext|>` too.
- Served-context examples (`hybrid_lsp.train_data.RepoContext`, passed in by the caller
  because `engine` does not import `indexer`): the indexer's `ContextAssembler` on the
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
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

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
    """Module path implied by a file's place in its crate, for ordering only.

    `src/lib.rs`, `src/main.rs` -> `crate`; `src/a/b.rs`, `src/a/b/mod.rs` -> `crate::a::b`.
    The indexer's `module_for_path` knows more (bins, tests, examples); `engine` may not
    import it, and a rougher rule only changes the order of a few files.
    """
    parts = path.split("/")
    if "src" in parts:
        parts = parts[len(parts) - parts[::-1].index("src"):]
    if not parts:
        return "crate"
    last = parts[-1].removesuffix(".rs")
    parts = parts[:-1] if last in ("lib", "main", "mod") else [*parts[:-1], last]
    return "::".join(["crate", *parts])


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


class ExampleTimeout(Exception):
    """A served-context example took longer than its time limit."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ExampleTimeout in the block after `seconds` (SIGALRM; main thread only,
    otherwise and for seconds <= 0 no limit)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise ExampleTimeout(f"over {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


