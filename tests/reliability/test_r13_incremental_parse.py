"""R13: incremental-parse equivalence on the repository's real Rust fixtures."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from tree_sitter import Parser, Point, Tree

from indexer import parse as parse_mod
from indexer.parse import IncrementalFile, parse_file

pytestmark = [pytest.mark.timeout(120)]

TESTS = Path(__file__).parents[1]
CORPUS = sorted([*TESTS.glob("indexer/fixtures/**/*.rs"),
                 *TESTS.glob("hybrid_lsp/fixtures/**/*.rs"),
                 TESTS.parent / "indexer" / "std_stub" / "lib.rs"])
EDITS = 1000
SNIPPETS = [b"x", b" ", b"\n", b"}", b"{", b"fn f() {}\n", b"/// doc\n", b"#[inline]\n",
            b"\"", b"'", b"/*", b"*/", b"impl A { fn g(&self) {} }\n", b"(", b";", b"pub ",
            b"mod m { pub struct S; }\n", b"use a::{b, c};\n", b"r#\"", b"<T>", b"\xc3\xa9"]


def point(data: bytes, offset: int) -> Point:
    row = data.count(b"\n", 0, offset)
    return Point(row, offset - (data.rfind(b"\n", 0, offset) + 1))


def shape(tree: Tree) -> list[tuple]:
    """Every node's kind, byte span, error and missing flags, in document order."""
    out: list[tuple] = []
    cursor = tree.walk()
    while True:
        n = cursor.node
        out.append((n.type, n.start_byte, n.end_byte, n.is_error, n.is_missing))
        if cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return out


def edit(rng: random.Random, data: bytes) -> tuple[int, int, bytes]:
    """A random (start, old_end, new_text): insert, delete or replace."""
    p = rng.randrange(len(data) + 1)
    r = rng.random()
    if r < 0.5:
        return p, p, rng.choice(SNIPPETS)
    if r < 0.8:
        return p, min(len(data), p + rng.randrange(1, 40)), b""
    q = min(len(data), p + rng.randrange(0, 20))
    return p, q, rng.choice(SNIPPETS)


def test_r13_incremental_parse_equivalence() -> None:
    """1,000 random edits (scripts of 1-5, each script then undone) over every Rust file of
    the fixtures and the std stub: after each edit the incremental tree (old tree edited,
    re-parsed) has the same nodes and spans as a fresh parse, and `IncrementalFile`'s
    FileIndex equals `parse_file`'s."""
    rng = random.Random(13)
    parser = Parser(parse_mod.language())
    done = undos = tree_diffs = index_diffs = 0
    t0 = time.monotonic()
    while done < EDITS:
        path = rng.choice(CORPUS)
        original = path.read_bytes()
        rel = path.name
        inc = IncrementalFile(rel)
        inc.update(original)
        data, tree = original, parser.parse(original)
        undo: list[tuple[int, int, bytes]] = []
        script = [None] * rng.randint(1, 5)
        for step in script + ["undo"] * len(script):
            if step is None:
                start, old_end, new = edit(rng, data)
                undo.append((start, start + len(new), data[start:old_end]))
                done += 1
            else:
                start, old_end, new = undo.pop()
                undos += 1
            after = data[:start] + new + data[old_end:]
            tree.edit(start_byte=start, old_end_byte=old_end, new_end_byte=start + len(new),
                      start_point=point(data, start), old_end_point=point(data, old_end),
                      new_end_point=point(after, start + len(new)))
            data = after
            tree = parser.parse(data, tree)
            if shape(tree) != shape(parser.parse(data)):
                tree_diffs += 1
            if inc.update(data) != parse_file(rel, data):
                index_diffs += 1
        assert data == original
    elapsed = time.monotonic() - t0
    print(f"\nR13: {done} edits (+{undos} undone) over {len(CORPUS)} files in {elapsed:.1f} s: "
          f"{tree_diffs} tree differences, {index_diffs} FileIndex differences")
    assert tree_diffs == 0 and index_diffs == 0
