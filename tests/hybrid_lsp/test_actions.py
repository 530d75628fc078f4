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


# -- std traits from the index's std stub; any model output ------------------------------

def impl_items(code: str) -> list[str]:
    """Names of the items of every impl block in `code`, in order."""
    from hybrid_lsp.actions import _Src, _walk

    src = _Src(code)
    return [src.node_text(c.child_by_field_name("name")) for n in _walk(src.tree.root_node)
            if n.type == "impl_item" for c in n.child_by_field_name("body").named_children]


@pytest.mark.parametrize("trait,have,items", [
    ("std::fmt::Display", "", [
        "fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result"]),
    ("Iterator", "", ["type Item", "fn next(&mut self) -> Option<Self::Item>"]),
    ("Iterator", "    type Item = u8;\n", ["fn next(&mut self) -> Option<Self::Item>"]),
    ("FromStr", "", ["type Err", "fn from_str(s: &str) -> Result<Self, Self::Err>"]),
    ("Hash", "", ["fn hash<H: std::hash::Hasher>(&self, state: &mut H)"]),
    ("PartialOrd", "", ["fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering>"]),
    ("std::ops::Add<i32>", "", ["type Output", "fn add(self, rhs: i32) -> Self::Output"]),
    ("IntoIterator", "", ["type Item", "type IntoIter", "fn into_iter(self) -> Self::IntoIter"]),
])
def test_std_traits_come_from_the_stub(trait: str, have: str, items: list[str]) -> None:
    code = f"struct P;\nimpl {trait} for P {{\n{have}}}\n"
    ins = implement_trait(code, code.index("impl") + 2, {})
    assert ins is not None and no_new_errors(code, ins)
    for sig in items:
        assert ins.text.count(sig) == 1, (sig, ins.text)
    names = [s.split("(")[0].split("<")[0].split()[-1] for s in items]
    assert impl_items(apply(code, ins)) == impl_items(code) + names


MODEL_SAYS = [
    ('write!(f, "P")', True),
    ("{\n    let n = 1;\n    write!(f, \"{n}\")\n}", True),
    ("", False),
    ("x } fn evil() {", False),                    # parses alone, would add an item
    ("}\n}\nfn other() {}\nimpl Q for P {", False),
    ("let = = ;(", False),
    ("/* never closed", False),
    ("(" * 500, False),
    ("<|fim_middle|>", False),
]


@pytest.mark.parametrize("said,kept", MODEL_SAYS)
def test_implement_trait_whatever_the_model_says(said: str, kept: bool) -> None:
    from hybrid_lsp.actions import body_slots, fallback_note, plan_impl, render_impl

    code = "use std::fmt;\nstruct P;\nimpl fmt::Display for P {\n}\nfn after() {}\n"
    plan = plan_impl(code, code.index("impl") + 2, {})
    assert list(body_slots(code, plan)) == ["fmt"]
    prefix, suffix = body_slots(code, plan)["fmt"]
    assert prefix.endswith("-> std::fmt::Result {\n        ") and suffix.startswith("\n    }")
    ins = render_impl(plan, {"fmt": said})
    after = apply(code, ins)
    assert error_count(after) == error_count(code) == 0
    assert impl_items(after) == ["fmt"] and after.count("fn ") == 2
    assert (ins.fallbacks == ()) is kept
    note = fallback_note(ins.fallbacks, {"fmt": said})
    assert ("did not parse" in note) is not kept
    assert "no model answer" in fallback_note(render_impl(plan, {"fmt": None}).fallbacks,
                                              {"fmt": None})


@pytest.mark.parametrize("arms,expected", [
    ("Dir::N | Dir::W => 0,", ["E(..)", "S { .. }"]),
    ("d @ Dir::E(_) => 0,\n        Dir::N => 1,", ["S { .. }", "W"]),
    ("Dir::E(x) if x > 0 => 0,", ["N", "E(..)", "S { .. }", "W"]),  # a guard covers nothing
    ("other => 0,", None),
    ("_ => 0,", None),
])
def test_fill_match_patterns(arms: str, expected: list[str] | None) -> None:
    code = ("enum Dir { N, E(u8), S { x: u8 }, W }\nfn f(d: Dir) -> u8 {\n    match d {\n"
            f"        {arms}\n    }}\n}}\n")
    ins = fill_match(code, code.index("match d") + 2, {})
    if expected is None:
        assert ins is None
        return
    assert ins is not None and no_new_errors(code, ins)
    assert [ln.strip() for ln in ins.text.splitlines() if "=>" in ln] == [
        f"Dir::{v} => todo!()," for v in expected]


def test_fill_match_on_std_enums() -> None:
    code = "fn f(o: std::cmp::Ordering) {\n    match o {\n        Ordering::Less => {}\n    }\n}\n"
    ins = fill_match(code, code.index("match") + 2, {})
    assert ins is not None and no_new_errors(code, ins)
    assert "Ordering::Equal => todo!()," in ins.text and "Ordering::Greater" in ins.text
