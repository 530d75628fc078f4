"""Post-processing: syntactic unit, balanced brackets, no repetition, trimming."""

from __future__ import annotations

import pytest

from hybrid_lsp.postprocess import (
    BLOCK_STOP,
    LINE_MAX_TOKENS,
    bracket_events,
    clean_completion,
    closable_brackets,
    cursor_unit,
    cut_at_markers,
    error_count,
    generation_limits,
)


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


# -- one test per rule, with hand-written raw model outputs ------------------------------

@pytest.mark.parametrize("marked,raw,expected", [
    # statement: continues an identifier and ends the statement at its line end
    ("fn f(items: &[u8]) {\n    let n = ite|\n}\n", "ms.len();\n    let m = 2;\n}", "ms.len();"),
    # statement: ends the line by closing a bracket opened before the cursor that the
    # text after the cursor leaves open
    ("fn main() {\n    let x = foo(|\n}\n", "a, b);\n    bar();", "a, b);"),
    # block: one statement on a blank line
    ("fn main() {\n    |\n}\n", "let a = 1;", "let a = 1;"),
    # block: never past a line that dedents below the cursor
    ("fn main() {\n    if x {\n        |\n    }\n}\n", "a();\n    }\n    b();", "a();"),
    # block: the end of a statement's line; the next line comes with its newline
    ("fn main() {\n    let a = 1;|\n}\n", "\n    let b = a;\n}", "\n    let b = a;"),
    # line: in a line comment, the rest of the line only
    ("fn main() {\n    // the |\n}\n", "sum of the items\n    let s = 0;", "sum of the items"),
])
def test_syntactic_unit(marked: str, raw: str, expected: str) -> None:
    text, off = at(marked)
    assert clean_completion(raw, text, off) == expected


@pytest.mark.parametrize("marked,raw,expected", [
    # a bracket the suffix closes itself is never closed by the completion
    ("fn f() { g(|); }", "x)); }", "x"),
    # a first line that leaves a bracket open keeps its balanced start
    ("fn main() {\n    let v = |\n}\n", "Foo { a: 1,", "Foo"),
    # brackets inside strings do not count
    ("fn main() {\n    let s = |\n}\n", '"(x";', '"(x";'),
    # ... nor in a string the cursor is in
    ('fn main() {\n    let s = "a|\n}\n', 'b { c";\n    x();', 'b { c";'),
])
def test_brackets_stay_balanced(marked: str, raw: str, expected: str) -> None:
    text, off = at(marked)
    assert clean_completion(raw, text, off) == expected


@pytest.mark.parametrize("marked,raw,expected", [
    # punctuation the line already has is not repeated
    ("fn main() {\n    let x = |;\n}\n", "5;", "5"),
    # a completion that only repeats the rest of the line is dropped
    ("fn main() {\n    let x = |1;\n}\n", "1;", None),
    # ... or only repeats the next line
    ("fn main() {\n    let a = 1;\n    |\n    let b = 2;\n}\n", "let b = 2;", None),
])
def test_no_repetition_of_the_suffix(marked: str, raw: str, expected: str | None) -> None:
    text, off = at(marked)
    assert clean_completion(raw, text, off) == expected


@pytest.mark.parametrize("marked,raw,expected", [
    # a line repeated by a looping model: the first copy stays
    ("fn main() {\n    |\n}\n",
     "let mut f = self.len();\n    let mut f = self.len();\n    let mut f",
     "let mut f = self.len();"),
    # a short piece repeated within a line is cut off whole
    ("fn main() {\n    let x = |\n}\n", "f(1).0.0.0.0.0.0.0.0.0.0", "f(1)"),
    ("fn main() {\n    let x = 1|\n}\n", ".0.0.0.0.0.0.0.0.0.0", None),
    # runs of one character are not loops
    ("fn main() {\n    let x = 1|\n}\n", "_000_000;", "_000_000;"),
])
def test_loops_are_cut(marked: str, raw: str, expected: str | None) -> None:
    text, off = at(marked)
    assert clean_completion(raw, text, off) == expected


def test_trailing_whitespace_is_trimmed_on_every_line() -> None:
    text, off = at("fn main() {\n    |\n}\n")
    assert clean_completion("let a = 1;  \n    let b = 2;\t\n", text, off) == (
        "let a = 1;\n    let b = 2;")


def test_garbage_that_breaks_the_file_is_dropped() -> None:
    text, off = at("fn main() {\n    |\n}\n")
    assert clean_completion(".is_empty()", text, off) is None


@pytest.mark.parametrize("marked,closable", [
    ("fn main() {\n    let x = foo(|\n}\n", "("),
    ("fn f() { g(|); }", ""),
    ("fn f() { let v = vec![(1, |\n}", "[("),
    ("fn f() {\n    |", "{"),            # the end of the file: nothing closes it
])
def test_closable_brackets(marked: str, closable: str) -> None:
    text, off = at(marked)
    assert closable_brackets(text[:off], text[off:]) == closable


@pytest.mark.parametrize("marked,kind,single", [
    ("fn f() { g(|); }", "line", True),
    ("fn main() {\n    let x = |\n}\n", "statement", True),
    ("fn main() {\n    if x > |\n}\n", "statement", False),
    ("fn main() {\n    let v = vec![|\n}\n", "statement", False),
    ("fn main() {\n    |\n}\n", "block", False),
    ("fn main() {\n    // a |\n}\n", "line", True),
    ('fn main() {\n    let s = "a // b";|\n}\n', "block", False),
    ('fn main() {\n    let s = "in a |\n}\n', "line", True),
])
def test_cursor_unit(marked: str, kind: str, single: bool) -> None:
    text, off = at(marked)
    unit = cursor_unit(text, off)
    assert (unit.kind, unit.single_line) == (kind, single)


def test_generation_limits() -> None:
    text, off = at("fn main() {\n    let x = |\n}\n")
    assert generation_limits(text, off, 48) == (["\n"], LINE_MAX_TOKENS)
    assert generation_limits(text, off, 8) == (["\n"], 8)
    text, off = at("fn main() {\n    if x {\n        |\n    }\n}\n")
    stops, n = generation_limits(text, off, 48)
    assert n == 48 and "\n    }" in stops and "\n}" in stops and "\n        }" not in stops
    text, off = at("fn a() {}\n|\nfn b() {}\n")
    assert generation_limits(text, off, 48) == ([BLOCK_STOP], 48)
