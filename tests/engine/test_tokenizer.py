"""Tokenizer: training invariants, special tokens stay text, GGUF and json round trips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from engine.tokenizer import (
    MAX_TOKEN_BYTES,
    N_BYTES,
    N_SPECIAL,
    SPECIAL_TOKENS,
    Tokenizer,
    TokenizerError,
    train_tokenizer,
)

CORPUS = [
    "fn main() {\n    println!(\"hello, world\");\n}\n",
    "pub struct Point { x: f64, y: f64 }\n\nimpl Point {\n    pub fn norm(&self) -> f64 {\n"
    "        (self.x * self.x + self.y * self.y).sqrt()\n    }\n}\n",
    "use std::collections::HashMap;\r\n\r\nfn count(s: &str) -> HashMap<char, usize> {\r\n"
    "\tlet mut m = HashMap::new();\r\n\tfor c in s.chars() {\r\n"
    "\t\t*m.entry(c).or_insert(0) += 1;\r\n"
    "\t}\r\n\tm\r\n}\r\n",
    "let größe = \"🦀 crab 👨‍👩‍👧\"; // 変数 and café\n",
    "const PAD: &str = \"" + " " * 200 + "\";\n",
    "/// Looks special: <|fim_prefix|> <|endoftext|> <|file_sep|>\nfn f<'a>(x: &'a str) {}\n",
    "impl<'de> Deserialize<'de> for Foo { fn deserialize() {} }\n",
]
TRICKY = [
    "<|endoftext|>",
    "x<|fim_prefix|>y<|fim_suffix|>z<|fim_middle|>",
    "<|repo_name|>\n<|file_sep|>src/lib.rs\n<|fim_pad|>",
    "let s = \"🦀🦀🦀\";\r\n\t\tlet é = 'ñ';",
    " " * 300 + "\n" + "\t" * 70,
    "\u00a0nbsp\u2028line\u0301",
    "",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    root = tmp_path_factory.mktemp("corpus")
    (root / "nested" / "deeper").mkdir(parents=True)
    for i, text in enumerate(CORPUS * 20):
        sub = root / "nested" / "deeper" if i % 2 else root
        (sub / f"f{i}.rs").write_text(text, encoding="utf-8", newline="")
    (root / "ignored.txt").write_text("zzzzzzzzzzzz " * 100)
    return train_tokenizer(root, 600)


def write_vocab_gguf(tok: Tokenizer, path: Path) -> None:
    w = gguf.GGUFWriter(path, "cohere2")
    tok.add_to_gguf(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_layout(tok: Tokenizer) -> None:
    assert N_SPECIAL < tok.vocab_size <= 600
    assert [tok.id_to_piece(i) for i in range(N_SPECIAL)] == list(SPECIAL_TOKENS.values())
    ids = [tok.eot_id, tok.fim_prefix_id, tok.fim_suffix_id, tok.fim_middle_id, tok.fim_pad_id,
           tok.file_sep_id, tok.repo_name_id]
    assert ids == list(range(N_SPECIAL))
    assert tok.special_ids == {t: i for i, t in enumerate(SPECIAL_TOKENS.values())}
    assert tok.bos_id == tok.eos_id == tok.eot_id
    assert tok.eog_ids == {tok.eot_id, tok.fim_pad_id, tok.file_sep_id, tok.repo_name_id}
    # The 256 byte symbols follow the special tokens, one byte each.
    byte_tokens = [tok.token_bytes(i) for i in range(N_SPECIAL, N_SPECIAL + N_BYTES)]
    assert sorted(byte_tokens) == [bytes([b]) for b in range(N_BYTES)]
    assert max(len(tok.token_bytes(i)) for i in range(tok.vocab_size)) <= MAX_TOKEN_BYTES
    # The ignored .txt file did not feed training.
    assert "zzzzzzzzzzzz" not in {tok.id_to_piece(i) for i in range(tok.vocab_size)}


def test_long_whitespace_is_capped_but_merged(tok: Tokenizer) -> None:
    ids = tok.encode(" " * 200)
    assert all(len(tok.token_bytes(i)) <= MAX_TOKEN_BYTES for i in ids)
    assert len(ids) < 20


@pytest.mark.parametrize("text", CORPUS + TRICKY)
def test_round_trip_and_specials_stay_text(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
    assert not set(ids) & set(tok.special_ids.values())


def test_encode_batch_and_decode_special(tok: Tokenizer) -> None:
    assert tok.encode_batch(TRICKY) == [tok.encode(t) for t in TRICKY]
    ids = [tok.fim_prefix_id, *tok.encode("fn"), tok.eot_id]
    assert tok.decode(ids) == "<|fim_prefix|>fn<|endoftext|>"
    assert tok.decode(ids, skip_special=True) == "fn"


def test_gguf_round_trip(tok: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    write_vocab_gguf(tok, path)
    reader = gguf.GGUFReader(path)
    keys = gguf.Keys.Tokenizer

    def value(key: str):
        return reader.get_field(key).contents()

    assert value(keys.MODEL) == "gpt2" and value(keys.PRE) == "gpt-2"
    assert value(keys.TOKEN_TYPE)[:N_SPECIAL] == [int(gguf.TokenType.CONTROL)] * N_SPECIAL
    assert set(value(keys.TOKEN_TYPE)[N_SPECIAL:]) == {int(gguf.TokenType.NORMAL)}
    assert value(keys.ADD_BOS) is False and value(keys.ADD_EOS) is False
    assert (value(keys.BOS_ID), value(keys.EOS_ID), value(keys.EOT_ID)) == (0, 0, 0)
    fim = [keys.FIM_PRE_ID, keys.FIM_SUF_ID, keys.FIM_MID_ID, keys.FIM_PAD_ID, keys.FIM_REP_ID,
           keys.FIM_SEP_ID]
    assert [value(k) for k in fim] == [tok.fim_prefix_id, tok.fim_suffix_id, tok.fim_middle_id,
                                       tok.fim_pad_id, tok.repo_name_id, tok.file_sep_id]
    for k in [keys.BOS_ID, *fim]:
        assert reader.get_field(k).types == [gguf.GGUFValueType.UINT32]
    back = Tokenizer.from_gguf(reader)
    assert back.vocab_size == tok.vocab_size
    assert back.special_ids == tok.special_ids
    for text in CORPUS + TRICKY:
        assert back.encode(text) == tok.encode(text)


def test_json_cache_round_trip(tok: Tokenizer, tmp_path: Path) -> None:
    tok.save(tmp_path / "tok.json")
    back = Tokenizer.load(tmp_path / "tok.json")
    for text in CORPUS + TRICKY:
        assert back.encode(text) == tok.encode(text)


def test_from_gguf_rejects_foreign_tokenizer(tok: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    w = gguf.GGUFWriter(path, "cohere2")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    with pytest.raises(TokenizerError, match="Expected tokenizer gpt2/gpt-2"):
        Tokenizer.from_gguf(gguf.GGUFReader(path))


def test_train_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="vocab_size"):
        train_tokenizer(tmp_path, 100)
    with pytest.raises(TokenizerError, match=r"\.rs"):
        train_tokenizer(tmp_path, 1000)
    with pytest.raises(FileNotFoundError):
        train_tokenizer(tmp_path / "missing", 1000)


def test_train_from_file_list(tmp_path: Path) -> None:
    files = []
    for i, text in enumerate(CORPUS):
        files.append(tmp_path / f"{i}.rs")
        files[-1].write_text(text, encoding="utf-8")
    tok = train_tokenizer(files, 300)
    assert tok.decode(tok.encode(CORPUS[3])) == CORPUS[3]


def test_no_torch_import() -> None:
    code = "import sys, engine.tokenizer, engine.prompt; assert 'torch' not in sys.modules"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
