"""Context assembly: ranking against hand-written expectations, prefix stability, budgets."""

from __future__ import annotations

import pytest

from indexer.context import ContextAssembler, assemble_context
from indexer.items import Item
from indexer.parse import parse_file
from indexer.signals import extract_identifiers, match_enums
from tests.indexer.ctx_fixtures import SPECIAL, count_words, cursor_at, load_crate

STD = "<std-stub>/lib.rs"

# (file, text at the cursor, expected first ranked chunks as (kind, path, item name)).
# Written by hand from reading the fixture crate `fixtures/ctx_geo`, never regenerated.
EXPECTED = [
    pytest.param("src/render.rs", "write!(f", [
        ("trait", STD, "Display"),
        ("signature-type", STD, "Formatter"),
        ("signature-type", STD, "Result"),
    ], id="std-trait-of-impl-via-use-std-fmt"),
    pytest.param("src/render.rs", "match shape", [
        ("enum", "src/shapes/mod.rs", "Shape"),
    ], id="enum-of-match-via-use-list"),
    pytest.param("src/render.rs", "blend(base", [
        ("signature-type", "src/support/colour_impl.rs", "Rgb"),
        ("definition", "src/support/colour_impl.rs", "blend"),
    ], id="pub-use-as-alias-through-glob-and-path-attr"),
    pytest.param("src/render.rs", "to_feet(unit)", [
        ("signature-type", "src/units.rs", "Meters"),
        ("definition", "src/units.rs", "to_feet"),
    ], id="glob-of-glob-re-export-mod-x-rs"),
    pytest.param("src/render.rs", "Circle { radius", [
        ("signature-type", "src/shapes/circle.rs", "Circle"),
        ("definition", "src/units.rs", "Meters"),
    ], id="pub-use-re-export-of-nested-module"),
    pytest.param("src/render.rs", "match self.shapes", [
        ("enum", STD, "Option"),
    ], id="std-enum-of-match-on-prelude-variants"),
    pytest.param("src/shapes/circle.rs", "let r = self", [
        ("trait", "src/shapes/mod.rs", "Area"),
        ("definition", "src/units.rs", "value"),
    ], id="trait-of-impl-via-use-super-mod-rs"),
    pytest.param("src/shapes/circle.rs", "super::Shape::Circle(self)", [
        ("signature-type", "src/shapes/mod.rs", "Shape"),
    ], id="super-path-in-signature"),
    pytest.param("src/shapes/polygon.rs", "matches!(s", [
        ("signature-type", "src/shapes/mod.rs", "Shape"),
    ], id="glob-use-super"),
    pytest.param("src/shapes/polygon.rs", "let n = self", [
        ("trait", "src/shapes/mod.rs", "Area"),
    ], id="trait-of-impl-via-glob-use-super"),
    pytest.param("src/shapes/circle.rs", "pub radius", [
        ("definition", "src/units.rs", "Meters"),
    ], id="struct-field-type-via-use-crate"),
]


def first_chunks(path: str, marker: str, n: int, budget: int = 4000) -> list[tuple]:
    index = load_crate("ctx_geo")
    line, col = cursor_at(index, path, marker)
    ctx = assemble_context(index, path, index.text(path), line, col, budget=budget,
                           count_tokens=count_words, special=SPECIAL, repo_name="geo")
    return [(c.kind, c.path, c.name) for c in ctx.ranked()[:n]]


@pytest.mark.parametrize(("path", "marker", "expected"), EXPECTED)
def test_first_cross_file_chunks(path: str, marker: str, expected: list[tuple]) -> None:
    assert first_chunks(path, marker, len(expected)) == expected


def test_chunks_never_come_from_the_current_file() -> None:
    index = load_crate("ctx_geo")
    asm = ContextAssembler(index, count_words, SPECIAL)
    for path in ("src/render.rs", "src/shapes/mod.rs", "src/units.rs"):
        ctx = asm.assemble(path, index.text(path), 5, 0, budget=8000)
        assert all(c.path != path for c in ctx.chunks)


def _typed(index, path: str, marker: str, insert: str):
    """The index after typing `insert` at `marker` (the buffer overlay re-parses the file)."""
    text = index.text(path)
    at = text.index(marker) + len(marker)
    new = text[:at] + insert + text[at:]
    index.put(parse_file(path, new.encode(), crate="geo"), new)
    line = new.count("\n", 0, at + len(insert))
    return new, line, at + len(insert) - (new.rfind("\n", 0, at + len(insert)) + 1)


def test_typing_inside_an_item_keeps_the_repository_part_byte_identical() -> None:
    index = load_crate("ctx_geo")
    path = "src/render.rs"
    asm = ContextAssembler(index, count_words, SPECIAL, repo_name="geo")
    line, col = cursor_at(index, path, "blend(base")
    first = asm.assemble(path, index.text(path), line, col, budget=4000)
    assert first.recomputed
    text = index.text(path)
    for i, ch in enumerate("let x = Meters(2.0);\n        to_feet(x);"):
        text, line, col = _typed(index, path, "blend(base" + "let x = Meters(2.0);\n"
                                 "        to_feet(x);"[:i], ch)
        ctx = asm.assemble(path, text, line, col, budget=4000)
        assert not ctx.recomputed
        assert ctx.repo_text() == first.repo_text()
        assert ctx.chunks == first.chunks
        assert ctx.prefix.endswith(ch)
    assert asm.recomputations == 1
    # The same item re-entered after a save: recomputed, and now it sees the typed names.
    asm.on_save(path)
    after = asm.assemble(path, text, line, col, budget=4000)
    assert after.recomputed
    assert ("definition", "src/units.rs", "to_feet") in [
        (c.kind, c.path, c.name) for c in after.chunks]


def test_moving_to_an_item_using_other_definitions_changes_the_repository_part() -> None:
    index = load_crate("ctx_geo")
    path = "src/render.rs"
    asm = ContextAssembler(index, count_words, SPECIAL, repo_name="geo")
    a = asm.assemble(path, index.text(path), *cursor_at(index, path, "blend(base"), budget=4000)
    b = asm.assemble(path, index.text(path), *cursor_at(index, path, "to_feet(unit)"),
                     budget=4000)
    assert b.recomputed and a.enclosing != b.enclosing
    assert a.repo_text() != b.repo_text()
    back = asm.assemble(path, index.text(path), *cursor_at(index, path, "blend(base"),
                        budget=4000)
    assert back.repo_text() == a.repo_text()  # deterministic: same input, same bytes


def test_index_update_of_a_chosen_chunk_recomputes_and_others_do_not() -> None:
    index = load_crate("ctx_geo")
    path = "src/render.rs"
    asm = ContextAssembler(index, count_words, SPECIAL, repo_name="geo")
    pos = cursor_at(index, path, "to_feet(unit)")
    first = asm.assemble(path, index.text(path), *pos, budget=4000)
    assert "src/units.rs" in {c.path for c in first.chunks}
    assert "src/lib.rs" not in {c.path for c in first.chunks}
    lib = index.text("src/lib.rs") + "\npub const EXTRA: u32 = 1;\n"
    index.put(parse_file("src/lib.rs", lib.encode(), crate="geo"), lib)
    assert not asm.assemble(path, index.text(path), *pos, budget=4000).recomputed
    units = index.text("src/units.rs").replace("3.28084", "3.2808399")
    index.put(parse_file("src/units.rs", units.encode(), crate="geo"), units)
    again = asm.assemble(path, index.text(path), *pos, budget=4000)
    assert again.recomputed
    assert any("3.2808399" in c.text for c in again.chunks)


def test_typing_keeps_the_token_prefix_with_the_engine_prompt() -> None:
    from engine.prompt import ContextFile, FimRequest, build_prompt, special_token_strings
    from engine.tokenizer import train_tokenizer
    from tests.indexer.ctx_fixtures import FIXTURES

    tok = train_tokenizer(FIXTURES / "ctx_geo", 400)
    index = load_crate("ctx_geo")
    path = "src/render.rs"
    asm = ContextAssembler(index, lambda s: len(tok.encode(s)), special_token_strings(),
                           repo_name="geo")

    def prompt(ctx):
        files = tuple(ContextFile(p, t) for p, t in ctx.context_files())
        return build_prompt(tok, FimRequest(path, ctx.prefix, ctx.suffix, "geo", files))

    pos = cursor_at(index, path, "blend(base", len("blend(base"))
    a = asm.assemble(path, index.text(path), *pos, budget=2048)
    text, line, col = _typed(index, path, "blend(base", "x")
    b = asm.assemble(path, text, line, col, budget=2048)
    ids_a, ids_b = prompt(a), prompt(b)
    cut = ids_a.index(tok.fim_prefix_id)
    assert ids_b[:cut + 1] == ids_a[:cut + 1]
    # Counts are exact for the repository part and the total stays within the budget.
    repo_ids = ids_a[:len(ids_a) - (len(tok.encode(f"{path}\n")) + 1 + 3
                                    + len(tok.encode(a.prefix)) + len(tok.encode(a.suffix)))]
    assert len(repo_ids) == a.repo_tokens
    assert len(ids_a) <= 2048
    assert tok.decode(ids_a) == a.prompt_text()


@pytest.mark.parametrize("budget", [1024, 2048, 4096, 65536])
def test_total_stays_within_the_budget(budget: int) -> None:
    index = load_crate("ctx_geo")
    for path, marker in [("src/render.rs", "match shape"), ("src/shapes/circle.rs", "let r")]:
        line, col = cursor_at(index, path, marker)
        ctx = assemble_context(index, path, index.text(path), line, col, budget=budget,
                               count_tokens=count_words, special=SPECIAL)
        assert ctx.total_tokens <= budget
        exact = sum(count_words(t) for special, t in ctx.segments() if not special) + sum(
            1 for special, _ in ctx.segments() if special)
        assert exact <= budget
        assert ctx.prefix.endswith(index.text(path).splitlines()[line][:col])


def test_small_budget_keeps_the_best_chunk_and_cuts_the_file() -> None:
    index = load_crate("ctx_geo")
    path = "src/render.rs"
    line, col = cursor_at(index, path, "match shape")
    ctx = assemble_context(index, path, index.text(path), line, col, budget=1024,
                           count_tokens=count_words, special=SPECIAL)
    assert ctx.ranked()[0].name == "Shape"
    full = assemble_context(index, path, index.text(path), line, col, budget=65536,
                            count_tokens=count_words, special=SPECIAL)
    assert not full.truncated_prefix and not full.truncated_suffix
    assert full.prefix + full.suffix == index.text(path)


def test_same_input_same_bytes_across_assemblers() -> None:
    outs = set()
    for _ in range(3):
        index = load_crate("ctx_geo")
        path = "src/render.rs"
        line, col = cursor_at(index, path, "write!(f")
        outs.add(assemble_context(index, path, index.text(path), line, col, budget=4096,
                                  count_tokens=count_words, special=SPECIAL).prompt_text())
    assert len(outs) == 1


def test_prompt_segments_follow_the_engine_order() -> None:
    index = load_crate("ctx_geo")
    path = "src/units.rs"
    ctx = assemble_context(index, path, index.text(path), 3, 0, budget=4096,
                           count_tokens=count_words, special=SPECIAL, repo_name="geo")
    text = ctx.prompt_text()
    assert text.startswith("<|repo_name|>geo\n<|file_sep|>")
    assert text.endswith(f"<|file_sep|>{path}\n<|fim_suffix|>{ctx.suffix}"
                         f"<|fim_prefix|>{ctx.prefix}<|fim_middle|>")
    psm = ctx.prompt_text("psm")
    assert psm.endswith(f"<|fim_prefix|>{ctx.prefix}<|fim_suffix|>{ctx.suffix}<|fim_middle|>")


def test_missing_special_tokens_are_an_error() -> None:
    with pytest.raises(ValueError, match="missing"):
        ContextAssembler(load_crate("ctx_geo"), count_words, {"file_sep": "<|file_sep|>"})


def test_extract_identifiers_skips_comments_strings_locals_and_declarations() -> None:
    code = '''fn go(x: Meters) { // Ignored
        let s = "Quoted"; let y = helper(x); mac!(z); a::b::Thing::new(); x.area();
        /* Block */ }'''
    got = extract_identifiers(code)
    names = {("::".join(p), how) for (p, how) in got}
    assert ("Meters", "name") in names and ("helper", "call") in names
    assert ("mac", "macro") in names and ("a::b::Thing::new", "call") in names
    assert ("area", "method") in names
    assert not any(n in ("Ignored", "Quoted", "Block", "go", "x", "y", "s")
                   for n, _ in names)


def test_match_enums_reads_arm_paths_and_prelude_variants() -> None:
    it = Item("fn", "f", "a.rs", "crate", "fn f()")
    code = "match v { Kind::A(x) => 1, Kind::B { .. } | m::Other::C => 2 }\n" \
           "match o { Some(x) => x, None => 0 }"
    segs = [s for s, _ in match_enums(code, it)]
    assert segs == [("Kind",), ("m", "Other"), ("Some",), ("None",)]


class _HashedIndex:
    """A MemoryIndex that can list its content hashes, counting record reads."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.reads: list[str] = []

    @property
    def generation(self) -> int:
        return self.inner.generation

    def files(self) -> list[str]:
        return self.inner.files()

    def file(self, path: str):
        self.reads.append(path)
        return self.inner.file(path)

    def text(self, path: str):
        return self.inner.text(path)

    def items_named(self, name: str):
        return self.inner.items_named(name)

    def content_hashes(self) -> dict[str, str]:
        return {p: fi.content_hash for p, fi in self.inner.entries.items()}


def test_new_generation_rereads_only_changed_records_and_gives_the_same_context() -> None:
    index = _HashedIndex(load_crate("ctx_geo"))
    path = "src/render.rs"
    pos = cursor_at(index.inner, path, "to_feet(unit)")
    asm = ContextAssembler(index, count_words, SPECIAL, repo_name="geo")
    asm.assemble(path, index.text(path), *pos, budget=4000)
    units = index.text("src/units.rs").replace("3.28084", "3.2808399")
    index.inner.put(parse_file("src/units.rs", units.encode(), crate="geo"), units)
    index.reads.clear()
    again = asm.assemble(path, index.text(path), *pos, budget=4000)
    # The generation build read the changed record only (requests read their own files).
    requested = {path} | {c.path for c in again.chunks}
    assert "src/units.rs" in index.reads
    assert set(index.reads) - requested <= {"src/units.rs"}, index.reads
    fresh = ContextAssembler(index.inner, count_words, SPECIAL, repo_name="geo")
    assert again.prompt_text() == fresh.assemble(path, index.text(path), *pos,
                                                 budget=4000).prompt_text()
