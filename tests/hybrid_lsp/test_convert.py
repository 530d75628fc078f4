"""Positions: UTF-16 / UTF-8 / UTF-32 with emoji, CJK, CRLF and out-of-range input."""

from __future__ import annotations

import pytest
from lsprotocol.types import Position

from hybrid_lsp.convert import (
    UTF8,
    UTF16,
    UTF32,
    byte_offset,
    lsp_completion_item,
    offset_at,
    position_at,
    str_offset,
)

TEXT = "fn a() {}\r\nlet s = \"😀形\"; x\n中文 = 1;\rlast"


@pytest.mark.parametrize("encoding", [UTF8, UTF16, UTF32])
def test_round_trip_every_offset(encoding: str) -> None:
    for off in range(len(TEXT) + 1):
        if TEXT[off - 1:off] == "\r" and TEXT[off:off + 1] == "\n":
            continue  # between \r and \n is not a position
        assert offset_at(TEXT, position_at(TEXT, off, encoding), encoding) == off


def test_emoji_counts_two_utf16_units() -> None:
    x = TEXT.index("; x") + 2
    assert position_at(TEXT, x, UTF16) == Position(line=1, character=15)
    assert position_at(TEXT, x, UTF32) == Position(line=1, character=14)
    assert position_at(TEXT, x, UTF8) == Position(line=1, character=19)
    # Inside the surrogate pair rounds down to the emoji's start.
    assert offset_at(TEXT, Position(line=1, character=10), UTF16) == TEXT.index("😀")


def test_cjk_and_lone_cr_lines() -> None:
    assert offset_at(TEXT, Position(line=2, character=2), UTF16) == TEXT.index(" = 1")
    assert offset_at(TEXT, Position(line=3, character=0)) == TEXT.index("last")


def test_out_of_range_clamps() -> None:
    assert offset_at(TEXT, Position(line=0, character=999)) == TEXT.index("\r\n")
    assert offset_at(TEXT, Position(line=99, character=0)) == len(TEXT)
    assert offset_at(TEXT, Position(line=0, character=2**31 - 1)) == TEXT.index("\r\n")
    assert position_at(TEXT, 10**6) == position_at(TEXT, len(TEXT))


def test_bytes() -> None:
    off = TEXT.index("形")
    b = byte_offset(TEXT, off)
    assert TEXT.encode()[b:].decode().startswith("形")
    assert str_offset(TEXT.encode(), b) == off
    assert str_offset(TEXT.encode(), b + 1) == off  # inside the character


def test_completion_item_replaces_the_word() -> None:
    text = "let 形x = tot"
    item = lsp_completion_item(text, len(text), "al + 1", detail="d")
    assert item.text_edit.new_text == "total + 1"
    assert item.text_edit.range.start.character == len("let 形x = ")
    assert item.label == "total + 1"
