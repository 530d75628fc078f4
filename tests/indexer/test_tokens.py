"""Piece counting (`indexer.tokens`): the cut rule against the real tokenizer, and the caches."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.tokenizer import Tokenizer, train_tokenizer
from indexer.context import ContextAssembler, chunk_count_key
from indexer.fim import LineCounter
from indexer.tokens import TokenCounter, line_pieces, word_pieces
from tests.indexer.ctx_fixtures import SPECIAL, cursor_at, load_crate

ROOT = Path(__file__).resolve().parents[2]
#: Real Rust files in the repository (fixtures and the std stub).
RUST_FILES = sorted(p for d in ("tests", "indexer") for p in (ROOT / d).rglob("*.rs"))
#: The corpus tokenizer and crate of the benchmarks, when this checkout has them.
CORPUS_TOKENIZER = ROOT / ".cache" / "corpus" / "tokenizer-4096.json"
CORPUS_CRATE = ROOT / ".cache" / "corpus" / "unpacked" / "librust-tokio-dev_1.24.2-1"

TRICKY = [
    "",
    "\n",
    "fn main() {\n    println!(\"hi\");\n}\n",
    "let größe = \"🦀 crab 👨‍👩‍👧\"; // 変数 and café\r\n\tlet é = 'ñ';  \n",
    "const PAD: &str = \"" + " " * 300 + "\";\n" + "\t" * 70 + "x\n" + " " * 90,
    "a\n\n\n    \n\t\n   b  \n\n",
    "trailing spaces   \nnext\t\t\nlast   ",
    "/// <|endoftext|> <|file_sep|>src/lib.rs\n<|fim_prefix|>x<|fim_middle|>\n",
    "\u00a0nbsp\u2028line\u0301 \u3000ideographic\x0bvt\x0cff\x1cfs \x85nel",
    "it's they'll we've I'm 'static 's",
    "x = 1_000_000u64; y = 0xFFu8 + 3.5e-3;    z=--> ->>= ::<>",
]


def _corpus_texts(limit: int = 40) -> list[str]:
    files = sorted(CORPUS_CRATE.rglob("*.rs"))[:limit] if CORPUS_CRATE.is_dir() else []
    return [p.read_bytes().decode("utf-8", "replace") for p in files]


def _random_texts(n: int, seed: int = 0) -> list[str]:
    """Seeded mixes of code fragments, unicode and whitespace runs."""
    rng = random.Random(seed)
    alphabet = list(" \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000abcXYZ09_'\"(){}<>;:.,é変🦀\u0301")
    alphabet += ["    ", "\n\n", "fn ", "'s", "'ll", "<|endoftext|>", "  \n", "\r\n"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60)))
            for _ in range(n)]


@pytest.fixture(scope="module", params=["trained", "corpus"])
def tok(request: pytest.FixtureRequest) -> Tokenizer:
    if request.param == "corpus" and CORPUS_TOKENIZER.is_file():
        return Tokenizer.load(CORPUS_TOKENIZER)
    return train_tokenizer(RUST_FILES, 1024)


def _exact(tok: Tokenizer, text: str) -> int:
    return len(tok.encode(text))


def test_pieces_rebuild_the_text() -> None:
    for text in TRICKY + _random_texts(200):
        assert "".join(line_pieces(text)) == text
        assert "".join(word_pieces(text)) == text
        for p in line_pieces(text)[1:]:
            assert p.startswith("\n")


def test_piece_counts_sum_to_the_exact_count(tok: Tokenizer) -> None:
    texts = TRICKY + [p.read_bytes().decode("utf-8", "replace") for p in RUST_FILES]
    texts += _corpus_texts() + _random_texts(500)
    bad = []
    for text in texts:
        exact = _exact(tok, text)
        by_word = sum(_exact(tok, p) for p in word_pieces(text))
        by_line = sum(_exact(tok, p) for p in line_pieces(text))
        if not exact == by_word == by_line:
            bad.append((text[:80], exact, by_word, by_line))
    assert not bad


def test_cutting_elsewhere_would_be_wrong(tok: Tokenizer) -> None:
    """The rule is not vacuous: cutting inside a whitespace run changes the count, so the
    counter never cuts before whitespace that follows whitespace."""
    assert _exact(tok, "a\n        b") < _exact(tok, "a\n    ") + _exact(tok, "    b")
    assert line_pieces("x  \n\n    y\nz") == ["x  \n\n    y", "\nz"]
    assert word_pieces("a\n        b  c") == ["a", "\n        b", "  c"]


def test_counter_is_exact_and_caches_pieces(tok: Tokenizer) -> None:
    calls: list[list[str]] = []

    def batch(texts: list[str]) -> list[int]:
        calls.append(list(texts))
        return [len(ids) for ids in tok.encode_batch(texts)]

    counter = TokenCounter(lambda s: _exact(tok, s), count_batch=batch, additive=True)
    texts = [p.read_bytes().decode("utf-8", "replace") for p in RUST_FILES]
    assert counter.count_many(texts) == [_exact(tok, t) for t in texts]
    assert len(calls) == 1  # one tokenizer batch for every piece not seen before
    n = counter.tokenized
    assert [counter(t) for t in texts] == [_exact(tok, t) for t in texts]
    assert counter.tokenized == n and len(calls) == 1
    assert all(counter.cached(t) == _exact(tok, t) for t in texts)
    # A new line built from known words costs no tokenizer call.
    assert counter.cached("fn main() {\n    let unseen_line = 1;\n}") is None
    counter("fn main() {\n    let x = 1;\n}\n")
    assert counter.tokenized >= n


def test_non_additive_counter_counts_whole_texts() -> None:
    seen: list[str] = []
    counter = TokenCounter(lambda s: seen.append(s) or len(s) // 3)
    assert counter("abc def\nghi") == 3 and counter("abc def\nghi") == 3
    assert seen == ["abc def\nghi"]
    assert counter.count_many(["xyzxyz", "abc def\nghi"]) == [2, 3]
    assert counter.cached("never") is None and counter("") == 0


def test_caches_are_bounded(tok: Tokenizer) -> None:
    counter = TokenCounter(lambda s: _exact(tok, s), additive=True, max_entries=50)
    for i in range(300):
        text = f"let v{i} = {i};\n"
        assert counter(text) == _exact(tok, text)
    assert len(counter._lines) <= 51 and len(counter._words) <= 50 + 5


def test_batch_larger_than_the_cache_is_one_tokenizer_batch(tok: Tokenizer) -> None:
    calls: list[list[str]] = []

    def batch(texts: list[str]) -> list[int]:
        calls.append(list(texts))
        return [len(ids) for ids in tok.encode_batch(texts)]

    counter = TokenCounter(lambda s: _exact(tok, s), count_batch=batch, additive=True,
                           max_entries=20)
    texts = [f"fn f{i}() {{\n    g{i}(x{i});\n}}" for i in range(100)]
    assert counter.count_many(texts) == [_exact(tok, t) for t in texts]
    assert len(calls) == 1  # no recount, text by text, after the cache overflowed


def test_line_counter_batches_misses() -> None:
    batches: list[list[str]] = []
    counter = LineCounter(len, count_many=lambda xs: batches.append(list(xs)) or
                          [len(x) for x in xs])
    assert counter.lines(["ab\n", "c\n", "ab\n", ""]) == [3, 2, 3, 0]
    assert len(batches) == 1 and sorted(batches[0]) == ["ab\n", "c\n"]
    assert counter.lines(["c\n", "ab\n"]) == [2, 3] and len(batches) == 1


class _CountCache:
    """The store's token-count cache (`indexer.store.Index.get/put_token_count`)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], int] = {}

    def get_token_count(self, key: str, counter: str) -> int | None:
        return self.rows.get((key, counter))

    def put_token_count(self, key: str, counter: str, n: int) -> None:
        self.rows[(key, counter)] = n


def test_assembler_chunk_counts_are_exact_and_stored(tok: Tokenizer) -> None:
    index = load_crate("ctx_geo")
    cache = _CountCache()
    index.get_token_count = cache.get_token_count  # type: ignore[attr-defined]
    index.put_token_count = cache.put_token_count  # type: ignore[attr-defined]
    counter = TokenCounter(lambda s: _exact(tok, s),
                           count_batch=lambda xs: [len(i) for i in tok.encode_batch(xs)],
                           additive=True, name="test-bpe")
    asm = ContextAssembler(index, counter, SPECIAL, repo_name="geo")
    line, col = cursor_at(index, "src/render.rs", "match shape")
    ctx = asm.assemble("src/render.rs", index.text("src/render.rs"), line, col, budget=4000)
    assert ctx.chunks
    for c in ctx.chunks:
        assert c.tokens == 1 + _exact(tok, f"{c.path}\n{c.text}\n")
    assert ctx.repo_tokens == 1 + _exact(tok, "geo\n") + sum(c.tokens for c in ctx.chunks)
    assert cache.rows and all(k[1] == "test-bpe" for k in cache.rows)
    # A new assembler (a restart) takes the stored counts instead of tokenizing.
    stored = [c for c in ctx.chunks
              if (chunk_count_key(f"{c.path}\n{c.text}\n"), "test-bpe") in cache.rows]
    assert stored
    calls: list[str] = []
    fresh = TokenCounter(lambda s: calls.append(s) or _exact(tok, s), additive=True,
                         name="test-bpe")
    asm2 = ContextAssembler(index, fresh, SPECIAL, repo_name="geo")
    assert [asm2.chunk_tokens(c.path, c.text) for c in stored] == [c.tokens for c in stored]
    assert calls == []
