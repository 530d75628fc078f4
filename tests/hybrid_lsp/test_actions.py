"""Code actions: exact items, declaration order, no new parse errors, todo!() fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid_lsp.actions import (
    ADD_DOC,
    COMPLETE_BODY,
    FILL_MATCH,
    IMPLEMENT_TRAIT,
    apply,
    body_or_todo,
    fill_match,
    find_actions,
    implement_trait,
    no_new_errors,
)
from hybrid_lsp.postprocess import error_count

SHAPES = (Path(__file__).parent / "fixtures" / "ws" / "src" / "shapes.rs").read_text()
SOURCES = {"shapes.rs": SHAPES}

CODE = """use std::fmt;
struct P;
impl fmt::Display for P {
}
impl Iterator for P {
}
impl From<u8> for P {
}
trait Area {
    fn area(&self) -> f64;
    fn name(&self) -> String { String::new() }
    const K: u8;
}
impl Area for P {
    fn area(&self) -> f64 { 1.0 }
}
enum Dir { N, E(u8), S { x: u8 }, W }
fn f(d: Dir) -> u8 {
    match d {
        Dir::E(_) => 1,
    }
}
fn g() -> u8 {
    todo!()
}
"""


def at(needle: str) -> int:
    return CODE.index(needle) + 2


@pytest.mark.parametrize("needle,items", [
    ("impl fmt::Display", ["fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result"]),
    ("impl Iterator", ["type Item = ();", "fn next(&mut self) -> Option<Self::Item>"]),
    ("impl From<u8>", ["fn from(value: u8) -> Self"]),
    ("impl Area", ["const K: u8 = todo!();"]),
])
def test_implement_trait_inserts_exactly_the_missing_items(needle: str, items: list[str]) -> None:
    ins = implement_trait(CODE, at(needle), SOURCES)
    assert ins is not None and no_new_errors(CODE, ins)
    added = ins.text
    for item in items:
        assert added.count(item) == 1
    assert "fn area" not in added and "fn name" not in added
    assert error_count(apply(CODE, ins)) == error_count(CODE) == 0


def test_fill_match_adds_missing_variants_once_in_order() -> None:
    ins = fill_match(CODE, at("match d"), SOURCES)
    assert ins is not None and no_new_errors(CODE, ins)
    arms = [ln.strip() for ln in ins.text.splitlines() if "=>" in ln]
    assert arms == ["Dir::N => todo!(),", "Dir::S { .. } => todo!(),", "Dir::W => todo!(),"]
    assert fill_match(apply(CODE, ins), at("match d"), SOURCES) is None  # nothing left


def test_fill_match_uses_enums_from_other_files() -> None:
    code = "fn f(s: Shape) {\n    match s {\n        Shape::Square(_) => {}\n    }\n}\n"
    ins = fill_match(code, code.index("match"), SOURCES)
    assert ins is not None and "Shape::Circle(..) => todo!()," in ins.text
    assert error_count(apply(code, ins)) == 0


def test_find_actions() -> None:
    assert {f.kind for f in find_actions(CODE, at("match d"))} == {FILL_MATCH, ADD_DOC}
    assert {f.kind for f in find_actions(CODE, at("todo!()"))} == {COMPLETE_BODY, ADD_DOC}
    assert [f.kind for f in find_actions(CODE, at("impl Area"))] == [IMPLEMENT_TRAIT]


def test_body_fallback() -> None:
    assert body_or_todo("let x = 1;\nx + 1") == ("let x = 1;\nx + 1", True)
    assert body_or_todo("let = = ;(") == ("todo!()", False)
    assert body_or_todo("") == ("todo!()", False)
