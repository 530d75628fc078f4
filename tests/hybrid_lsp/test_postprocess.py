"""Post-processing: syntactic unit, balanced brackets, no repetition, trimming."""

from __future__ import annotations

import pytest

from hybrid_lsp.postprocess import bracket_events, clean_completion, cut_at_markers, error_count


def at(marked: str) -> tuple[str, int]:
    return marked.replace("|", ""), marked.index("|")


@pytest.mark.parametrize("marked,raw,expected", [
    # mid-line: one line, without repeating the text after the cursor
    ("fn f() { g(|); }", "x, y)\n    foo", "x, y"),
    # rest of a statement
    ("fn main() {\n    let v = |\n}\n", "vec![1, 2];\n    let w = 3;\n}", "vec![1, 2];"),
    # a blank line: whole lines of the block, never the block's closing brace
    ("fn main() {\n    |\n}\n", "let a = 1;\n    if a > 0 {\n        b();\n    }\n}\nfn o() {}",
     "let a = 1;\n    if a > 0 {\n        b();\n    }"),
    # the next lines already exist: not repeated
    ("fn main() {\n    let a = 1;\n    |\n    let b = 2;\n}\n", "let z = 0;\n    let b = 2;\n}",
     "let z = 0;"),
    # trailing whitespace trimmed
    ("fn main() {\n    let v = |\n}\n", "1;   \n", "1;"),
    # an unclosed bracket is cut back to a balanced point
    ("fn main() {\n    |\n}\n", "a();\n    b(1,\n", "a();"),
])
def test_cleaning(marked: str, raw: str, expected: str) -> None:
    text, off = at(marked)
    assert clean_completion(raw, text, off) == expected


@pytest.mark.parametrize("raw", ["", "   \n\t", ")"])
def test_empty_results_are_dropped(raw: str) -> None:
    text, off = at("fn main() {\n    let v = |\n}\n")
    assert clean_completion(raw, text, off) is None


def test_result_adds_no_parse_errors() -> None:
    text, off = at("fn main() {\n    |\n}\n")
    out = clean_completion("let x = 1;\n    let y = ;\n", text, off)
    assert error_count(text[:off] + (out or "") + text[off:]) == 0


def test_brackets_in_strings_and_comments_are_ignored() -> None:
    assert [c for _, c in bracket_events('f("(", \'{\', /* [ */ x) // ]')] == ["(", ")"]
    assert [c for _, c in bracket_events("fn f<'a>(x: &'a str) {}")] == ["(", ")", "{", "}"]


def test_cut_at_special_tokens() -> None:
    assert cut_at_markers("abc<|fim_middle|>def", ("<|fim_middle|>", "<|endoftext|>")) == "abc"
