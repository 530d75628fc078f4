"""hybrid_lsp.bench_completions: position sampling and the report (no model needed), and the
scoring of served against file-only prompts (the shipped model)."""

from __future__ import annotations

from hybrid_lsp.bench_completions import SECTION, body_lines, sample_positions, section_text

SRC = """fn alpha(x: u32) -> u32 {
    let doubled = x * 2;
    doubled + 1
}

// a comment line that is not in a body
struct S;

fn beta() {
    // only a comment
    let name = String::from("beta");
}
"""


def test_body_lines_are_code_inside_function_bodies() -> None:
    assert body_lines(SRC) == [1, 2, 10]


def test_sampled_positions_delete_the_rest_of_a_body_line() -> None:
    files = {"c/1.0": {"src/lib.rs": SRC}, "d/2.0": {"src/main.rs": SRC}}
    positions = sample_positions(files, 4, seed=1)
    assert len(positions) == 4 and {p.crate for p in positions} == set(files)
    assert positions == sample_positions(files, 4, seed=1)  # seeded
    for p in positions:
        original = files[p.crate][p.path].split("\n")[p.line]
        kept = p.text.split("\n")[p.line]
        assert p.line in body_lines(SRC) and kept + p.expected == original.rstrip()
        assert kept.strip() and p.expected  # something typed, something to complete
        assert p.text[p.offset - len(kept):p.offset] == kept


def test_section_reports_served_peer_and_ratio() -> None:
    base = {"positions": 10, "crates": 10, "seed": 0, "model": "/x/m.gguf", "backend": "llama",
            "budget": 2048, "cpu": "Test CPU, 2 cores", "load_average": [0.5, 0.7],
            "engine_ms_p50": 900.0, "engine_ms_p95": 1200.0, "prompt_tokens_mean": 1600}
    served = {**base, "shown_ok": 9, "exact_line": 4, "prefix_of_line": 5}
    peer = {**base, "shown_ok": 6, "exact_line": 2, "prefix_of_line": 3,
            "prompt_tokens_mean": 800}
    text = section_text(served, peer, "")
    assert text.startswith(SECTION + "\n") and "Test CPU, 2 cores" in text
    assert "| 9 / 10 (90%) | 6 / 10 (60%) | 1.50x |" in text
    assert "| 4 / 10 (40%) | 2 / 10 (20%) | 2.00x |" in text
    assert "served / peer" not in section_text(served, None, "")


def test_scoring_sees_what_the_repository_context_gives() -> None:
    """With the shipped model, the served prompt (holding the definition the line calls)
    makes the deleted rest of the line cheaper than the file-only prompt does."""
    from hybrid_lsp.bench_completions import Position, score_positions
    from hybrid_lsp.cli import default_model_path

    widget = ("/// A frobnicator for widgets.\npub struct Frobnicator {\n    pub limit: u32,\n}\n\n"
              "/// Builds the widget frobnicator with a limit.\n"
              "pub fn configure_widget_frobnicator(limit: u32) -> Frobnicator {\n"
              "    Frobnicator { limit }\n}\n")
    lib = ("mod widget;\nuse crate::widget::{configure_widget_frobnicator, Frobnicator};\n\n"
           "pub fn build() -> Frobnicator {\n    let f = configure_widget_frobnicator(7);\n"
           "    f\n}\n")
    line = lib.split("\n")[4]
    col = line.index("configure_") + len("configure_")
    rows = lib.split("\n")
    rows[4] = line[:col]
    pos = Position("w/1.0", "src/lib.rs", 4, col, "\n".join(rows), line[col:])
    files = {"w/1.0": {"src/lib.rs": lib, "src/widget.rs": widget}}
    from engine.gguf_io import read_model_info

    tok = read_model_info(default_model_path()).tokenizer
    scores = score_positions(default_model_path(), [pos], files, tok, 2048)
    assert scores["bytes"] >= len("widget_frobnicator(7);")
    assert 0 < scores["served_bits"][0] < scores["peer_bits"][0]


def test_coverage_counts_names_the_file_lacks_and_the_context_holds() -> None:
    """A deleted field access: the field's name is new to the file, and the served context
    (the struct's definition, since the file names the struct) holds it; keywords and names
    the file already has do not count."""
    from engine.gguf_io import read_model_info
    from hybrid_lsp.bench_completions import (
        Position,
        context_coverage,
        new_identifiers,
        position_request,
    )
    from hybrid_lsp.cli import default_model_path

    widget = "/// A widget.\npub struct Widget {\n    pub frobnicate_limit: u32,\n}\n"
    lib = ("mod widget;\nuse crate::widget::Widget;\n\npub fn build(w: &Widget) -> u32 {\n"
           "    let f = w.frobnicate_limit as u32 + 1;\n    f\n}\n")
    rows = lib.split("\n")
    col = rows[4].index("w.") + len("w.")
    expected = rows[4][col:]
    rows[4] = rows[4][:col]
    pos = Position("w/1.0", "src/lib.rs", 4, col, "\n".join(rows), expected)
    assert new_identifiers(pos) == ["frobnicate_limit"]  # not `as`, `u32` (in the file)
    tok = read_model_info(default_model_path()).tokenizer
    files = {"src/lib.rs": lib, "src/widget.rs": widget}
    assert context_coverage(pos, position_request(pos, files, tok, 2048)) == (1, 1)
    other = {"src/lib.rs": lib, "src/widget.rs": "pub struct Widget {\n    pub x: u32,\n}\n"}
    assert context_coverage(pos, position_request(pos, other, tok, 2048)) == (1, 0)
