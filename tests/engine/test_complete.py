"""engine/complete.py: cursor positions as rustc counts them, prompt fitting, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.complete import (
    CompletionInputError,
    ModelError,
    complete_file,
    cursor_offset,
    fit_prompt,
    load_model_info,
    prompt_location,
    read_source,
)
from engine.parity import tiny_tokenizer
from engine.prompt import FimRequest, build_prompt

TEXT = "fn main() {\n    let é = \"😀\";\n}\n"


@pytest.mark.parametrize(("line", "col", "before"), [
    (1, 1, ""),
    (1, 4, "fn "),
    (2, 9, "fn main() {\n    let "),
    (2, 10, "fn main() {\n    let é"),          # é is one column
    (2, 14, "fn main() {\n    let é = \""),
    (2, 15, "fn main() {\n    let é = \"😀"),    # so is the emoji (one code point)
    (2, 17, "fn main() {\n    let é = \"😀\";"),  # one past the end of the line
    (4, 1, TEXT),                                # the empty line after the last newline
])
def test_cursor_offset_counts_characters(line, col, before):
    assert TEXT[: cursor_offset(TEXT, line, col)] == before


def test_crlf_is_not_part_of_the_line():
    text = "ab\r\ncd\r\n"
    assert cursor_offset(text, 1, 3) == 2
    assert cursor_offset(text, 2, 3) == 6
    with pytest.raises(CompletionInputError, match="column 4"):
        cursor_offset(text, 1, 4)


@pytest.mark.parametrize(("line", "col", "match"), [
    (0, 1, "line 0 is out of range"), (5, 1, "line 5 is out of range"),
    (2, 18, "column 18 is out of range"), (1, 0, "column 0"),
])
def test_positions_out_of_range(line, col, match):
    with pytest.raises(CompletionInputError, match=match):
        cursor_offset(TEXT, line, col, path="x.rs")


def test_read_source(tmp_path):
    p = tmp_path / "a.rs"
    p.write_bytes("\ufefffn f() {}\n".encode())
    assert read_source(p) == "fn f() {}\n"  # the BOM is not text
    with pytest.raises(CompletionInputError, match="no such file"):
        read_source(tmp_path / "missing.rs")
    (tmp_path / "bad.rs").write_bytes(b"fn \xff\n")
    with pytest.raises(CompletionInputError, match="not valid UTF-8"):
        read_source(tmp_path / "bad.rs")
    with pytest.raises(CompletionInputError, match="directory"):
        read_source(tmp_path)


def test_prompt_location(tmp_path):
    crate = tmp_path / "mycrate"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text("[package]\nname = \"mycrate\"\n")
    assert prompt_location(crate / "src" / "lib.rs") == ("src/lib.rs", "mycrate")
    assert prompt_location(tmp_path / "loose.rs") == ("loose.rs", "")


def test_fit_prompt_keeps_text_around_the_cursor(tmp_path):
    tok = tiny_tokenizer(tmp_path)
    prefix = "".join(f"let a{i} = {i};\n" for i in range(300))
    suffix = "".join(f"let b{i} = {i};\n" for i in range(300))
    req = FimRequest(path="src/lib.rs", prefix=prefix, suffix=suffix, repo_name="r")
    full = build_prompt(tok, req)
    ids = fit_prompt(tok, req, 400)
    assert len(full) > 400 >= len(ids) > 300
    text = tok.decode(ids)
    assert "let a299 = 299;\n<|fim_middle|>" in text  # the prefix keeps its end
    assert "<|fim_suffix|>let b0 = 0;" in text       # the suffix keeps its start
    assert fit_prompt(tok, req, len(full)) == full


def test_model_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelError, match="nope.gguf"):
        load_model_info(missing)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 10)
    with pytest.raises(ModelError, match="junk.gguf") as e:
        load_model_info(junk)
    assert "\n" not in str(e.value)


def test_input_errors_come_before_the_model(tmp_path):
    # The model path does not exist either: the source file is reported first.
    with pytest.raises(CompletionInputError, match="missing.rs"):
        complete_file(tmp_path / "missing.rs", 1, 1, model_path=Path("nope.gguf"))
