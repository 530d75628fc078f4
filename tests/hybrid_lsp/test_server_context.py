"""The server's view of the cursor: the item it is in (cache warming) and token counting."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_lsp.completion import PromptBuilder
from hybrid_lsp.context_cmd import load_memory_index
from hybrid_lsp.server import HybridLanguageServer, current_item, default_model_path
from indexer.parse import parse_file
from indexer.tokens import TokenCounter

SOURCE = """\
struct S;

impl S {
    fn first(&self) -> u32 {
        1
    }

    fn second(&self) -> u32 {
        2
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a() {}
}
"""


def inside(needle: str) -> int:
    return SOURCE.index(needle)


@pytest.mark.parametrize("use_index", [False, True])
def test_current_item_sees_nested_items(use_index: bool) -> None:
    fi = parse_file("src/lib.rs", SOURCE.encode()) if use_index else None
    first, second = current_item(SOURCE, inside("1\n"), fi), current_item(SOURCE, inside("2\n"), fi)
    test_a = current_item(SOURCE, inside("fn a()") + 8, fi)
    # Methods indented in an impl, a test in a module: each its own item.
    assert len({first, second, test_a}) == 3
    assert None not in (first, second, test_a)
    assert current_item(SOURCE, inside("1\n") + 1, fi) == first   # typing keeps the item


def test_current_item_without_index_is_positionless() -> None:
    moved = "// a comment\n\n" + SOURCE
    assert current_item(SOURCE, inside("2\n")) == current_item(
        moved, moved.index("2\n"))
    assert current_item(SOURCE, inside("\n\nimpl") + 1) is None  # between items


def test_server_counts_context_tokens_with_the_piece_counter() -> None:
    from engine.gguf_io import read_model_info

    ls = HybridLanguageServer()
    ls.prompts = PromptBuilder(read_model_info(default_model_path()).tokenizer)
    ls.index = load_memory_index(Path(__file__).parent / "fixtures" / "ws")
    ls._make_assembler()
    counter = ls.assembler.tokens
    assert isinstance(counter, TokenCounter) and counter.additive
    assert counter.name.startswith(f"bpe{ls.prompts.tok.vocab_size}-")
    text = "fn main() {\n    let x = 1;\n}\n"
    assert counter(text) == len(ls.prompts.tok.encode(text))
