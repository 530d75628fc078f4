"""The byte-level BPE tokenizer: training on Rust source, encoding, and its home in the GGUF file.

The tokenizer is Hugging Face `tokenizers` BPE with the GPT-2 byte-level pre-tokenizer
(`ByteLevel(add_prefix_space=False, use_regex=True)`), which llama.cpp reproduces as
`tokenizer.ggml.model = "gpt2"`, `tokenizer.ggml.pre = "gpt-2"` (shared/docs/llama-cpp-notes.md §4).

Invariants:
- Ids 0..6 are the special tokens of `SPECIAL_TOKENS` (CONTROL type in the GGUF), in that
  order; ids 7..262 are the 256 byte symbols; merged tokens follow.
- Every byte symbol is in the vocabulary (llama.cpp silently drops a missing one) and no
  token is longer than `MAX_TOKEN_BYTES` bytes (llama-cpp-python's detokenize buffer).
- `encode` never turns text into a special token: Rust source that contains the text
  `<|endoftext|>` stays text, as llama.cpp does with `parse_special=False`.
- No BOS is ever added; `<|endoftext|>` is BOS, EOS and EOT.
- The GGUF file is the single source of truth: `from_gguf` rebuilds the tokenizer from
  `tokenizer.ggml.tokens`, `merges` and `token_type`. `save`/`load` (HF json) exist only as
  a cache for the training pipeline.

This module must not import torch (the llama.cpp backend runs without it).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path

import gguf
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

logger = logging.getLogger(__name__)

# Role -> token text. The order fixes the ids 0..6.
SPECIAL_TOKENS: dict[str, str] = {
    "eot": "<|endoftext|>",
    "fim_prefix": "<|fim_prefix|>",
    "fim_suffix": "<|fim_suffix|>",
    "fim_middle": "<|fim_middle|>",
    "fim_pad": "<|fim_pad|>",
    "file_sep": "<|file_sep|>",
    "repo_name": "<|repo_name|>",
}
N_SPECIAL = len(SPECIAL_TOKENS)
N_BYTES = 256
# llama-cpp-python detokenizes each token into a 32-byte buffer (notes §4).
MAX_TOKEN_BYTES = 32
GGUF_TOKENIZER_MODEL = "gpt2"
GGUF_TOKENIZER_PRE = "gpt-2"

_TOKENS_KEY = gguf.Keys.Tokenizer.LIST
_TYPES_KEY = gguf.Keys.Tokenizer.TOKEN_TYPE
_MERGES_KEY = gguf.Keys.Tokenizer.MERGES
_MODEL_KEY = gguf.Keys.Tokenizer.MODEL
_PRE_KEY = gguf.Keys.Tokenizer.PRE


class TokenizerError(ValueError):
    """A tokenizer (trained, loaded or read from a GGUF) that breaks an invariant above."""


@cache
def _byte_to_char() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(N_BYTES):
        if b not in table:
            table[b] = chr(N_BYTES + extra)
            extra += 1
    return table


@cache
def _char_to_byte() -> dict[str, int]:
    return {c: b for b, c in _byte_to_char().items()}


def _piece_bytes(piece: str) -> bytes:
    """Bytes of a byte-level piece such as "Ġfn"."""
    table = _char_to_byte()
    try:
        return bytes(table[c] for c in piece)
    except KeyError as e:
        raise TokenizerError(f"Expected a byte-level token, got {piece!r}") from e


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _special_added_tokens() -> list[AddedToken]:
    return [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS.values()]


def _rust_files(source: str | os.PathLike[str] | Iterable[os.PathLike[str] | str]) -> list[Path]:
    if isinstance(source, str | os.PathLike):
        root = Path(source)
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise FileNotFoundError(f"Expected a directory of .rs files, got {root}")
        return sorted(p for p in root.rglob("*.rs") if p.is_file())
    return [Path(p) for p in source]


def _read_texts(files: Sequence[Path]) -> Iterator[str]:
    for path in files:
        # Invalid UTF-8 is rare in Rust source; U+FFFD keeps training going.
        yield path.read_bytes().decode("utf-8", errors="replace")


def train_tokenizer(
    source: str | os.PathLike[str] | Iterable[os.PathLike[str] | str],
    vocab_size: int,
    *,
    show_progress: bool = False,
) -> Tokenizer:
    """Train the byte-level BPE tokenizer on Rust source.

    `source` is a directory (walked recursively for `*.rs`), a single file, or an iterable
    of files. The result may have fewer than `vocab_size` tokens when the corpus is small.
    """
    minimum = N_SPECIAL + N_BYTES
    if vocab_size < minimum:
        raise TokenizerError(f"Expected vocab_size >= {minimum}, got {vocab_size}")
    files = _rust_files(source)
    if not files:
        raise TokenizerError(f"Expected at least one .rs file in {source}, got none")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = _pre_tokenizer()
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_special_added_tokens(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=MAX_TOKEN_BYTES,
        show_progress=show_progress,
    )
    hf.train_from_iterator(_read_texts(files), trainer=trainer, length=len(files))
    tok = Tokenizer(hf)
    logger.info("trained tokenizer: %d tokens from %d files", tok.vocab_size, len(files))
    return tok


class Tokenizer:
    """Byte-level BPE over HF `tokenizers` with our special tokens and GGUF I/O."""

    def __init__(self, hf: HFTokenizer) -> None:
        self._hf = hf
        # Special-token text in user code is encoded as ordinary text.
        self._hf.encode_special_tokens = True
        vocab = hf.get_vocab(with_added_tokens=True)
        n = len(vocab)
        if sorted(vocab.values()) != list(range(n)):
            raise TokenizerError(f"Expected contiguous token ids 0..{n - 1}")
        self._pieces: list[str] = [""] * n
        for piece, i in vocab.items():
            self._pieces[i] = piece
        self.special_ids: dict[str, int] = {}
        for i, text in enumerate(SPECIAL_TOKENS.values()):
            if self._pieces[i] != text:
                raise TokenizerError(f"Expected {text!r} at id {i}, got {self._pieces[i]!r}")
            self.special_ids[text] = i
        specials = set(SPECIAL_TOKENS.values())
        self._bytes: list[bytes] = [
            p.encode("utf-8") if p in specials else _piece_bytes(p) for p in self._pieces
        ]
        missing = set(_byte_to_char().values()) - set(self._pieces)
        if missing:
            raise TokenizerError(f"Expected all 256 byte symbols, {len(missing)} are missing")
        longest = max(len(b) for b in self._bytes)
        if longest > MAX_TOKEN_BYTES:
            raise TokenizerError(
                f"Expected tokens of at most {MAX_TOKEN_BYTES} bytes, got {longest}"
            )

    # -- ids ---------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def eot_id(self) -> int:
        return self.special_ids[SPECIAL_TOKENS["eot"]]

    @property
    def bos_id(self) -> int:
        """Declared in the GGUF only; never added to a prompt."""
        return self.eot_id

    @property
    def eos_id(self) -> int:
        return self.eot_id

    @property
    def fim_prefix_id(self) -> int:
        return self.special_ids[SPECIAL_TOKENS["fim_prefix"]]

    @property
    def fim_suffix_id(self) -> int:
        return self.special_ids[SPECIAL_TOKENS["fim_suffix"]]

    @property
    def fim_middle_id(self) -> int:
        return self.special_ids[SPECIAL_TOKENS["fim_middle"]]

    @property
    def fim_pad_id(self) -> int:
        return self.special_ids[SPECIAL_TOKENS["fim_pad"]]

    @property
    def file_sep_id(self) -> int:
        return self.special_ids[SPECIAL_TOKENS["file_sep"]]

    @property
    def repo_name_id(self) -> int:
        return self.special_ids[SPECIAL_TOKENS["repo_name"]]

    @property
    def eog_ids(self) -> frozenset[int]:
        """Ids that end generation: llama.cpp adds fim_pad, fim_rep and fim_sep to EOT."""
        return frozenset({self.eot_id, self.fim_pad_id, self.file_sep_id, self.repo_name_id})

    # -- text --------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token text is encoded as plain text, no BOS."""
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts, in parallel inside `tokenizers`."""
        return [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token; special tokens give their text. A token may end mid-character."""
        return self._bytes[token_id]

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of `ids` (invalid UTF-8 becomes U+FFFD); special tokens render as their text."""
        specials = set(self.special_ids.values()) if skip_special else set()
        data = b"".join(self._bytes[i] for i in ids if i not in specials)
        return data.decode("utf-8", errors="replace")

    def id_to_piece(self, token_id: int) -> str:
        """The token as stored in the GGUF (byte-level form such as "Ġfn")."""
        return self._pieces[token_id]

    # -- GGUF --------------------------------------------------------------------------------

    def _merges(self) -> list[str]:
        merges = json.loads(self._hf.to_str())["model"]["merges"]
        # tokenizers >= 0.20 stores pairs; older versions store "a b" strings.
        return [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in merges]

    def token_types(self) -> list[int]:
        """`gguf.TokenType` per id: CONTROL for special tokens, NORMAL otherwise."""
        types = [int(gguf.TokenType.NORMAL)] * self.vocab_size
        for i in self.special_ids.values():
            types[i] = int(gguf.TokenType.CONTROL)
        return types

    def add_to_gguf(self, writer: gguf.GGUFWriter) -> None:
        """Write the tokenizer.ggml.* keys (vocabulary, merges, types, special and FIM ids)."""
        writer.add_tokenizer_model(GGUF_TOKENIZER_MODEL)
        writer.add_tokenizer_pre(GGUF_TOKENIZER_PRE)
        writer.add_token_list(self._pieces)
        writer.add_token_types(self.token_types())
        writer.add_token_merges(self._merges())
        writer.add_bos_token_id(self.bos_id)
        writer.add_eos_token_id(self.eos_id)
        writer.add_eot_token_id(self.eot_id)
        writer.add_pad_token_id(self.fim_pad_id)
        writer.add_add_bos_token(False)
        writer.add_add_eos_token(False)
        keys = gguf.Keys.Tokenizer
        writer.add_uint32(keys.FIM_PRE_ID, self.fim_prefix_id)
        writer.add_uint32(keys.FIM_SUF_ID, self.fim_suffix_id)
        writer.add_uint32(keys.FIM_MID_ID, self.fim_middle_id)
        writer.add_uint32(keys.FIM_PAD_ID, self.fim_pad_id)
        writer.add_uint32(keys.FIM_REP_ID, self.repo_name_id)
        writer.add_uint32(keys.FIM_SEP_ID, self.file_sep_id)

    @classmethod
    def from_gguf(cls, reader: gguf.GGUFReader) -> Tokenizer:
        """Rebuild the tokenizer from a GGUF file's tokenizer.ggml.* keys."""

        def field(key: str):
            f = reader.get_field(key)
            if f is None:
                raise TokenizerError(f"Expected key {key} in the GGUF file, it is missing")
            return f.contents()

        model, pre = field(_MODEL_KEY), field(_PRE_KEY)
        if (model, pre) != (GGUF_TOKENIZER_MODEL, GGUF_TOKENIZER_PRE):
            raise TokenizerError(
                f"Expected tokenizer {GGUF_TOKENIZER_MODEL}/{GGUF_TOKENIZER_PRE}, got {model}/{pre}"
            )
        pieces: list[str] = field(_TOKENS_KEY)
        types: list[int] = field(_TYPES_KEY)
        merges: list[str] = field(_MERGES_KEY)
        if len(types) != len(pieces):
            raise TokenizerError(f"Expected {len(pieces)} token types, got {len(types)}")
        vocab = {p: i for i, p in enumerate(pieces)}
        if len(vocab) != len(pieces):
            raise TokenizerError("Expected unique tokens in tokenizer.ggml.tokens")
        pairs = []
        for m in merges:
            a, sep, b = m.partition(" ")
            if not sep or not a or not b:
                raise TokenizerError(f"Expected a merge 'a b', got {m!r}")
            pairs.append((a, b))
        control = int(gguf.TokenType.CONTROL)
        for i, text in enumerate(SPECIAL_TOKENS.values()):
            if i >= len(pieces) or pieces[i] != text or types[i] != control:
                raise TokenizerError(f"Expected CONTROL token {text!r} at id {i}")
        hf = HFTokenizer(models.BPE(vocab=vocab, merges=pairs))
        hf.pre_tokenizer = _pre_tokenizer()
        hf.decoder = decoders.ByteLevel()
        hf.add_special_tokens(_special_added_tokens())
        return cls(hf)

    # -- HF json cache -----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the HF json (training cache only; models carry the tokenizer in the GGUF)."""
        self._hf.save(str(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        return cls(HFTokenizer.from_file(str(path)))
