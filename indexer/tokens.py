"""Exact token counts of long texts, as sums of the cached counts of their pieces.

A byte-level BPE tokenizer with the GPT-2 pre-tokenizer (regex `'s|'t|'re|'ve|'m|'ll|'d|
?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`, then BPE inside each pre-token)
never lets a pre-token span the point just before an ASCII whitespace character (space, tab,
CR, LF) that follows a non-whitespace character: every alternative that matches a
non-whitespace character stops at whitespace, and matching restarts there without looking
back. Cut at such points, a text's token count is the sum of its pieces' counts. (Python's
`str.isspace` is a superset of the regex's `\\s`, so a character Python calls non-whitespace
is non-whitespace to the tokenizer too.) `tests/indexer/test_tokens.py` checks the rule
against the tokenizer on real Rust files, unicode and long whitespace runs.

`TokenCounter(count, additive=True)` counts in two cached levels: line pieces (cut before a
"\\n" that follows non-whitespace, so `"a\\n    b"` is `"a"`, `"\\n    b"`) and, for lines not
seen before, word pieces (every cut), so a new line usually costs dictionary look-ups only;
word pieces not seen before go to the tokenizer in one batch. With `additive=False` (a
tokenizer without that property, or an estimate) whole texts are counted and cached.
Callers only ever see exact counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

#: Cut before ASCII whitespace that follows a non-whitespace character.
_WORD_CUT = re.compile(r"(?<=\S)(?=[ \t\n\r])")
#: A "\n" with no cut before it: at the start, or after whitespace (Python's `\s` for str
#: patterns is `str.isspace`).
_NO_CUT = re.compile(r"(?:^|\s)\n")
#: Cached line and word pieces (each level) before that level's cache is cleared.
PIECE_CACHE_MAX = 500_000
#: Whole texts cached by a non-additive counter before its cache is cleared.
TEXT_CACHE_MAX = 50_000


def line_pieces(text: str) -> list[str]:
    """`text` cut before every "\\n" that follows a non-whitespace character."""
    parts = text.split("\n")
    if len(parts) == 1:
        return [text] if text else []
    if _NO_CUT.search(text) is None:
        # Every "\n" follows a non-whitespace character: a cut before each one.
        return [parts[0], *["\n" + p for p in parts[1:]]]
    out: list[str] = []
    buf = parts[0]
    for p in parts[1:]:
        if buf and not buf[-1].isspace():
            out.append(buf)
            buf = "\n" + p
        else:
            buf += "\n" + p
    if buf:
        out.append(buf)
    return out


def word_pieces(text: str) -> list[str]:
    """`text` cut before every ASCII whitespace character that follows non-whitespace."""
    return [p for p in _WORD_CUT.split(text) if p]


def batch_of(count_tokens: Callable[[str], int]) -> Callable[[Sequence[str]], list[int]]:
    """A batch counter that calls `count_tokens` once per text."""
    return lambda texts: [count_tokens(t) for t in texts]


class TokenCounter:
    """Cached exact token counts; `additive=True` for GPT-2-style byte-level BPE only.

    `count_batch` (optional) counts many texts in one call (e.g. `encode_batch`); `name`
    identifies the tokenizer for persistent caches ("" when counts must not be persisted).
    """

    def __init__(self, count_tokens: Callable[[str], int], *,
                 count_batch: Callable[[Sequence[str]], list[int]] | None = None,
                 additive: bool = False, name: str = "",
                 max_entries: int = PIECE_CACHE_MAX) -> None:
        self.count_tokens = count_tokens
        self.count_batch = count_batch or batch_of(count_tokens)
        self.additive = additive
        self.name = name
        self.max_entries = max_entries
        self._lines: dict[str, int] = {}
        self._words: dict[str, int] = {}
        self._texts: dict[str, int] = {}
        self.tokenized = 0      # pieces (or texts) sent to the tokenizer

    def __call__(self, text: str) -> int:
        """Exact tokens of `text`."""
        if not text:
            return 0
        if not self.additive:
            n = self._texts.get(text)
            if n is None:
                if len(self._texts) >= TEXT_CACHE_MAX:
                    self._texts.clear()
                n = self._texts[text] = self.count_tokens(text)
                self.tokenized += 1
            return n
        get = self._lines.get
        total = 0
        missing: list[str] = []
        for p in line_pieces(text):
            n = get(p)
            if n is None:
                missing.append(p)
            else:
                total += n
        if missing:
            total += sum(self._count_lines(missing))
        return total

    def cached(self, text: str) -> int | None:
        """Tokens of `text` if every piece is cached (no tokenizer call), else None."""
        if not text:
            return 0
        if not self.additive:
            return self._texts.get(text)
        counts = list(map(self._lines.get, line_pieces(text)))
        return None if None in counts else sum(counts)  # type: ignore[arg-type]

    def count_many(self, texts: Iterable[str]) -> list[int]:
        """Exact tokens of each text, with one tokenizer batch for everything not cached."""
        texts = list(texts)
        if not self.additive:
            miss = sorted({t for t in texts if t and t not in self._texts})
            if miss:
                if len(self._texts) + len(miss) >= TEXT_CACHE_MAX:
                    self._texts.clear()
                self._texts.update(zip(miss, self.count_batch(miss), strict=True))
                self.tokenized += len(miss)
            return [self(t) for t in texts]
        # Counts are summed from a local map, not re-read from the cache afterwards: a batch
        # larger than the cache would otherwise clear it and recount every text one by one.
        pieces = [line_pieces(t) for t in texts]
        get = self._lines.get
        known: dict[str, int] = {}
        miss: set[str] = set()
        for ps in pieces:
            for p in ps:
                if p not in known:
                    n = get(p)
                    if n is None:
                        miss.add(p)
                    else:
                        known[p] = n
        if miss:
            todo = sorted(miss)
            known.update(zip(todo, self._count_lines(todo), strict=True))
        return [sum(map(known.__getitem__, ps)) for ps in pieces]

    def _count_lines(self, lines: Sequence[str]) -> list[int]:
        """Counts of line pieces not cached yet (cached afterwards), via word pieces."""
        words = [word_pieces(p) for p in lines]
        if len(self._words) > self.max_entries:
            self._words.clear()
        wget = self._words.get
        miss = sorted({w for ws in words for w in ws if wget(w) is None})
        if miss:
            self._words.update(zip(miss, self.count_batch(miss), strict=True))
            self.tokenized += len(miss)
        if len(self._lines) + len(lines) > self.max_entries:
            self._lines.clear()
        out = []
        for p, ws in zip(lines, words, strict=True):
            n = self._lines[p] = sum(map(self._words.__getitem__, ws))
            out.append(n)
        return out
