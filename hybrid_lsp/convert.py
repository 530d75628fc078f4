"""Positions and LSP objects: the one place that converts between coordinate systems.

Three ways to say where a character is:

- LSP `Position(line, character)`: 0-based line; `character` counts code units of the
  negotiated position encoding, UTF-16 unless the client offered `utf-8` or `utf-32`
  (LSP 3.17 `general.positionEncodings`). An emoji such as U+1F600 is 2 UTF-16 units,
  4 UTF-8 units and 1 UTF-32 unit; a CJK character is 1, 3 and 1.
- Python string offset: index into the `str` (one per code point). The server keeps
  documents as `str` and does all text work in these offsets.
- Byte offset: index into the UTF-8 bytes (what tree-sitter reports).

Lines end at `\\n`, `\\r\\n` or `\\r` (the LSP definition). A `character` past the end of
its line means the end of the line; a line past the end of the text means the end of the
text; a `character` that falls inside a surrogate pair (or inside a UTF-8 sequence)
rounds down to the start of that character. Nothing here raises on out-of-range input.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import lru_cache

from lsprotocol import types

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"
_LINE_END = re.compile(r"\r\n|\r|\n")


@lru_cache(maxsize=8)
def line_starts(text: str) -> tuple[int, ...]:
    """String offsets where each line starts (the first is 0)."""
    return (0, *(m.end() for m in _LINE_END.finditer(text)))


def _units(ch: str, encoding: str) -> int:
    o = ord(ch)
    if encoding == UTF16:
        return 2 if o > 0xFFFF else 1
    if encoding == UTF8:
        return 1 if o < 0x80 else 2 if o < 0x800 else 3 if o < 0x10000 else 4
    return 1


def _line_bounds(text: str, line: int) -> tuple[int, int]:
    """(start, end) string offsets of `line` without its line ending."""
    starts = line_starts(text)
    start = starts[line]
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    while end > start and text[end - 1] in "\r\n":
        end -= 1
    return start, end


def offset_at(text: str, position: types.Position, encoding: str = UTF16) -> int:
    """String offset of an LSP position (clamped into the text)."""
    starts = line_starts(text)
    if position.line >= len(starts):
        return len(text)
    start, end = _line_bounds(text, max(position.line, 0))
    if encoding == UTF32:
        return min(start + max(position.character, 0), end)
    left = max(position.character, 0)
    i = start
    while i < end:
        n = _units(text[i], encoding)
        if n > left:
            break
        left -= n
        i += 1
    return i


def position_at(text: str, offset: int, encoding: str = UTF16) -> types.Position:
    """LSP position of a string offset (clamped into the text)."""
    offset = min(max(offset, 0), len(text))
    starts = line_starts(text)
    line = bisect_right(starts, offset) - 1
    start, end = _line_bounds(text, line)
    piece = text[start:min(offset, end)]
    if encoding == UTF32:
        return types.Position(line=line, character=len(piece))
    return types.Position(line=line, character=sum(_units(c, encoding) for c in piece))


def byte_offset(text: str, offset: int) -> int:
    """UTF-8 byte offset of a string offset."""
    return len(text[:offset].encode("utf-8"))


def str_offset(data: bytes, byte: int) -> int:
    """String offset of a UTF-8 byte offset (inside a character: that character's start)."""
    return len(data[:byte].decode("utf-8", errors="ignore"))


def lsp_range(text: str, start: int, end: int, encoding: str = UTF16) -> types.Range:
    """LSP range of the string slice `text[start:end]`."""
    return types.Range(start=position_at(text, start, encoding),
                       end=position_at(text, end, encoding))


def lsp_text_edit(text: str, start: int, end: int, new_text: str,
                  encoding: str = UTF16) -> types.TextEdit:
    """Replace `text[start:end]` with `new_text`."""
    return types.TextEdit(range=lsp_range(text, start, end, encoding), new_text=new_text)


def word_start(text: str, offset: int) -> int:
    """Start of the identifier that ends at `offset` (the range a completion item replaces)."""
    i = offset
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
        i -= 1
    return i


def lsp_completion_item(text: str, offset: int, completion: str, *, detail: str,
                        encoding: str = UTF16) -> types.CompletionItem:
    """A completion item whose edit replaces the word before the cursor with word + completion.

    The label is the first line of the inserted text; multi-line text goes into the edit
    as plain text (no snippet syntax, so `$` in Rust macros stays literal).
    """
    start = word_start(text, offset)
    new_text = text[start:offset] + completion
    first = new_text.strip().splitlines()[0] if new_text.strip() else new_text
    label = first if len(first) <= 60 else first[:57] + "..."
    return types.CompletionItem(
        label=label,
        kind=types.CompletionItemKind.Text,
        detail=detail,
        filter_text=text[start:offset] + completion.lstrip(),
        sort_text="0",
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=lsp_text_edit(text, start, offset, new_text, encoding),
        documentation=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                          value=f"```rust\n{new_text}\n```"),
    )


def lsp_inline_item(text: str, offset: int, completion: str,
                    encoding: str = UTF16) -> types.InlineCompletionItem:
    """Ghost text inserted at the cursor (an empty range at `offset`)."""
    return types.InlineCompletionItem(insert_text=completion,
                                      range=lsp_range(text, offset, offset, encoding))
