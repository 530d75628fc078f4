"""What one completion needs besides the protocol: context, prompt, cache, latency figures.

- `gather_context` picks workspace files for the prompt (open Rust documents, or the
  index once it exists) in a stable order, so the prompt prefix stays the same between
  keystrokes and the engine's KV cache is reused. Secrets (`.env*`, keys, gitignored
  files) never enter it.
- `PromptBuilder` turns a request into token ids with the model's tokenizer
  (engine/prompt.py owns the format), fitted to the context budget.
- `CompletionCache` answers a request whose typed characters match a completion already
  shown, without generating.
- `LatencyStats` keeps the last latencies for the status command.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from engine.prompt import ContextFile, FimRequest, file_header_tokens, header_tokens

#: Never shown to the model, wherever they are (reliability-notes §7).
SECRET_PATTERNS = (".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_ed25519*", "id_ecdsa*",
                   "secrets.*", "*.p12", "*.pfx", "credentials*", ".netrc", ".npmrc", ".pypirc")
#: Share of the context budget that other files may take; the rest is the current file.
CONTEXT_SHARE = 0.5
#: Characters of one context file at most (the index's summaries replace whole files later).
MAX_CONTEXT_FILE_CHARS = 8000


def is_secret(path: str) -> bool:
    """True for files whose content must never reach a prompt."""
    name = PurePosixPath(path).name
    return any(fnmatch.fnmatch(name, pat) for pat in SECRET_PATTERNS)


class IgnoreRules:
    """The workspace's `.gitignore` (root only), matched with pathspec."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._spec = None
        if root is not None and (root / ".gitignore").is_file():
            import pathspec

            lines = (root / ".gitignore").read_text(encoding="utf-8", errors="replace")
            self._spec = pathspec.GitIgnoreSpec.from_lines(lines.splitlines())

    def ignored(self, path: Path) -> bool:
        if self._spec is None or self.root is None:
            return False
        try:
            rel = path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return False
        return self._spec.match_file(rel)


def gather_context(current: str, documents: Iterable[tuple[str, str]], *,
                   rules: IgnoreRules, budget_chars: int) -> tuple[ContextFile, ...]:
    """Context files from (path, text) pairs: Rust files only, no secrets, sorted by path."""
    out: list[ContextFile] = []
    used = 0
    for path, text in sorted(documents):
        if path == current or not path.endswith(".rs") or is_secret(path):
            continue
        if rules.ignored(Path(path)):
            continue
        piece = text[:MAX_CONTEXT_FILE_CHARS]
        if used + len(piece) > budget_chars:
            break
        used += len(piece)
        out.append(ContextFile(path=_shown_path(path, rules.root), text=piece))
    return tuple(out)


def _shown_path(path: str, root: Path | None) -> str:
    if root is not None:
        try:
            return Path(path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return PurePosixPath(path).name


class PromptBuilder:
    """Token ids for a completion, fitted to a token budget."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer

    def count(self, text: str) -> int:
        return len(self.tok.encode(text))

    def build(self, req: FimRequest, budget: int) -> tuple[list[int], str]:
        """(prompt ids, healed text) for `req`: the prefix token-healed
        (`engine.prompt.heal_prefix`), the file cut around the cursor to fit `budget`."""
        from engine.complete import served_prompt

        return served_prompt(self.tok, req, budget)

    def warm_prefix(self, repo: str, context: tuple[ContextFile, ...], path: str) -> list[int]:
        """The part of every prompt for `path` that does not depend on the cursor."""
        return [*header_tokens(self.tok, repo, context), *file_header_tokens(self.tok, path)]


def prompt_digest(ids: Sequence[int]) -> str:
    return hashlib.blake2b(repr(list(ids)).encode(), digest_size=8).hexdigest()


@dataclass
class _Shown:
    uri: str
    prefix: str
    suffix: str
    text: str


class CompletionCache:
    """Completions shown recently; typing their first characters reuses the rest."""

    def __init__(self, size: int = 32) -> None:
        self._items: deque[_Shown] = deque(maxlen=size)
        self.hits = 0

    def store(self, uri: str, prefix: str, suffix: str, text: str) -> None:
        self._items.append(_Shown(uri, prefix, suffix, text))

    def lookup(self, uri: str, prefix: str, suffix: str) -> str | None:
        """The rest of a shown completion if the user typed its start, else None."""
        for s in reversed(self._items):
            if s.uri != uri or s.suffix != suffix or not prefix.startswith(s.prefix):
                continue
            typed = prefix[len(s.prefix):]
            if len(typed) < len(s.text) and s.text.startswith(typed):
                self.hits += 1
                return s.text[len(typed):]
        return None

    def clear(self, uri: str | None = None) -> None:
        if uri is None:
            self._items.clear()
        else:
            self._items = deque((s for s in self._items if s.uri != uri),
                                maxlen=self._items.maxlen)


class LatencyStats:
    """The last `size` completion latencies (ms) with p50/p95."""

    def __init__(self, size: int = 200) -> None:
        self._ms: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._ms.append(ms)

    def percentile(self, q: float) -> float | None:
        if not self._ms:
            return None
        data = sorted(self._ms)
        return round(data[min(len(data) - 1, int(q * len(data)))], 1)

    def summary(self) -> dict[str, float | int | None]:
        return {"count": len(self._ms), "p50": self.percentile(0.5),
                "p95": self.percentile(0.95)}


class Stopwatch:
    """Milliseconds since creation."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    @property
    def ms(self) -> float:
        return (time.monotonic() - self.t0) * 1e3
