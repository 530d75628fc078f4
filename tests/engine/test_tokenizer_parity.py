"""Parity point 1: llama.cpp tokenizes exactly like our HF tokenizer, read from the same GGUF.

A tokenizer is trained here on a few hundred generated Rust snippets (unicode identifiers,
emoji, CRLF, tabs, long whitespace runs, text that looks like special tokens), written to a
vocab-only `cohere2` GGUF and loaded by llama-cpp-python with `vocab_only=True`.
"""

from __future__ import annotations

import ctypes
import os
import random
from pathlib import Path

import gguf
import pytest

from engine.tokenizer import SPECIAL_TOKENS, Tokenizer, train_tokenizer

try:
    import llama_cpp
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("llama-cpp-python is not installed", allow_module_level=True)

pytestmark = pytest.mark.llama

IDENTS = ["x", "value", "größe", "café", "変数", "naïve", "ñandú", "Ωmega", "π", "_tmp", "r#type",
          "HashMap", "snake_case_name", "CamelCase", "x1", "データ", "σ2"]
STRINGS = ["hello", "🦀 crab", "👨‍👩‍👧 family", "👍🏽", "e\u0301", "日本語", "مرحبا", "tab\there",
           "\\n escaped", "<|endoftext|>", "<|fim_prefix|>x<|fim_suffix|>", "<|file_sep|>",
           "<|repo_name|>", "<|fim_middle|><|fim_pad|>", "<|endoftext", "|>", "{}", "ＦＵＬＬ",
           "²³ ٣ Ⅻ", "\u00a0nbsp", "zero\u200bwidth", "🇩🇪", "a\u2028b"]
TEMPLATES = [
    "fn {a}({b}: u32) -> u32 {{\n    {b} + 1\n}}\n",
    'let {a} = "{s}";\n',
    "pub struct {A} {{\n\t{a}: Vec<String>,\n\t{b}: Option<Box<{A}>>,\n}}\n",
    "impl<'a> {A}<'a> {{ fn get(&'a self) -> &'a str {{ &self.{a} }} }}\n",
    "impl<'de, 're, 'll> Deserialize<'de> for {A} {{}}\n",
    "// {s}\n/// Doc: `{a}` and {s}\n",
    "match {a} {{\r\n    Some(v) => v,\r\n    None => {n},\r\n}}\r\n",
    "let {a}: [u8; {n}] = [0x{h}; {n}];{ws}\n",
    'println!("{{}} {{:?}} {s}", {a}, {b});\n',
    "const {A}: f64 = {n}.{n}e-3;\t\t// {s}\n",
    'let raw = r#"{s} "quoted" {s}"#;\n',
    "let c = '{c}';{ws}let d = '\\u{{1F980}}';\n",
    "{ws}{a}{ws}={ws}{b};{ws}\n",
    "#[derive(Debug, Clone)]\nenum {A} {{ {B}, {C}({a}) }}\n",
    "mod {a} {{\n{ws}use super::*;\n\n\n\n{ws}fn f() {{}}\n}}\n",
]
WHITESPACE = ["", " ", "  ", "\t", "\t\t\t", " " * 17, " " * 40, " " * 100, "\r\n", "\n\n\n",
              " \t \t", "\r\n    ", "\t" * 40, " \n \n ", "\u3000", "\u000b", "\u000c"]


def _snippets(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(IDENTS, 2)
        out.append(rng.choice(TEMPLATES).format(
            a=a, b=b, A=a.capitalize(), B=b.capitalize(), C="Z" + a, s=rng.choice(STRINGS),
            n=rng.randint(0, 10**rng.randint(0, 12)), h=f"{rng.getrandbits(16):X}",
            c=rng.choice("aé🦀\\'"), ws=rng.choice(WHITESPACE),
        ))
    # Multi-snippet texts mix line endings and long runs across token boundaries.
    for _ in range(n // 4):
        out.append(rng.choice(WHITESPACE).join(rng.sample(out[:n], 4)))
    return out


SNIPPETS = _snippets(300)
EXTRA = ["", " ", "\n", "\r\n", " " * 257, "\t" * 65 + "x", "<|endoftext|>" * 3,
         "".join(SPECIAL_TOKENS.values()), "🦀" * 20, "x" * 100, "1234567890" * 5]


def _write_vocab_gguf(tok: Tokenizer, path: Path) -> None:
    """A tokenizer-only cohere2 file: llama.cpp reads the hparams even with vocab_only."""
    arch = "cohere2"
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(2)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_eps(1e-5)
    w.add_sliding_window(4)
    w.add_uint32(gguf.Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=arch), 2)
    w.add_logit_scale(1.0)
    w.add_rope_freq_base(10000.0)
    tok.add_to_gguf(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tokenizer, llama_cpp.Llama]:
    root = tmp_path_factory.mktemp("parity")
    for i in range(0, len(SNIPPETS), 10):
        (root / f"s{i}.rs").write_text("".join(SNIPPETS[i : i + 10]), encoding="utf-8",
                                       newline="")
    trained = train_tokenizer(root, 2000)
    path = root / "vocab.gguf"
    _write_vocab_gguf(trained, path)
    # The engine's tokenizer comes from the GGUF, so that is the one held to llama.cpp.
    tok = Tokenizer.from_gguf(gguf.GGUFReader(path))
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return tok, llm


def _llama_piece(llm: llama_cpp.Llama, token: int, special: bool) -> bytes:
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    buf = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    assert 0 <= n <= len(buf)
    return buf.raw[:n]


def test_tokenize_parity(pair: tuple[Tokenizer, llama_cpp.Llama]) -> None:
    tok, llm = pair
    assert llm.n_vocab() == tok.vocab_size
    mismatches = []
    for text in SNIPPETS + EXTRA:
        ours = tok.encode(text)
        theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if ours != theirs:
            mismatches.append(text)
        # llama-cpp-python detokenizes through a 32-byte buffer per token.
        assert llm.detokenize(theirs) == text.encode("utf-8")
        assert tok.decode(ours) == text
    assert not mismatches, f"{len(mismatches)} snippets differ, first: {mismatches[0]!r}"
    # The test means something only if many merges were learned.
    assert tok.vocab_size > 800


def test_every_token_has_the_same_bytes(pair: tuple[Tokenizer, llama_cpp.Llama]) -> None:
    tok, llm = pair
    specials = set(tok.special_ids.values())
    for i in range(tok.vocab_size):
        if i in specials:
            assert _llama_piece(llm, i, special=False) == b""
            assert _llama_piece(llm, i, special=True) == tok.token_bytes(i)
        else:
            assert _llama_piece(llm, i, special=False) == tok.token_bytes(i), i


def test_special_tokens_read_back(pair: tuple[Tokenizer, llama_cpp.Llama]) -> None:
    tok, llm = pair
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    assert llama_cpp.llama_vocab_bos(vocab) == tok.bos_id
    assert llama_cpp.llama_vocab_eos(vocab) == tok.eos_id
    assert llama_cpp.llama_vocab_eot(vocab) == tok.eot_id
    assert llama_cpp.llama_vocab_fim_pre(vocab) == tok.fim_prefix_id
    assert llama_cpp.llama_vocab_fim_suf(vocab) == tok.fim_suffix_id
    assert llama_cpp.llama_vocab_fim_mid(vocab) == tok.fim_middle_id
    assert llama_cpp.llama_vocab_fim_pad(vocab) == tok.fim_pad_id
    assert llama_cpp.llama_vocab_fim_rep(vocab) == tok.repo_name_id
    assert llama_cpp.llama_vocab_fim_sep(vocab) == tok.file_sep_id
    assert not llama_cpp.llama_vocab_get_add_bos(vocab)
    assert not llama_cpp.llama_vocab_get_add_eos(vocab)
    specials = set(tok.special_ids.values())
    for i in range(tok.vocab_size):
        assert llama_cpp.llama_vocab_is_control(vocab, i) == (i in specials), i
    eog = {i for i in range(tok.vocab_size) if llama_cpp.llama_vocab_is_eog(vocab, i)}
    assert eog == tok.eog_ids
    # With special=True llama.cpp does parse the control tokens: they are really CONTROL.
    text = "".join(SPECIAL_TOKENS.values())
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == sorted(specials)
    # add_bos_token=False: even add_bos=True adds no BOS.
    assert llm.tokenize(b"fn x", add_bos=True, special=False) == tok.encode("fn x")
