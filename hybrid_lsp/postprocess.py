"""Trim a raw model completion to what the editor should show at the cursor.

The cursor's syntactic unit (`cursor_unit`) decides both how the engine generates
(`generation_limits`: stop strings and a token cap, so that a single-line context stops
at the first newline) and how the result is cut (`clean_completion`):

- "line": code follows the cursor on its line, or the cursor is in a line comment or a
  string literal: the rest of this line (brackets in the comment or string do not count).
- "statement": code before the cursor, nothing after it: the rest of the statement, i.e.
  up to the first line end where every bracket the completion opened is closed. The
  engine stops at the first newline unless the line opens a block or an argument list
  (`if`, `match`, `fn`, `=>`, a trailing `{`/`(`/`[`/`,` ...).
- "block": a blank line, or the end of a line that ends a statement (`;`, `{`, `}`):
  whole lines of the enclosing block, stopping before a line that dedents below the
  cursor's indentation or closes a bracket opened before the cursor.

Steps of `clean_completion`, in order:

1. Syntactic unit, as above.
2. Degenerate loops (a weak model's failure mode): of a line repeated on the next line
   only the first copy stays; a short piece of text repeated four or more times in a row
   within a line is cut off whole.
3. Brackets. The scan skips strings, chars and comments. The completion may close the
   brackets open at the cursor that the text after the cursor leaves open (`foo(|` at
   the end of a line: `a, b)` is fine), never one that the suffix closes itself; it is cut
   back to the last point (a line end, else inside its first line) where every bracket it
   opened is closed.
4. No repetition: text that already follows the cursor (the rest of the line, or the
   next lines) is cut off the end of the completion; a completion that only repeats it
   is dropped.
5. Trailing whitespace is trimmed from every line; an empty result becomes None.
6. tree-sitter checks the candidate cuts, longest first: the first one that adds no
   parse errors to the file (counted with the text after the cursor) wins; none: None.

Works on Python strings (code points); the caller converts positions.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import cache

import tree_sitter_rust
from tree_sitter import Language, Node, Parser

OPEN, CLOSE = "([{", ")]}"
PAIRS = dict(zip(CLOSE, OPEN, strict=True))
#: Files larger than this skip the tree-sitter check (a parse per candidate cut).
TS_CHECK_MAX_CHARS = 400_000
MAX_CANDIDATES = 4
#: Characters before / after the cursor scanned for the brackets open at the cursor.
BRACKET_WINDOW = 8000
#: Token cap of a generation that stops at the first newline (a line is ~30 tokens).
LINE_MAX_TOKENS = 32
#: The engine's stop string in block mode besides the enclosing block's closing brace.
BLOCK_STOP = "\n\n\n"
#: A piece of 2 to `LOOP_UNIT_MAX` characters repeated `LOOP_COPIES` times in a row is a
#: loop (runs of one character, such as `0000` or `====`, are not).
LOOP_UNIT_MAX = 16
LOOP_COPIES = 4
_LOOP = re.compile(rf"(.{{2,{LOOP_UNIT_MAX}}}?)\1{{{LOOP_COPIES - 1},}}")
#: A line before the cursor that opens a multi-line construct: no newline stop.
_OPENS_BLOCK = re.compile(
    r"\b(?:if|else|for|while|loop|match|fn|impl|struct|enum|trait|mod|union|unsafe|async"
    r"|move|where)\b|(?:[{(\[,|]|=>)\s*$")
_STATEMENT_END = (";", "{", "}")


@cache
def _language() -> Language:
    return Language(tree_sitter_rust.language())


_LOCAL = threading.local()


def rust_parser() -> Parser:
    """This thread's tree-sitter parser for Rust (a parser is not shared between threads:
    the server parses in worker threads)."""
    parser = getattr(_LOCAL, "parser", None)
    if parser is None:
        parser = _LOCAL.parser = Parser(_language())
    return parser


def error_count(source: str) -> int:
    """ERROR and MISSING nodes in the parse of `source` (iterative walk)."""
    root = rust_parser().parse(source.encode("utf-8")).root_node
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


# -- the cursor's unit -------------------------------------------------------------------

@dataclass(frozen=True)
class CursorUnit:
    """What a completion at the cursor may span (see the module docstring)."""

    kind: str          # "line", "statement" or "block"
    indent: int        # block: the indentation its lines keep (columns of whitespace)
    single_line: bool  # the engine may stop at the first newline


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _text_context(line_before: str) -> str:
    """Where `line_before` ends: "comment" (a `//` comment), "string" (a string literal
    opened on this line) or "" (code)."""
    if "//" not in line_before and '"' not in line_before:
        return ""
    quoted = False
    i = 0
    while i < len(line_before):
        c = line_before[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif line_before.startswith("//", i):
            return "comment"
        i += 1
    return "string" if quoted else ""


def cursor_unit(text: str, offset: int) -> CursorUnit:
    """The syntactic unit that fits the cursor at `text[offset]`."""
    line_before = text[:offset].rsplit("\n", 1)[-1]
    line_after = text[offset:].split("\n", 1)[0]
    if line_after.strip() or _text_context(line_before):
        return CursorUnit("line", 0, True)
    stripped = line_before.strip()
    if not stripped:
        return CursorUnit("block", len(line_before), False)
    if stripped.endswith(_STATEMENT_END):
        inner = (1 if line_before.startswith("\t") else 4) if stripped.endswith("{") else 0
        return CursorUnit("block", _indent(line_before) + inner, False)
    return CursorUnit("statement", _indent(line_before),
                      _OPENS_BLOCK.search(stripped) is None)


def generation_limits(text: str, offset: int, max_tokens: int) -> tuple[list[str], int]:
    """(stop strings, max tokens) for a generation at `text[offset]`.

    A single-line unit stops at the first newline with at most `LINE_MAX_TOKENS` tokens; a
    block stops at a blank-line run or at a line that closes the enclosing block (a `}`
    indented less than the cursor), which `clean_completion` would cut anyway.
    """
    unit = cursor_unit(text, offset)
    if unit.single_line:
        return ["\n"], min(max_tokens, LINE_MAX_TOKENS)
    stops = [BLOCK_STOP]
    if unit.kind == "block" and unit.indent > 0:
        indent_char = "\t" if text[:offset].rsplit("\n", 1)[-1].startswith("\t") else " "
        stops += ["\n" + indent_char * k + "}" for k in range(unit.indent)]
    return stops, max_tokens


# -- brackets ----------------------------------------------------------------------------

def closable_brackets(prefix: str, suffix: str) -> str:
    """The brackets open at the cursor that the suffix does not close, innermost last;
    only the innermost run of them (a completion may close these, in this order)."""
    window = prefix[-BRACKET_WINDOW:]
    stack: list[str] = []
    for _, c in bracket_events(window):
        if c in OPEN:
            stack.append(c)
        elif stack and stack[-1] == PAIRS[c]:
            stack.pop()
    if not stack:
        return ""
    claimed = [False] * len(stack)
    own: list[str] = []
    top = len(stack) - 1
    unknown_below = True
    tail = suffix[:BRACKET_WINDOW]
    for _, c in bracket_events(tail):
        if c in OPEN:
            own.append(c)
            continue
        if own and own[-1] == PAIRS[c]:
            own.pop()
            continue
        while top >= 0 and stack[top] != PAIRS[c]:
            top -= 1          # skipped: the suffix closes an outer bracket first
        if top < 0:
            break
        claimed[top] = True
        top -= 1
    else:
        # The whole suffix was seen: brackets it never reached stay open for good.
        unknown_below = len(suffix) > len(tail)
    out: list[str] = []
    for k in range(len(stack) - 1, -1, -1):
        if claimed[k] or (k <= top and unknown_below):
            break
        out.append(stack[k])
    return "".join(reversed(out))


def _balanced_cuts(completion: str, closable: str = "",
                   lead: str = "") -> tuple[int, list[int], int]:
    """(limit, cuts, inline): the text may not go past `limit` (it would close a bracket
    it may not close); `cuts` are the line ends (and the end) before `limit` where every
    bracket it opened is closed; `inline` is the start of its first bracket left open
    at `limit` (`limit` when none is). `lead` (`"` in a string, `//` in a comment) is
    scanned before the completion, so that its brackets in text do not count."""
    stack: list[tuple[int, str]] = []
    outer = list(closable)
    limit = len(completion)
    depth_at: dict[int, int] = {}
    events = [(i - len(lead), c) for i, c in bracket_events(lead + completion)]
    for i, c in (e for e in events if e[0] >= 0):
        if c in OPEN:
            stack.append((i, c))
        elif stack and stack[-1][1] == PAIRS[c]:
            stack.pop()
        elif not stack and outer and outer[-1] == PAIRS[c]:
            outer.pop()
        else:
            limit = i
            break
        depth_at[i] = len(stack)
    inline = stack[0][0] if stack else limit
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
    return limit, cuts, inline


# -- the steps ---------------------------------------------------------------------------

def _unit_end(completion: str, unit: CursorUnit, closable: str) -> int:
    """Where the syntactic unit at the cursor ends, as an index into `completion`."""
    if unit.kind == "line":
        nl = completion.find("\n")
        return len(completion) if nl < 0 else nl
    if unit.kind == "statement":
        # Rest of the statement: stop at the first line end with no open bracket.
        _, cuts, _ = _balanced_cuts(completion, closable)
        cuts = [c for c in cuts if completion[:c].strip()]
        return cuts[0] if cuts else len(completion)
    end = 0
    for k, line in enumerate(completion.split("\n")):
        if k > 0 and line.strip() and _indent(line) < unit.indent:
            return max(end - 1, 0)
        end += len(line) + 1
    return len(completion)


def cut_loops(completion: str) -> str:
    """`completion` without what a model stuck in a loop wrote: up to the second copy of a
    line repeated on the next line, and up to the start of a short piece repeated within
    a line (`.0.0.0.0`: degenerate, dropped whole)."""
    lines = completion.split("\n")
    end = len(completion)
    pos = 0
    for k, line in enumerate(lines):
        if k > 0 and len(line.strip()) > 2 and line.strip() == lines[k - 1].strip():
            end = pos - 1
            break
        pos += len(line) + 1
    m = _LOOP.search(completion, 0, end)
    while m is not None and (not m.group(1).strip() or len(set(m.group(1))) == 1):
        m = _LOOP.search(completion, m.start() + 1, end)  # indentation, `0000`, `----`
    if m is not None:
        end = m.start()
    return completion[:end]


def _overlap(line: str, rest: str) -> int:
    """Length of the longest end of `line` that is a start of `rest` (punctuation of any
    length, other text from 4 characters on)."""
    for k in range(min(len(line), len(rest)), 0, -1):
        head = rest[:k]
        if line.endswith(head) and (k >= 4 or not re.search(r"\w", head)):
            return k
    return 0


def _drop_repetition(completion: str, suffix: str) -> str:
    """Cut the end of `completion` that repeats what follows the cursor."""
    rest_of_line = suffix.split("\n", 1)[0]
    if rest_of_line.strip():
        stripped = rest_of_line.strip()
        first = completion.split("\n", 1)[0]
        if stripped.startswith(first.strip()):
            return ""  # the text is already there
        idx = first.rfind(stripped)
        if idx >= 0 and first[idx:].strip() == stripped:
            return first[:idx]
        k = _overlap(first.rstrip(), rest_of_line.lstrip())
        return first[:len(first.rstrip()) - k] if k else first
    comp_lines = completion.split("\n")
    next_lines = [ln.strip() for ln in suffix.split("\n")[1:] if ln.strip()][:len(comp_lines)]
    for k in range(min(len(comp_lines), len(next_lines)), 0, -1):
        if [ln.strip() for ln in comp_lines[-k:]] == next_lines[:k]:
            kept = "\n".join(comp_lines[:-k])
            if not kept.strip():
                return ""
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
    unit = cursor_unit(text, offset)
    closable = closable_brackets(prefix, suffix)
    lead = {"string": '"', "comment": "//", "": ""}[
        _text_context(prefix.rsplit("\n", 1)[-1])]
    completion = completion[:_unit_end(completion, unit, closable)]
    completion = cut_loops(completion)
    _, cuts, inline = _balanced_cuts(completion, closable, lead)
    if cuts:
        completion = completion[:cuts[-1]]
    else:  # no balanced line end: the first line up to its first unclosed bracket
        completion = completion[:min(inline, (completion + "\n").index("\n"))]
    completion = _drop_repetition(completion, suffix)
    _, cuts, inline = _balanced_cuts(completion, closable, lead)
    candidates: list[str] = []
    if "\n" not in completion[:inline]:
        cuts = [*cuts, inline]  # the first line up to a bracket it leaves open
    for cut in sorted(set(cuts), reverse=True):
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
    return None
