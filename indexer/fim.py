"""The current file split at the cursor into a FIM prefix and suffix, each within its budget.

The prefix keeps the cursor line's head and as many whole lines above it as fit; the suffix
keeps the cursor line's tail and whole lines below. Cuts fall on line boundaries, moved to a
nearby item boundary when one is close (a cut never splits a token: lines are whole).

Token counts come from `LineCounter`, which caches the count of each distinct line, so a
keystroke costs one count of the edited line. A line-by-line sum is an estimate of the
count of the joined text: byte-level BPE cannot merge across the cut between two lines, so
the sum is almost always >= the joined count; `FIM_SLACK` covers the rare excess.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

#: A truncated side's cut moves to an item boundary at most this many lines away.
SNAP_MAX_LINES = 12
#: Fraction of the FIM budget the caller holds back for the line-sum estimate's rare excess.
FIM_SLACK = 0.02
#: Cached line counts before the cache is cleared (about 50 MB of short lines at most).
LINE_CACHE_MAX = 200_000


class LineCounter:
    """`count_tokens` with a cache per distinct text (lines, chunk texts); `count_many`
    (optional) counts the lines `lines()` misses in one call."""

    def __init__(self, count_tokens: Callable[[str], int], max_entries: int = LINE_CACHE_MAX,
                 count_many: Callable[[Sequence[str]], list[int]] | None = None):
        self.count_tokens = count_tokens
        self.count_many = count_many
        self.max_entries = max_entries
        self._cache: dict[str, int] = {}
        self.misses = 0

    def __call__(self, text: str) -> int:
        n = self._cache.get(text)
        if n is None:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            n = self._cache[text] = self.count_tokens(text) if text else 0
            self.misses += 1
        return n

    def seed(self, lines: Sequence[str], counts: Sequence[int]) -> None:
        """Take exact counts of `lines` counted elsewhere (e.g. ahead of a first visit)."""
        if len(self._cache) + len(lines) >= self.max_entries:
            self._cache.clear()
        self._cache.update(zip(lines, counts, strict=True))

    def lines(self, lines: Sequence[str]) -> list[int]:
        """Counts of many lines."""
        get = self._cache.get
        out = [get(s) for s in lines]
        if None not in out:
            return cast(list[int], out)
        if self.count_many is not None:
            miss = list({s for s, n in zip(lines, out, strict=True) if n is None and s})
            if len(self._cache) + len(miss) >= self.max_entries:
                self._cache.clear()
            self._cache.update(zip(miss, self.count_many(miss), strict=True))
            self.misses += len(miss)
        return [n if (n := get(s)) is not None else self(s) for s in lines]


@dataclass(frozen=True, slots=True)
class FimSplit:
    """The prefix/suffix pair, their token estimates and where they were cut (0-based lines)."""

    prefix: str
    suffix: str
    prefix_tokens: int
    suffix_tokens: int
    prefix_start_line: int      # first line (whole or partial) in the prefix
    suffix_end_line: int        # first line after the suffix (exclusive)
    truncated_prefix: bool
    truncated_suffix: bool


def split_lines(text: str) -> list[str]:
    """Lines with their line endings ("\\n" only; a "\\r" stays in its line)."""
    lines = text.split("\n")
    out = [s + "\n" for s in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def full_sizes(lines: Sequence[str], line: int, col: int, counter: LineCounter,
               counts: Sequence[int] | None = None) -> tuple[int, int]:
    """Untruncated token estimates of the prefix and suffix at (line, col); `counts`:
    `counter.lines(lines)` when the caller has it."""
    counts = counter.lines(lines) if counts is None else counts
    cur = lines[line] if line < len(lines) else ""
    return (sum(counts[:line]) + counter(cur[:col]),
            counter(cur[col:]) + sum(counts[line + 1:]))


def split_fim(
    lines: Sequence[str],
    line: int,
    col: int,
    *,
    prefix_budget: int,
    suffix_budget: int,
    counter: LineCounter,
    boundaries: Sequence[int] = (),
    counts: Sequence[int] | None = None,
) -> FimSplit:
    """Split at (line, col), 0-based, col in code points; `boundaries`: sorted clean cut lines;
    `counts`: `counter.lines(lines)` when the caller has it.

    A cut "at line k" keeps lines k.. in the prefix, or ..k-1 in the suffix.
    """
    if line >= len(lines):
        line, col = len(lines), 0
    cur = lines[line] if line < len(lines) else ""
    col = min(col, len(cur.rstrip("\n")))
    head, tail = cur[:col], cur[col:]
    counts = counter.lines(lines) if counts is None else counts
    p_budget, s_budget = prefix_budget, suffix_budget

    head, head_n = _fit_head(head, p_budget, counter)
    used, start = head_n, line
    while start > 0 and used + counts[start - 1] <= p_budget:
        start -= 1
        used += counts[start]
    if start > 0 and head == cur[:col]:
        snapped = _snap_forward(boundaries, start, line)
        used -= sum(counts[start:snapped])
        start = snapped

    tail, tail_n = _fit_tail(tail, s_budget, counter)
    used_s, end = tail_n, line + 1
    while end < len(lines) and used_s + counts[end] <= s_budget:
        used_s += counts[end]
        end += 1
    if end < len(lines) and tail == cur[col:]:
        snapped = _snap_backward(boundaries, end, line + 1)
        used_s -= sum(counts[snapped:end])
        end = snapped

    prefix = "".join(lines[start:line]) + head
    suffix = tail + "".join(lines[line + 1:end]) if tail == cur[col:] else tail
    return FimSplit(prefix, suffix, used, used_s, start, end,
                    start > 0 or head != cur[:col], end < len(lines) or tail != cur[col:])


def _snap_forward(boundaries: Sequence[int], start: int, limit: int) -> int:
    i = bisect.bisect_left(boundaries, start)
    if i < len(boundaries) and boundaries[i] <= limit and boundaries[i] - start <= SNAP_MAX_LINES:
        return boundaries[i]
    return start


def _snap_backward(boundaries: Sequence[int], end: int, limit: int) -> int:
    i = bisect.bisect_right(boundaries, end) - 1
    if i >= 0 and boundaries[i] >= limit and end - boundaries[i] <= SNAP_MAX_LINES:
        return boundaries[i]
    return end


def _fit_head(head: str, budget: int, counter: LineCounter) -> tuple[str, int]:
    """The cursor line's head, or its longest tail that fits, cut after whitespace."""
    n = counter(head)
    if n <= budget:
        return head, n
    cuts = [i + 1 for i, c in enumerate(head) if c.isspace()]
    lo, hi, best = 0, len(cuts) - 1, ("", 0)
    while lo <= hi:  # pieces shrink as mid grows: find the first that fits
        mid = (lo + hi) // 2
        piece = head[cuts[mid]:]
        m = counter.count_tokens(piece)
        if m <= budget:
            best, hi = (piece, m), mid - 1
        else:
            lo = mid + 1
    return best


def _fit_tail(tail: str, budget: int, counter: LineCounter) -> tuple[str, int]:
    """The cursor line's tail, or its longest head that fits, cut before whitespace."""
    n = counter(tail)
    if n <= budget:
        return tail, n
    cuts = [i for i, c in enumerate(tail) if c.isspace() and i > 0]
    lo, hi, best = 0, len(cuts) - 1, ("", 0)
    while lo <= hi:  # pieces grow with mid: find the last that fits
        mid = (lo + hi) // 2
        piece = tail[:cuts[mid]]
        m = counter.count_tokens(piece)
        if m <= budget:
            best, lo = (piece, m), mid + 1
        else:
            hi = mid - 1
    return best
