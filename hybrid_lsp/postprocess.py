"""Trim a raw model completion to what the editor should show at the cursor.

Steps, in order (`clean_completion`):

1. Syntactic unit. Mid-line (code follows the cursor on its line): one line. After code
   on the line: the rest of the statement (lines while a bracket opened in the completion
   is still open). On a blank line: whole lines of the enclosing block, stopping before a
   line that closes the block (dedents below the cursor's indentation or closes a bracket
   opened before the cursor).
2. Brackets. The scan skips strings, chars and comments; the text never closes a bracket
   it did not open, and is cut back to the last line end where every bracket it opened is
   closed. tree-sitter then checks the candidate cuts, longest first: the first one that
   adds no parse errors to the file wins.
3. No repetition: text that already follows the cursor (the rest of the line, or the
   next lines) is cut off the end of the completion.
4. Trailing whitespace is trimmed from every line; an empty result becomes None.

Works on Python strings (code points); the caller converts positions.
"""

from __future__ import annotations

from functools import cache

import tree_sitter_rust
from tree_sitter import Language, Node, Parser

OPEN, CLOSE = "([{", ")]}"
PAIRS = dict(zip(CLOSE, OPEN, strict=True))
#: Files larger than this skip the tree-sitter check (a parse per candidate cut).
TS_CHECK_MAX_CHARS = 400_000
MAX_CANDIDATES = 4


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_rust.language()))


def error_count(source: str) -> int:
    """ERROR and MISSING nodes in the parse of `source` (iterative walk)."""
    root = _parser().parse(source.encode("utf-8")).root_node
    if not root.has_error:
        return 0
    count, stack = 0, [root]
    while stack:
        node: Node = stack.pop()
        if node.is_error or node.is_missing:
            count += 1
        if node.has_error:
            stack.extend(node.children)
    return count


def bracket_events(code: str) -> list[tuple[int, str]]:
    """(index, bracket) for every bracket outside strings, chars and comments."""
    out: list[tuple[int, str]] = []
    i, n = 0, len(code)
    while i < n:
        c = code[i]
        if c == "/" and code.startswith("//", i):
            j = code.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == "/" and code.startswith("/*", i):
            j = code.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if c == '"':
            i += 1
            while i < n and code[i] != '"':
                i += 2 if code[i] == "\\" else 1
            i += 1
            continue
        if c == "'" and i + 2 < n and (code[i + 2] == "'" or code[i + 1] == "\\"):
            j = code.find("'", i + 2)  # a char literal; a lifetime has no closing quote
            i = n if j < 0 else j + 1
            continue
        if c in OPEN or c in CLOSE:
            out.append((i, c))
        i += 1
    return out


def _balanced_cuts(completion: str) -> tuple[int, list[int]]:
    """(limit, cuts): the text may not go past `limit` (it would close an outer bracket);
    `cuts` are the line ends (and the end) before `limit` where its own brackets are closed."""
    stack: list[str] = []
    limit = len(completion)
    depth_at: dict[int, int] = {}
    for i, c in bracket_events(completion):
        if c in OPEN:
            stack.append(c)
        elif stack and stack[-1] == PAIRS[c]:
            stack.pop()
        else:
            limit = i
            break
        depth_at[i] = len(stack)
    cuts = []
    depth = 0
    events = iter(sorted(depth_at.items()))
    nxt = next(events, None)
    for pos in [*(k for k, ch in enumerate(completion[:limit]) if ch == "\n"), limit]:
        while nxt is not None and nxt[0] < pos:
            depth = nxt[1]
            nxt = next(events, None)
        if depth == 0:
            cuts.append(pos)
    return limit, cuts


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _unit_end(completion: str, line_before: str, line_after: str) -> int:
    """Where the syntactic unit at the cursor ends, as an index into `completion`."""
    if line_after.strip():
        nl = completion.find("\n")
        return len(completion) if nl < 0 else nl
    lines = completion.split("\n")
    if line_before.strip():
        # Rest of the statement: stop at the first line end with no open bracket.
        _, cuts = _balanced_cuts(completion)
        cuts = [c for c in cuts if completion[:c].strip()]
        return cuts[0] if cuts else len(completion)
    base = len(line_before)
    end = 0
    for k, line in enumerate(lines):
        if k > 0 and line.strip() and _indent(line) < base:
            return max(end - 1, 0)
        end += len(line) + 1
    return len(completion)


def _drop_repetition(completion: str, suffix: str) -> str:
    """Cut the end of `completion` that repeats what follows the cursor."""
    rest_of_line = suffix.split("\n", 1)[0]
    if rest_of_line.strip():
        stripped = rest_of_line.strip()
        first, sep, tail = completion.partition("\n")
        idx = first.rfind(stripped)
        if idx >= 0 and first[idx:].strip() == stripped:
            return first[:idx]
        return completion if not sep else first
    comp_lines = completion.split("\n")
    next_lines = [ln.strip() for ln in suffix.split("\n")[1:] if ln.strip()][:len(comp_lines)]
    for k in range(min(len(comp_lines) - 1, len(next_lines)), 0, -1):
        if [ln.strip() for ln in comp_lines[-k:]] == next_lines[:k]:
            kept = "\n".join(comp_lines[:-k])
            if _balanced_cuts(kept)[1][-1:] == [len(kept)]:  # never unbalance the text
                return kept
    return completion


def cut_at_markers(text: str, markers: tuple[str, ...]) -> str:
    """`text` up to the first of `markers` (special-token text the model may emit)."""
    cut = min((i for i in (text.find(m) for m in markers) if i >= 0), default=len(text))
    return text[:cut]


def _tidy(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip()


def clean_completion(completion: str, text: str, offset: int, *,
                     check_parse: bool = True) -> str | None:
    """The part of `completion` (inserted at `text[offset]`) worth showing, or None."""
    if not completion.strip():
        return None
    prefix, suffix = text[:offset], text[offset:]
    line_before = prefix.rsplit("\n", 1)[-1]
    line_after = suffix.split("\n", 1)[0]
    completion = completion[:_unit_end(completion, line_before, line_after)]
    _, cuts = _balanced_cuts(completion)
    completion = completion[:cuts[-1]] if cuts else ""
    completion = _drop_repetition(completion, suffix)
    candidates = []
    for cut in sorted(_balanced_cuts(completion)[1], reverse=True):
        cand = _tidy(completion[:cut])
        if cand.strip() and cand not in candidates:
            candidates.append(cand)
    if not candidates:
        return None
    if not check_parse or len(text) > TS_CHECK_MAX_CHARS:
        return candidates[0]
    before = error_count(text)
    for cand in candidates[:MAX_CANDIDATES]:
        if error_count(prefix + cand + suffix) <= before:
            return cand
    return None if before == 0 else candidates[-1]
