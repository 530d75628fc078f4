"""Builders for GGUF test files: a valid tiny cohere2 model, raw handcrafted files, and a
field walker that lists every header field's offset (for truncation and size mutations).

Test helpers only; the validator under test is engine/gguf_validate.py.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as T

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>",
    "<|file_sep|>", "<|repo_name|>",
)  # fmt: skip
MERGES = ("Ġ t", "i n", "Ġ in", "f n", "Ġ fn")


def byte_symbols() -> list[str]:
    """The 256 byte-level BPE symbols (GPT-2's printable remapping of every byte)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def tiny_vocab() -> list[str]:
    """Specials, then the 256 byte symbols, then one token per merge: 268 tokens."""
    return [*SPECIAL_TOKENS, *byte_symbols(), *(m.replace(" ", "") for m in MERGES)]


class KV(NamedTuple):
    """A key's value and GGUF type (sub_type for arrays)."""

    value: Any
    vtype: T
    sub_type: T | None = None


@dataclass
class Cohere2Spec:
    """A tiny valid cohere2 model; tests mutate `kv` / `tensors` before writing."""

    n_embd: int = 32
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 64
    n_layer: int = 2
    window: int = 8
    seed: int = 0
    kv: dict[str, KV] = field(default_factory=dict)
    tensors: dict[str, tuple[np.ndarray, Q]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        vocab = tiny_vocab()
        a = "cohere2."
        u32, f32 = T.UINT32, T.FLOAT32
        self.kv = {
            "general.architecture": KV("cohere2", T.STRING),
            "general.name": KV("tiny test model", T.STRING),
            a + "context_length": KV(4096, u32),
            a + "embedding_length": KV(self.n_embd, u32),
            a + "block_count": KV(self.n_layer, u32),
            a + "feed_forward_length": KV(self.n_ff, u32),
            a + "attention.head_count": KV(self.n_head, u32),
            a + "attention.head_count_kv": KV(self.n_head_kv, u32),
            a + "attention.layer_norm_epsilon": KV(1e-5, f32),
            a + "attention.sliding_window": KV(self.window, u32),
            a + "attention.sliding_window_pattern": KV(2, u32),
            a + "logit_scale": KV(1.0, f32),
            a + "rope.freq_base": KV(10000.0, f32),
            a + "rope.scaling.type": KV("none", T.STRING),
            "tokenizer.ggml.model": KV("gpt2", T.STRING),
            "tokenizer.ggml.pre": KV("gpt-2", T.STRING),
            "tokenizer.ggml.tokens": KV(vocab, T.ARRAY, T.STRING),
            "tokenizer.ggml.token_type": KV(
                [3] * len(SPECIAL_TOKENS) + [1] * (len(vocab) - len(SPECIAL_TOKENS)),
                T.ARRAY, T.INT32,
            ),
            "tokenizer.ggml.merges": KV(list(MERGES), T.ARRAY, T.STRING),
            "tokenizer.ggml.bos_token_id": KV(0, u32),
            "tokenizer.ggml.eos_token_id": KV(0, u32),
            "tokenizer.ggml.fim_pre_token_id": KV(1, u32),
            "tokenizer.ggml.fim_suf_token_id": KV(2, u32),
            "tokenizer.ggml.fim_mid_token_id": KV(3, u32),
            "tokenizer.ggml.add_bos_token": KV(False, T.BOOL),
            "tokenizer.ggml.add_eos_token": KV(False, T.BOOL),
            "hybrid_lsp.prompt_format_version": KV(1, u32),
        }  # fmt: skip
        rng = np.random.default_rng(self.seed)
        d, hd = self.n_embd, self.n_embd // self.n_head

        def mat(rows: int, cols: int, qtype: Q = Q.F32) -> tuple[np.ndarray, Q]:
            return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.05, qtype)

        self.tensors = {
            "token_embd.weight": mat(len(vocab), d),
            "output_norm.weight": (np.ones(d, np.float32), Q.F32),
        }
        for i in range(self.n_layer):
            b = f"blk.{i}."
            self.tensors |= {
                b + "attn_norm.weight": (np.ones(d, np.float32), Q.F32),
                b + "attn_q.weight": mat(self.n_head * hd, d, Q.Q8_0),
                b + "attn_k.weight": mat(self.n_head_kv * hd, d),
                b + "attn_v.weight": mat(self.n_head_kv * hd, d),
                b + "attn_output.weight": mat(d, self.n_head * hd, Q.F16),
                b + "ffn_gate.weight": mat(self.n_ff, d),
                b + "ffn_up.weight": mat(self.n_ff, d, Q.F16),
                b + "ffn_down.weight": mat(d, self.n_ff),
            }

    def write(self, path: Path, *, alignment: int | None = None) -> Path:
        """Write the spec with gguf.GGUFWriter (kv exactly as given, in order)."""
        w = gguf.GGUFWriter(path, "cohere2")
        w.kv_data[0].clear()  # drop the writer's own general.architecture: tests control it
        if alignment is not None:
            w.add_uint32("general.alignment", alignment)
            w.data_alignment = alignment
        for key, kv in self.kv.items():
            w.add_key_value(key, kv.value, kv.vtype, sub_type=kv.sub_type)
        for name, (array, qtype) in self.tensors.items():
            if qtype == Q.F32:
                w.add_tensor(name, array)
            elif qtype == Q.F16:
                w.add_tensor(name, array.astype(np.float16))
            else:
                w.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path


# ---------------------------------------------------------------------------------------
# Raw handcrafted files (for the ports of llama.cpp's tests/test-gguf.cpp)

_FMT = {T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i",
        T.FLOAT32: "f", T.BOOL: "B", T.UINT64: "Q", T.INT64: "q", T.FLOAT64: "d"}  # fmt: skip


def gstr(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def kv_bytes(key: str | bytes, vtype: int, value: Any, sub_type: int | None = None) -> bytes:
    """One KV pair; `value` may be raw bytes to write a hand-made payload."""
    out = gstr(key) + struct.pack("<I", vtype)
    if isinstance(value, bytes):
        return out + value
    if vtype == T.STRING:
        return out + gstr(value)
    if vtype == T.ARRAY:
        assert sub_type is not None
        out += struct.pack("<IQ", sub_type, len(value))
        if sub_type == T.STRING:
            return out + b"".join(gstr(v) for v in value)
        return out + struct.pack(f"<{len(value)}{_FMT[T(sub_type)]}", *value)
    return out + struct.pack("<" + _FMT[T(vtype)], value)


@dataclass
class RawTensor:
    name: str | bytes
    shape: list[int]  # ggml ne order
    type: int = Q.F32
    offset: int | None = None  # None: packed after the previous tensor
    n_dims: int | None = None


@dataclass
class RawGGUF:
    """A GGUF file assembled byte by byte, every field overridable."""

    kvs: list[bytes] = field(default_factory=list)
    tensors: list[RawTensor] = field(default_factory=list)
    magic: bytes = b"GGUF"
    version: int = 3
    n_tensors: int | None = None
    n_kv: int | None = None
    alignment: int = 32  # used for packing; write general.alignment yourself
    with_data: bool = True  # False: stop after the header padding (test-gguf's lower levels)
    data_delta: int = 0  # bytes added to (or removed from) the data section

    def build(self) -> bytes:
        out = bytearray(self.magic + struct.pack("<I", self.version))
        out += struct.pack("<QQ", len(self.tensors) if self.n_tensors is None else self.n_tensors,
                           len(self.kvs) if self.n_kv is None else self.n_kv)
        for kv in self.kvs:
            out += kv
        offset = 0
        for t in self.tensors:
            try:
                block, size = gguf.GGML_QUANT_SIZES[Q(t.type)]
            except (ValueError, KeyError):
                block, size = 1, 4
            n_dims = len(t.shape) if t.n_dims is None else t.n_dims
            out += gstr(t.name) + struct.pack("<I", n_dims)
            out += b"".join(struct.pack("<Q", d % (1 << 64)) for d in t.shape)
            out += struct.pack("<I", t.type)
            out += struct.pack("<Q", (offset if t.offset is None else t.offset) % (1 << 64))
            n = math.prod(max(d, 0) for d in t.shape) // block * size
            offset += -(-max(n, 0) // self.alignment) * self.alignment
        out += b"\0" * (-len(out) % self.alignment)
        if not self.with_data:
            return bytes(out)
        n_data = max(offset + self.data_delta, 0) if self.tensors else max(self.data_delta, 0)
        out += bytes(i % 256 for i in range(n_data))
        return bytes(out)


# ---------------------------------------------------------------------------------------
# Field walker


class Field(NamedTuple):
    offset: int
    size: int
    kind: str  # magic, version, count, len, type, value, dim, offset
    label: str


def walk_fields(data: bytes) -> list[Field]:
    """Every field of a *valid* GGUF header, in file order (trusts the file)."""
    fields: list[Field] = []
    pos = 0

    def take(size: int, kind: str, label: str, fmt: str | None = None) -> Any:
        nonlocal pos
        fields.append(Field(pos, size, kind, label))
        value = struct.unpack_from("<" + fmt, data, pos)[0] if fmt else None
        pos += size
        return value

    def string(label: str) -> None:
        n = take(8, "len", f"length of {label}", "Q")
        take(n, "value", label)

    take(4, "magic", "magic")
    take(4, "version", "version", "I")
    n_tensors = take(8, "count", "n_tensors", "Q")
    n_kv = take(8, "count", "n_kv", "Q")
    for i in range(n_kv):
        string(f"key {i}")
        vtype = take(4, "type", f"type of key {i}", "I")
        if vtype == T.STRING:
            string(f"value {i}")
        elif vtype == T.ARRAY:
            sub = take(4, "type", f"element type of array {i}", "I")
            count = take(8, "count", f"count of array {i}", "Q")
            if sub == T.STRING:
                for j in range(count):
                    string(f"element {j} of array {i}")
            else:
                take(count * struct.calcsize(_FMT[T(sub)]), "value", f"elements of array {i}")
        else:
            take(struct.calcsize(_FMT[T(vtype)]), "value", f"value {i}")
    for i in range(n_tensors):
        string(f"name of tensor {i}")
        n_dims = take(4, "count", f"n_dims of tensor {i}", "I")
        for d in range(n_dims):
            take(8, "dim", f"dim {d} of tensor {i}", "Q")
        take(4, "type", f"type of tensor {i}", "I")
        take(8, "offset", f"offset of tensor {i}", "Q")
    return fields
