"""Shared helpers for the context-assembly tests: fixture crates as in-memory indexes."""

from __future__ import annotations

from pathlib import Path

from indexer.items import MemoryIndex
from indexer.parse import parse_file
from indexer.workspace import STD_STUB

FIXTURES = Path(__file__).with_name("fixtures")
STD_PATH = "<std-stub>/lib.rs"
#: The engine's special-token strings (engine.prompt.special_token_strings(); indexer tests
#: may import engine, only indexer/ itself may not).
SPECIAL = {
    "eot": "<|endoftext|>", "fim_prefix": "<|fim_prefix|>", "fim_suffix": "<|fim_suffix|>",
    "fim_middle": "<|fim_middle|>", "fim_pad": "<|fim_pad|>", "file_sep": "<|file_sep|>",
    "repo_name": "<|repo_name|>",
}


def count_words(text: str) -> int:
    """A deterministic stand-in tokenizer: one token per 4 bytes, rounded up."""
    return (len(text.encode("utf-8")) + 3) // 4


def load_crate(name: str, *, crate: str | None = None, with_std: bool = True) -> MemoryIndex:
    """Every .rs file of fixtures/<name> parsed into a MemoryIndex (paths relative to it)."""
    root = FIXTURES / name
    index = MemoryIndex()
    for p in sorted(root.rglob("*.rs")):
        rel = p.relative_to(root).as_posix()
        data = p.read_bytes()
        index.put(parse_file(rel, data, crate=crate or name.removeprefix("ctx_")),
                  data.decode("utf-8"))
    if with_std:
        data = (STD_STUB / "lib.rs").read_bytes()
        index.put(parse_file(STD_PATH, data, read_only=True, crate="std", module="crate"),
                  data.decode("utf-8"))
    return index


def cursor_at(index: MemoryIndex, path: str, marker: str, offset: int = 0) -> tuple[int, int]:
    """(line, col), 0-based, of the first occurrence of `marker` in `path`, plus `offset`."""
    text = index.text(path)
    assert text is not None, path
    at = text.index(marker) + offset
    line = text.count("\n", 0, at)
    return line, at - (text.rfind("\n", 0, at) + 1)
