"""Prompt format: layout and order, stability under typing, special text, version check."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.prompt import (
    PROMPT_FORMAT_VERSION,
    SUPPORTED_PROMPT_FORMATS,
    ContextFile,
    FimRequest,
    UnsupportedPromptFormat,
    build_prompt,
    check_prompt_format,
    document_example,
    fim_training_example,
    special_token_strings,
)
from engine.tokenizer import SPECIAL_TOKENS, Tokenizer, train_tokenizer

SOURCE = (
    "use std::fmt;\n\npub struct Span { lo: u32, hi: u32 }\n\n"
    "impl fmt::Display for Span {\n    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {\n"
    "        write!(f, \"{}..{}\", self.lo, self.hi)\n    }\n}\n"
    "fn größe() -> &'static str { \"🦀 <|endoftext|>\" }\n"
)
CONTEXT = (
    ContextFile("src/span.rs", "pub struct Span;\n"),
    ContextFile("src/lib.rs", "mod span;\n// <|file_sep|> is text here\n"),
)


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    root = tmp_path_factory.mktemp("corpus")
    for i in range(10):
        (root / f"f{i}.rs").write_text(SOURCE * (i + 1), encoding="utf-8")
    return train_tokenizer(root, 400)


def render(tok: Tokenizer, ids: list[int]) -> str:
    return tok.decode(ids)


def test_layout_spm_and_psm(tok: Tokenizer) -> None:
    req = FimRequest("src/main.rs", "fn main() {\n    le", "\n}\n", "acme", CONTEXT)
    spm = build_prompt(tok, req)
    assert render(tok, spm) == (
        "<|repo_name|>acme\n"
        "<|file_sep|>src/span.rs\npub struct Span;\n\n"
        "<|file_sep|>src/lib.rs\nmod span;\n// <|file_sep|> is text here\n\n"
        "<|file_sep|>src/main.rs\n"
        "<|fim_suffix|>\n}\n<|fim_prefix|>fn main() {\n    le<|fim_middle|>"
    )
    psm = build_prompt(tok, req, order="psm")
    assert render(tok, psm).endswith(
        "<|file_sep|>src/main.rs\n"
        "<|fim_prefix|>fn main() {\n    le<|fim_suffix|>\n}\n<|fim_middle|>"
    )
    assert spm[-1] == psm[-1] == tok.fim_middle_id
    with pytest.raises(ValueError, match="order"):
        build_prompt(tok, req, order="pms")


def test_special_text_in_user_code_stays_text(tok: Tokenizer) -> None:
    req = FimRequest("<|fim_pad|>.rs", "<|fim_middle|>", "<|endoftext|>", "<|repo_name|>", CONTEXT)
    ids = build_prompt(tok, req)
    specials = [i for i in ids if i in tok.special_ids.values()]
    # repo_name, three file_sep, fim_suffix, fim_prefix, fim_middle: nothing from user text.
    assert specials == [tok.repo_name_id, tok.file_sep_id, tok.file_sep_id, tok.file_sep_id,
                        tok.fim_suffix_id, tok.fim_prefix_id, tok.fim_middle_id]


def test_typing_only_changes_the_tail(tok: Tokenizer) -> None:
    cursor = SOURCE.index("write!")
    req = FimRequest("src/span.rs", SOURCE[:cursor], SOURCE[cursor:], "r", CONTEXT)
    prev = build_prompt(tok, req)
    stable = prev.index(tok.fim_prefix_id) + 1
    for typed in ["w", "wr", "write!(f", "write!(f, \"{}", " ", "\n", "  \t", "🦀"]:
        new = SOURCE[:cursor] + typed
        ids = build_prompt(tok, FimRequest("src/span.rs", new, SOURCE[cursor:], "r", CONTEXT))
        assert ids[:stable] == prev[:stable]
        common = next((i for i, (a, b) in enumerate(zip(prev, ids, strict=False)) if a != b),
                      min(len(prev), len(ids)))
        # Only the last word of the prefix (here its trailing indentation) is re-tokenized.
        assert common >= stable + len(tok.encode(SOURCE[:cursor].rstrip())), typed


def test_special_token_strings() -> None:
    strings = special_token_strings()
    assert strings == SPECIAL_TOKENS
    assert strings["fim_prefix"] == "<|fim_prefix|>" and strings["file_sep"] == "<|file_sep|>"
    strings["eot"] = "changed"
    assert special_token_strings()["eot"] == "<|endoftext|>"


def test_fim_training_example(tok: Tokenizer) -> None:
    rng = random.Random(0)
    orders = set()
    for _ in range(50):
        ids = fim_training_example(tok, "src/span.rs", SOURCE, rng, repo_name="r", context=CONTEXT)
        assert ids[-1] == tok.eot_id and ids.count(tok.eot_id) == 1
        assert ids[0] == tok.repo_name_id
        mid = ids.index(tok.fim_middle_id)
        pre, suf = ids.index(tok.fim_prefix_id), ids.index(tok.fim_suffix_id)
        orders.add("spm" if suf < pre else "psm")
        prefix = tok.decode(ids[pre + 1 : suf] if pre < suf else ids[pre + 1 : mid])
        suffix = tok.decode(ids[suf + 1 : pre] if suf < pre else ids[suf + 1 : mid])
        middle = tok.decode(ids[mid + 1 : -1])
        assert prefix + middle + suffix == SOURCE
        # The prompt part is exactly what build_prompt gives at inference time.
        req = FimRequest("src/span.rs", prefix, suffix, "r", CONTEXT)
        order = "spm" if suf < pre else "psm"
        assert ids[: mid + 1] == build_prompt(tok, req, order=order)
    assert orders == {"spm", "psm"}
    only_psm = fim_training_example(tok, "a.rs", SOURCE, random.Random(1), spm_rate=0.0)
    assert only_psm.index(tok.fim_prefix_id) < only_psm.index(tok.fim_suffix_id)


def test_document_example(tok: Tokenizer) -> None:
    ids = document_example(tok, "src/span.rs", SOURCE, repo_name="r")
    assert tok.decode(ids) == f"<|repo_name|>r\n<|file_sep|>src/span.rs\n{SOURCE}<|endoftext|>"


def test_check_prompt_format() -> None:
    assert PROMPT_FORMAT_VERSION in SUPPORTED_PROMPT_FORMATS
    check_prompt_format(PROMPT_FORMAT_VERSION, "m.gguf")
    path = str(Path("models") / "future.gguf")
    with pytest.raises(UnsupportedPromptFormat) as e:
        check_prompt_format(99, path)
    msg = str(e.value)
    assert "\n" not in msg and path in msg and "99" in msg and "supports version 1" in msg
    with pytest.raises(UnsupportedPromptFormat, match="declares no prompt-format version"):
        check_prompt_format(None, path)
    assert issubclass(UnsupportedPromptFormat, ValueError)


def test_heal_prefix_takes_off_the_last_token(tok: Tokenizer) -> None:
    from engine.prompt import heal_prefix

    for prefix in ("let x = ", "fn f() {\n        ", "let value = Operat", "self.", "let mut",
                   "fn f() {\n"):
        kept, healed = heal_prefix(tok, prefix)
        assert healed and kept + healed == prefix
        assert tok.token_bytes(tok.encode(prefix)[-1]) == healed.encode()
    assert heal_prefix(tok, "") == ("", "")


def test_unheal_takes_the_healed_text_back() -> None:
    from engine.prompt import unheal_completion

    assert unheal_completion(" foo(1);", " ") == "foo(1);"
    assert unheal_completion("OperationResult::Retry(e),", "Operat") == "ionResult::Retry(e),"
    assert unheal_completion("Oper", "Operat") == ""  # stopped inside the healed text
    assert unheal_completion("foo", "") == "foo"


def test_served_prompt_is_healed(tok: Tokenizer) -> None:
    from engine.complete import fit_prompt, served_prompt
    from engine.prompt import heal_prefix

    req = FimRequest(path="a.rs", prefix="let x = ", suffix="\n", repo_name="r")
    kept, healed = heal_prefix(tok, req.prefix)
    ids, got = served_prompt(tok, req, 10_000)
    assert got == healed
    assert ids == fit_prompt(tok, FimRequest("a.rs", kept, "\n", "r"), 10_000)
