"""Tests for the pure-Python GGUF validator (engine/gguf_validate.py).

What is covered (reliability-notes.md section 3, "What we copy"):
- a valid tiny cohere2 file (built with gguf.GGUFWriter) passes, with an exact summary;
- Python ports of the 34 handcrafted classes of llama.cpp's tests/test-gguf.cpp;
- the public PoCs: zero dimension, n_tensors = -1, alignment overflow, narrow array types;
- model-level rules: architecture, key types, tokenizer, cohere2 hparams and tensor set;
- truncation at every header field boundary and at sampled data offsets;
- size fields set to 0 / 2^31 / 2^63 / 2^64-1, and seeded bit flips in the header;
- unreadable paths; and (marked `llama`) that llama.cpp itself fails on files we reject.
Every rejection must be a ModelFileError whose message is one line naming the file.
"""

from __future__ import annotations

import os
import pickle
import random
import struct
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as T

from engine.gguf_validate import (
    GGUFArray,
    GGUFSummary,
    ModelFileError,
    parse_gguf,
    validate_gguf,
)
from tests.engine.gguf_craft import (
    KV,
    Cohere2Spec,
    Field,
    RawGGUF,
    RawTensor,
    gstr,
    kv_bytes,
    tiny_vocab,
    walk_fields,
)

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1


# ---------------------------------------------------------------------------------------
# Helpers and fixtures


def put(tmp_path: Path, data: bytes, name: str = "model.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def check_message(err: ModelFileError, path: Path | str) -> str:
    msg = str(err)
    assert len(msg.splitlines()) == 1, msg
    assert msg.startswith(f"{path}: "), msg
    assert "internal error" not in msg, msg
    return msg


def rejects(path: Path, *fragments: str, check: Callable[..., GGUFSummary] = validate_gguf,
            **kwargs: object) -> str:
    """Assert `check(path)` raises ModelFileError mentioning every fragment."""
    with pytest.raises(ModelFileError) as info:
        check(path, **kwargs)
    msg = check_message(info.value, path)
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def assert_consistent(s: GGUFSummary) -> None:
    """What an accepted file must satisfy whatever bytes it holds."""
    assert s.n_tensors == len(s.tensors) and s.n_kv == len(s.kv) == len(s.kv_types)
    assert s.version in (2, 3) and s.architecture == "cohere2"
    assert s.data_offset % s.alignment == 0
    spans = sorted((t.offset, t.offset + t.nbytes) for t in s.tensors.values())
    assert all(0 < t.nbytes and s.data_offset <= t.offset for t in s.tensors.values())
    assert spans[-1][1] <= s.file_size
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert s.tensors["token_embd.weight"].shape == (
        s.kv["cohere2.embedding_length"], s.kv["tokenizer.ggml.tokens"].count)


def robust(path: Path) -> bool:
    """Validate a mutated file: True if rejected cleanly, False if accepted consistently."""
    try:
        summary = validate_gguf(path)
    except ModelFileError as err:
        check_message(err, path)
        return True
    assert_consistent(summary)
    return False


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return Cohere2Spec().write(tmp_path_factory.mktemp("valid") / "model.gguf").read_bytes()


@pytest.fixture(scope="module")
def fields(valid: bytes) -> list[Field]:
    return walk_fields(valid)


def patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<" + fmt, out, offset, value)
    return bytes(out)


def find_field(fields: list[Field], label: str) -> Field:
    return next(f for f in fields if f.label == label)


def key_index(data: bytes, key: str) -> int:
    """Position of key `key` among the KV pairs of a file we wrote."""
    return list(validate_gguf_struct(data).kv).index(key)


def validate_gguf_struct(data: bytes) -> GGUFSummary:
    with tempfile.TemporaryDirectory() as d:
        return parse_gguf(put(Path(d), data))


# ---------------------------------------------------------------------------------------
# The valid file


def test_valid_file_summary(tmp_path: Path, valid: bytes) -> None:
    path = put(tmp_path, valid)
    s = validate_gguf(path)
    spec = Cohere2Spec()
    assert (s.version, s.n_tensors, s.n_kv) == (3, 18, len(spec.kv))
    assert (s.architecture, s.alignment, s.file_size) == ("cohere2", 32, len(valid))
    assert s.data_offset % 32 == 0 and s.data_offset == min(t.offset for t in s.tensors.values())
    assert s.kv["cohere2.attention.sliding_window"] == 8
    tokens = s.kv["tokenizer.ggml.tokens"]
    assert isinstance(tokens, GGUFArray) and tokens.element_type == T.STRING
    assert tokens.count == len(tiny_vocab()) and tokens.values == tuple(tiny_vocab())
    assert s.kv_types["hybrid_lsp.prompt_format_version"] == T.UINT32
    embd = s.tensors["token_embd.weight"]
    assert embd.type == Q.F32 and embd.shape == (32, 268) and embd.torch_shape == (268, 32)
    assert embd.nbytes == 268 * 32 * 4
    stored = np.frombuffer(valid, np.float32, 268 * 32, embd.offset).reshape(268, 32)
    np.testing.assert_array_equal(stored, spec.tensors["token_embd.weight"][0])
    q = s.tensors["blk.1.attn_q.weight"]
    assert q.type == Q.Q8_0 and q.nbytes == 32 * 34
    assert_consistent(s)
    assert validate_gguf(str(path)) == s


@pytest.mark.parametrize(
    "variant",
    ["bool_pattern", "int_pattern", "no_pattern", "alignment_64", "alignment_1",
     "version_2", "key_length", "many_tokens", "extra_kv_all_types"],
)  # fmt: skip
def test_valid_variants_pass(tmp_path: Path, variant: str) -> None:
    spec, alignment = Cohere2Spec(), None
    pattern_key = "cohere2.attention.sliding_window_pattern"
    if variant == "bool_pattern":
        spec.kv[pattern_key] = KV([True, False], T.ARRAY, T.BOOL)
    elif variant == "int_pattern":
        spec.kv[pattern_key] = KV([1, 0], T.ARRAY, T.INT32)
    elif variant == "no_pattern":
        del spec.kv[pattern_key]
    elif variant == "alignment_64":
        alignment = 64
    elif variant == "alignment_1":
        alignment = 1
    elif variant == "key_length":
        spec.kv["cohere2.attention.key_length"] = KV(8, T.UINT32)
        spec.kv["cohere2.attention.value_length"] = KV(8, T.UINT32)
        spec.kv["cohere2.rope.dimension_count"] = KV(8, T.UINT32)
    elif variant == "many_tokens":  # past the materialise limit: counts only
        n_extra = 5000
        vocab = tiny_vocab() + [f"tok{i}" for i in range(n_extra)]
        spec.kv["tokenizer.ggml.tokens"] = KV(vocab, T.ARRAY, T.STRING)
        spec.kv["tokenizer.ggml.token_type"] = KV([1] * len(vocab), T.ARRAY, T.INT32)
        spec.tensors["token_embd.weight"] = (np.zeros((len(vocab), 32), np.float32), Q.F32)
    elif variant == "extra_kv_all_types":  # test-gguf's KV_SUCCESS: random extra keys
        rng = random.Random(7)
        for t in T:
            if t == T.ARRAY:
                for sub in (T.UINT8, T.INT64, T.FLOAT64, T.BOOL, T.STRING):
                    vals = [rng.choice([True, False]) if sub == T.BOOL else
                            (f"s{i}" if sub == T.STRING else rng.randrange(100))
                            for i in range(rng.randrange(1, 6))]
                    spec.kv[f"my_key_array_{sub.name}"] = KV(vals, T.ARRAY, sub)
            else:
                val = {T.STRING: "hello", T.BOOL: True, T.FLOAT32: 0.5, T.FLOAT64: 0.25}.get(t, 7)
                spec.kv[f"my_key_{t.name}"] = KV(val, t)
    path = spec.write(tmp_path / "model.gguf", alignment=alignment)
    if variant == "version_2":  # v2 and v3 share the layout
        path.write_bytes(patch(path.read_bytes(), 4, "I", 2))
    s = validate_gguf(path)
    assert_consistent(s)
    if variant == "many_tokens":
        assert s.kv["tokenizer.ggml.tokens"].values is None
        assert s.kv["tokenizer.ggml.tokens"].count == len(tiny_vocab()) + 5000
    if variant == "alignment_64":
        assert s.alignment == 64 and all(t.offset % 64 == 0 for t in s.tensors.values())


def test_architecture_allowlist_parameter(tmp_path: Path, valid: bytes) -> None:
    path = put(tmp_path, valid)
    rejects(path, "architecture 'cohere2' is not supported", "llama",
            architectures=frozenset({"llama"}))
    assert validate_gguf(path, architectures=frozenset({"cohere2", "llama"})).n_tensors == 18


# ---------------------------------------------------------------------------------------
# Ports of llama.cpp tests/test-gguf.cpp handcrafted classes (through parse_gguf)

_TENSORS = [("my_tensor_0", [32], Q.F32), ("my_tensor_1", [64, 2], Q.F16),
            ("my_tensor_2", [32, 3, 2], Q.Q8_0), ("my_tensor_3", [8, 1, 1, 5], Q.I32)]
_ALIGN_KEY = "general.alignment"


def _kvs(n: int = 4) -> list[bytes]:
    types = [(T.UINT8, 3), (T.INT16, -2), (T.FLOAT32, 1.5), (T.STRING, "v"), (T.BOOL, True),
             (T.UINT64, 9), (T.FLOAT64, -0.5)]
    out = [kv_bytes(f"my_key_{i}", t, v) for i, (t, v) in enumerate(types[:n])]
    return out + [kv_bytes("my_key_arr", T.ARRAY, [1, 2, 3], T.INT32)]


def _raw(level: str, **over: object) -> RawGGUF:
    raw = RawGGUF(with_data=level == "data")
    if level in ("kv", "tensors", "data"):
        raw.kvs = _kvs()
    if level in ("tensors", "data"):
        raw.tensors = [RawTensor(n, list(s), t) for n, s, t in _TENSORS]
    for k, v in over.items():
        setattr(raw, k, v)
    return raw


def _with_align(level: str, value: int, vtype: T = T.UINT32) -> RawGGUF:
    raw = _raw(level)
    raw.kvs.append(kv_bytes(_ALIGN_KEY, vtype, value))
    raw.alignment = value if value & (value - 1) == 0 else 32
    return raw


def _header_only(raw: RawGGUF) -> bytes:
    data = raw.build()
    return data + b"\0" * (-len(data) % 32)  # test-gguf pads header-only files


def _mutate_tensor(level: str, i: int, **changes: object) -> RawGGUF:
    raw = _raw(level)
    for k, v in changes.items():
        setattr(raw.tensors[i], k, v)
    return raw


def _class_files() -> dict[str, tuple[Callable[[], bytes], str | None]]:
    """name -> (builder, expected message fragment or None for "must load")."""
    d = "data"
    nbytes_big = 2 ** 61 + 8  # I64 elements: nbytes > SIZE_MAX
    return {
        # header (7)
        "HEADER_BAD_MAGIC": (lambda: _header_only(_raw("header", magic=b"GGXF")), "not a GGUF"),
        "HEADER_BAD_VERSION_0": (lambda: _header_only(_raw("header", version=0)), "version 0"),
        "HEADER_BAD_VERSION_1": (lambda: _header_only(_raw("header", version=1)), "version 1"),
        "HEADER_BAD_VERSION_FUTURE": (lambda: _header_only(_raw("header", version=4)),
                                      "version 4"),
        "HEADER_BAD_N_TENSORS": (lambda: _header_only(_raw("header", n_tensors=U64_MAX)),
                                 "n_tensors is 18446744073709551615"),
        "HEADER_BAD_N_KV": (lambda: _header_only(_raw("header", n_kv=U64_MAX)),
                            "n_kv is 18446744073709551615"),
        "HEADER_EMPTY": (lambda: _header_only(_raw("header")), None),
        # KV (7)
        "KV_BAD_KEY_SIZE": (lambda: _raw("kv", kvs=[struct.pack("<Q", U64_MAX)] + _kvs()).build(),
                            "key of KV pair 0 is 18446744073709551615 bytes"),
        "KV_EMPTY_KEY": (lambda: _raw("kv", kvs=[kv_bytes("", T.UINT8, 1)]).build(),
                         "empty key"),
        "KV_BAD_TYPE": (lambda: _raw("kv", kvs=[kv_bytes("my_key_0", 13, b"\0")]).build(),
                        "unknown value type 13"),
        "KV_DUPLICATE_KEY": (lambda: _raw("kv", kvs=_kvs() + _kvs(1)).build(),
                             "duplicate key 'my_key_0'"),
        "KV_BAD_ALIGN": (lambda: _with_align("kv", 13).build(), "general.alignment is 13"),
        "KV_WRONG_TYPE_ALIGN": (lambda: _with_align("kv", 32, T.INT32).build(),
                                "general.alignment has type INT32"),
        "KV_SUCCESS": (lambda: _raw("kv").build(), None),
        # tensors (14: test-gguf's 13 plus the newer NBYTES_PAD_WRAP)
        "TENSORS_BAD_NAME_SIZE": (lambda: _mutate_tensor("tensors", 1, name="my_t" + "x" * 87)
                                  .build(), "name of tensor 1 is 91 bytes long (limit 63)"),
        "TENSORS_BAD_N_DIMS": (lambda: _mutate_tensor("tensors", 0, n_dims=5).build(),
                               "n_dims=5"),
        "TENSORS_BAD_SHAPE": (lambda: _mutate_tensor("tensors", 0, shape=[-1]).build(),
                              "dimension 0 = 18446744073709551615"),
        "TENSORS_ZERO_DIM": (lambda: _mutate_tensor("tensors", 1, shape=[64, 0]).build(),
                             "dimension 1 = 0"),
        "TENSORS_NE_TOO_BIG": (lambda: _mutate_tensor("tensors", 0, shape=[4 * (2**31 - 1)] * 2)
                               .build(), "elements, more than 2^63-1"),
        "TENSORS_NBYTES_TOO_BIG": (lambda: _mutate_tensor("tensors", 0, type=Q.I64,
                                                          shape=[nbytes_big // 8]).build(),
                                   "truncated: tensor data of 'my_tensor_0'"),
        "TENSORS_NBYTES_PAD_WRAP": (lambda: _mutate_tensor("tensors", 0,
                                                           shape=[4, 2**30 - 1, 2**30 + 1]).build(),
                                    "truncated: tensor data of 'my_tensor_0'"),
        "TENSORS_BAD_TYPE": (lambda: _mutate_tensor("tensors", 2, type=1000).build(),
                             "unknown ggml type 1000"),
        "TENSORS_BAD_OFFSET": (lambda: _mutate_tensor("tensors", 1, offset=U64_MAX).build(),
                               "not a multiple of 32"),
        "TENSORS_DUPLICATE_NAME": (lambda: _mutate_tensor("tensors", 1, name="my_tensor_0")
                                   .build(), "duplicate tensor 'my_tensor_0'"),
        "TENSORS_BAD_ALIGN": (lambda: _with_align("tensors", 13).build(),
                              "general.alignment is 13"),
        "TENSORS_INCONSISTENT_ALIGN": (lambda: _raw("tensors", alignment=1).build(),
                                       "not a multiple of 32"),
        # test-gguf reads these two without their data (no_alloc); we always require the
        # data inside the file, so here they carry it.
        "TENSORS_SUCCESS": (lambda: _raw("tensors", with_data=True).build(), None),
        "TENSORS_CUSTOM_ALIGN": (lambda: _with_align("data", 1).build(), None),
        # data (6)
        "DATA_NOT_ENOUGH_DATA": (lambda: _raw(d, data_delta=-1).build(),
                                 "truncated: tensor data of 'my_tensor_3'"),
        "DATA_BAD_ALIGN": (lambda: _with_align(d, 13).build(), "general.alignment is 13"),
        "DATA_INCONSISTENT_ALIGN": (lambda: _raw(d, alignment=8).build(),
                                    "not a multiple of 32"),
        "DATA_MEM_SIZE_OVERFLOW": (lambda: _raw(d, tensors=[
            RawTensor("a", [0x7FFFFFFFFFFFFFC0], Q.I8, 0),
            RawTensor("b", [0x7FFFFFFFFFFFFFC0], Q.I8, 0x7FFFFFFFFFFFFFC0)],
            data_delta=32 - 2 * 0x7FFFFFFFFFFFFFC0).build(), "truncated: tensor data of 'a'"),
        "DATA_SUCCESS": (lambda: _raw(d).build(), None),
        "DATA_CUSTOM_ALIGN": (lambda: _with_align(d, 1).build(), None),
    }  # fmt: skip


CLASSES = _class_files()


def test_all_test_gguf_classes_ported() -> None:
    assert len(CLASSES) == 34
    assert sum(1 for _, frag in CLASSES.values() if frag is None) == 6


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_test_gguf_class(tmp_path: Path, name: str) -> None:
    build, fragment = CLASSES[name]
    path = put(tmp_path, build(), f"{name}.gguf")
    if fragment is None:
        s = parse_gguf(path)
        assert s.n_tensors == len(s.tensors) and s.n_kv == len(s.kv)
        # Structurally fine, but not a model: validate_gguf still refuses it.
        rejects(path, "missing key 'general.architecture'")
    else:
        rejects(path, fragment, check=parse_gguf)
        rejects(path, fragment)


def test_data_success_summary(tmp_path: Path) -> None:
    s = parse_gguf(put(tmp_path, _raw("data").build()))
    assert list(s.tensors) == [n for n, _, _ in _TENSORS]
    t2 = s.tensors["my_tensor_2"]
    assert t2.type == Q.Q8_0 and t2.shape == (32, 3, 2) and t2.nbytes == 6 * 34
    assert s.kv["my_key_arr"] == GGUFArray(T.INT32, 3, (1, 2, 3))
    assert s.kv["my_key_0"] == 3 and s.kv["my_key_2"] == 1.5 and s.kv["my_key_3"] == "v"


# ---------------------------------------------------------------------------------------
# Public PoCs


def test_poc_zero_dimension(tmp_path: Path, valid: bytes, fields: list[Field]) -> None:
    f = find_field(fields, "dim 1 of tensor 0")
    rejects(put(tmp_path, patch(valid, f.offset, "Q", 0)), "dimension 1 = 0")


def test_poc_zero_dimension_88_bytes(tmp_path: Path) -> None:
    """The shape of the whisper.cpp #3864 PoC: a tiny file, one 2-D tensor with ne[1] = 0."""
    raw = RawGGUF(tensors=[RawTensor("t", [1, 0], Q.F32, 0)], alignment=1)
    rejects(put(tmp_path, raw.build()), "dimension 1 = 0", check=parse_gguf)


def test_poc_n_tensors_minus_one(tmp_path: Path, valid: bytes) -> None:
    rejects(put(tmp_path, patch(valid, 8, "Q", U64_MAX)), "n_tensors is 18446744073709551615")


@pytest.mark.parametrize("alignment", [2**31, 2**32 - 1, 2**32 - 2**20, 3 * 2**20, 0])
def test_poc_alignment_overflow(tmp_path: Path, alignment: int) -> None:
    spec = Cohere2Spec()
    spec.kv["general.alignment"] = KV(alignment, T.UINT32)
    rejects(spec.write(tmp_path / "m.gguf"), f"general.alignment is {alignment}")


@pytest.mark.parametrize(
    ("key", "sub", "values"),
    [("tokenizer.ggml.tokens", T.INT8, list(range(100))),
     ("tokenizer.ggml.tokens", T.UINT32, list(range(268))),
     ("tokenizer.ggml.token_type", T.INT8, [1] * 268),
     ("tokenizer.ggml.token_type", T.FLOAT32, [1.0] * 268),
     ("tokenizer.ggml.scores", T.UINT8, [0] * 268),
     ("tokenizer.ggml.merges", T.INT16, [1, 2])],
)  # fmt: skip
def test_poc_narrow_array_element_type(tmp_path: Path, key: str, sub: T, values: list) -> None:
    spec = Cohere2Spec()
    spec.kv[key] = KV(values, T.ARRAY, sub)
    rejects(spec.write(tmp_path / "m.gguf"), f"key '{key}' has type array of", "expected array")


# ---------------------------------------------------------------------------------------
# Model-level rules


def _spec_case(case: str) -> tuple[Cohere2Spec, str]:
    spec = Cohere2Spec()
    a = "cohere2."
    kv, tensors = spec.kv, spec.tensors
    u32 = T.UINT32
    if case == "wrong_arch":
        kv["general.architecture"] = KV("llama", T.STRING)
        return spec, "architecture 'llama' is not supported (expected: cohere2)"
    if case == "arch_not_string":
        kv["general.architecture"] = KV(7, u32)
        return spec, "general.architecture' has type u32, expected string"
    if case == "no_arch":
        del kv["general.architecture"]
        return spec, "missing key 'general.architecture'"
    if case.startswith("missing:"):
        del kv[a + case.split(":")[1]]
        return spec, f"missing key '{a}{case.split(':')[1]}'"
    if case == "u32_as_i32":
        kv[a + "block_count"] = KV(2, T.INT32)
        return spec, "block_count' has type i32, expected u32"
    if case == "u32_as_u64":
        kv[a + "context_length"] = KV(4096, T.UINT64)
        return spec, "context_length' has type uint64, expected u32"
    if case == "f32_as_f64":
        kv[a + "logit_scale"] = KV(1.0, T.FLOAT64)
        return spec, "logit_scale' has type float64, expected f32"
    if case == "eps_nan":
        kv[a + "attention.layer_norm_epsilon"] = KV(float("nan"), T.FLOAT32)
        return spec, "layer_norm_epsilon is nan"
    if case == "freq_base_zero":
        kv[a + "rope.freq_base"] = KV(0.0, T.FLOAT32)
        return spec, "rope.freq_base is 0.0"
    if case == "window_zero":
        kv[a + "attention.sliding_window"] = KV(0, u32)
        return spec, "sliding_window is 0"
    if case == "head_count_zero":
        kv[a + "attention.head_count"] = KV(0, u32)
        return spec, "head_count is 0"
    if case == "pattern_all_global":
        kv[a + "attention.sliding_window_pattern"] = KV(1, u32)
        return spec, "every layer global"
    if case == "pattern_array_all_global":
        kv[a + "attention.sliding_window_pattern"] = KV([False, False], T.ARRAY, T.BOOL)
        return spec, "every layer global"
    if case == "pattern_array_length":
        kv[a + "attention.sliding_window_pattern"] = KV([True, False, True], T.ARRAY, T.BOOL)
        return spec, "has 3 elements, expected block_count=2"
    if case == "pattern_array_u8":
        kv[a + "attention.sliding_window_pattern"] = KV([1, 0], T.ARRAY, T.UINT8)
        return spec, "has type array of uint8"
    if case == "pattern_string":
        kv[a + "attention.sliding_window_pattern"] = KV("2", T.STRING)
        return spec, "has type string, expected u32 or array of bool"
    if case == "kv_heads_not_dividing":
        kv[a + "attention.head_count_kv"] = KV(3, u32)
        return spec, "head_count_kv (3) does not divide head_count (4)"
    if case == "heads_times_dim":
        kv[a + "attention.head_count"] = KV(6, u32)
        return spec, "!= embedding_length (32)"
    if case == "key_length":
        kv[a + "attention.key_length"] = KV(16, u32)
        return spec, "head_dim (16) != embedding_length"
    if case == "rope_dims_odd":
        kv[a + "rope.dimension_count"] = KV(7, u32)
        return spec, "rope.dimension_count is 7"
    if case == "vocab_size":
        kv[a + "vocab_size"] = KV(300, u32)
        return spec, "vocab_size is 300 but there are 268 tokens"
    if case == "prompt_version_type":
        kv["hybrid_lsp.prompt_format_version"] = KV("1", T.STRING)
        return spec, "prompt_format_version' has type string, expected u32"
    if case == "bool_byte":
        kv["tokenizer.ggml.add_bos_token"] = KV(2, T.UINT8)
        return spec, "add_bos_token' has type uint8, expected bool"
    if case == "tokenizer_model":
        kv["tokenizer.ggml.model"] = KV("llama", T.STRING)
        return spec, "tokenizer.ggml.model is 'llama', expected 'gpt2'"
    if case == "no_tokens":
        del kv["tokenizer.ggml.tokens"]
        return spec, "missing key 'tokenizer.ggml.tokens'"
    if case == "no_merges":
        del kv["tokenizer.ggml.merges"]
        return spec, "missing key 'tokenizer.ggml.merges'"
    if case == "token_type_length":
        kv["tokenizer.ggml.token_type"] = KV([1] * 100, T.ARRAY, T.INT32)
        return spec, "token_type has 100 elements but there are 268 tokens"
    if case == "bos_out_of_range":
        kv["tokenizer.ggml.bos_token_id"] = KV(268, u32)
        return spec, "bos_token_id is 268, not below n_vocab=268"
    if case == "eos_as_i32":
        kv["tokenizer.ggml.eos_token_id"] = KV(0, T.INT32)
        return spec, "eos_token_id' has type i32, expected u32"
    if case == "duplicate_token":
        vocab = tiny_vocab()
        vocab[-1] = vocab[-2]
        kv["tokenizer.ggml.tokens"] = KV(vocab, T.ARRAY, T.STRING)
        return spec, "duplicate token 'fn' at 267"
    if case == "empty_token":
        vocab = tiny_vocab()
        vocab[-1] = ""
        kv["tokenizer.ggml.tokens"] = KV(vocab, T.ARRAY, T.STRING)
        return spec, "tokens element 267 is empty"
    if case == "output_weight":
        tensors["output.weight"] = tensors["token_embd.weight"]
        return spec, "unexpected tensor 'output.weight'"
    if case == "bias":
        tensors["blk.0.attn_q.bias"] = (np.zeros(32, np.float32), Q.F32)
        return spec, "unexpected tensor 'blk.0.attn_q.bias'"
    if case == "extra_block":
        for name in [n for n in tensors if n.startswith("blk.1.")]:
            tensors[name.replace("blk.1.", "blk.2.")] = tensors[name]
        return spec, "unexpected tensor 'blk.2.attn_norm.weight' (and 7 more)"
    if case == "missing_tensor":
        del tensors["blk.1.ffn_down.weight"]
        return spec, "missing tensor 'blk.1.ffn_down.weight'"
    if case == "embd_shape":
        tensors["token_embd.weight"] = (np.zeros((270, 32), np.float32), Q.F32)
        return spec, "'token_embd.weight' has ggml shape [32, 270], expected [32, 268]"
    if case == "k_shape":
        tensors["blk.0.attn_k.weight"] = (np.zeros((32, 32), np.float32), Q.F32)
        return spec, "'blk.0.attn_k.weight' has ggml shape [32, 32], expected [32, 16]"
    if case == "norm_f16":
        tensors["output_norm.weight"] = (np.ones(32, np.float32), Q.F16)
        return spec, "norm tensor 'output_norm.weight' has type F16, expected F32"
    raise AssertionError(case)


_REQUIRED = ["context_length", "embedding_length", "block_count", "feed_forward_length",
             "attention.head_count", "attention.head_count_kv", "attention.layer_norm_epsilon",
             "attention.sliding_window", "logit_scale", "rope.freq_base"]
MODEL_CASES = [
    "wrong_arch", "arch_not_string", "no_arch", *(f"missing:{k}" for k in _REQUIRED),
    "u32_as_i32", "u32_as_u64", "f32_as_f64", "eps_nan", "freq_base_zero", "window_zero",
    "head_count_zero", "pattern_all_global", "pattern_array_all_global", "pattern_array_length",
    "pattern_array_u8", "pattern_string", "kv_heads_not_dividing", "heads_times_dim",
    "key_length", "rope_dims_odd", "vocab_size", "prompt_version_type", "bool_byte",
    "tokenizer_model", "no_tokens", "no_merges", "token_type_length", "bos_out_of_range",
    "eos_as_i32", "duplicate_token", "empty_token", "output_weight", "bias", "extra_block",
    "missing_tensor", "embd_shape", "k_shape", "norm_f16",
]  # fmt: skip


@pytest.mark.parametrize("case", MODEL_CASES)
def test_model_rule(tmp_path: Path, case: str) -> None:
    spec, fragment = _spec_case(case)
    path = spec.write(tmp_path / "model.gguf")
    parse_gguf(path)  # structurally fine: only the model layer catches it
    rejects(path, fragment)


def test_big_endian_and_bool_byte(tmp_path: Path, valid: bytes, fields: list[Field]) -> None:
    big_endian = valid[:4] + struct.pack(">I", 3) + valid[8:]
    rejects(put(tmp_path, big_endian), "big-endian GGUF files are not supported")
    i = key_index(valid, "tokenizer.ggml.add_bos_token")
    f = find_field(fields, f"value {i}")
    rejects(put(tmp_path, patch(valid, f.offset, "B", 2)), "is a bool with byte value 2")


def test_nested_array_and_string_limits(tmp_path: Path) -> None:
    nested = kv_bytes("k", T.ARRAY, struct.pack("<IQ", T.ARRAY, 1) + struct.pack("<IQ", 4, 0))
    rejects(put(tmp_path, RawGGUF(kvs=[nested]).build()), "array of arrays", check=parse_gguf)
    long = kv_bytes("k", T.STRING, gstr(b"x" * ((1 << 20) + 1)))
    rejects(put(tmp_path, RawGGUF(kvs=[long]).build()), "1048577 bytes long (limit 1048576)",
            check=parse_gguf)
    huge = kv_bytes("k", T.ARRAY, struct.pack("<IQ", T.UINT8, (16 << 20) + 1))
    rejects(put(tmp_path, RawGGUF(kvs=[huge]).build()), "16777217 elements (limit 16777216)",
            check=parse_gguf)
    bad_utf8 = kv_bytes("k", T.STRING, struct.pack("<Q", 2) + b"\xff\xfe")
    rejects(put(tmp_path, RawGGUF(kvs=[bad_utf8]).build()), "not valid UTF-8", check=parse_gguf)
    ctrl_key = kv_bytes("a\nb", T.UINT8, 1)
    rejects(put(tmp_path, RawGGUF(kvs=[ctrl_key]).build()), "control characters",
            check=parse_gguf)


def test_overlap_and_unpacked_tensors(tmp_path: Path) -> None:
    raw = _raw("data")
    raw.tensors[2].offset = 0
    rejects(put(tmp_path, raw.build()), "overlap", check=parse_gguf)
    raw = _raw("data")
    raw.tensors[3].offset, raw.data_delta = 640, 64  # packed would be 608
    rejects(put(tmp_path, raw.build()), "expected", "packed in order", check=parse_gguf)


# ---------------------------------------------------------------------------------------
# Truncation, size fields and bit flips on the valid cohere2 file


def test_truncation_at_every_field_boundary(tmp_path: Path, valid: bytes,
                                           fields: list[Field]) -> None:
    cuts = sorted({f.offset for f in fields} | {f.offset + f.size for f in fields})
    assert len(cuts) > 700
    path = tmp_path / "model.gguf"
    for cut in cuts:
        path.write_bytes(valid[:cut])
        msg = rejects(path)
        assert ("truncated" in msg) or (cut == 0 and "empty file" in msg), (cut, msg)


def test_truncation_in_tensor_data(tmp_path: Path, valid: bytes) -> None:
    s = validate_gguf(put(tmp_path, valid))
    last = max(s.tensors, key=lambda n: s.tensors[n].offset)
    cuts = {s.data_offset - 1, s.data_offset, s.data_offset + 1, len(valid) - 1}
    for info in s.tensors.values():
        cuts |= {info.offset, info.offset + info.nbytes - 1}
    cuts |= set(random.Random(3).sample(range(s.data_offset, len(valid)), 20))
    path = tmp_path / "model.gguf"
    for cut in sorted(cuts):
        path.write_bytes(valid[:cut])
        msg = rejects(path, "truncated")
        assert "tensor data" in msg, msg
    path.write_bytes(valid[:-1])
    rejects(path, f"truncated: tensor data of '{last}' ends at byte {len(valid)} "
                  f"but the file has {len(valid) - 1} bytes")
    path.write_bytes(valid + b"\0" * 100)  # trailing bytes are allowed
    assert validate_gguf(path).file_size == len(valid) + 100


def _size_fields(fields: list[Field]) -> list[Field]:
    """Every count / length / dim / offset field; of a string array's element lengths
    only the first two and the last (the rest are the same kind of field)."""
    out = []
    for i, f in enumerate(fields):
        if f.kind not in ("count", "len", "dim", "offset"):
            continue
        if f.label.startswith("length of element "):
            j = int(f.label.split()[3])
            is_last = not fields[i + 2].label.startswith("length of element ") if i + 2 < len(
                fields) else True
            if j >= 2 and not is_last:
                continue
        out.append(f)
    return out


class InPlace:
    """The valid file on disk, mutated in place and restored (faster than rewriting it)."""

    def __init__(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        self.path, self.data = path, data
        self.f = open(path, "r+b")  # closed by close()

    def check(self, changes: dict[int, bytes]) -> bool:
        """Apply {offset: bytes}, validate with `robust`, restore; True if rejected."""
        for offset, new in changes.items():
            self.f.seek(offset)
            self.f.write(new)
        self.f.flush()
        try:
            return robust(self.path)
        finally:
            for offset, new in changes.items():
                self.f.seek(offset)
                self.f.write(self.data[offset:offset + len(new)])
            self.f.flush()

    def close(self) -> None:
        self.f.close()


@pytest.fixture
def in_place(tmp_path: Path, valid: bytes) -> Iterator[InPlace]:
    target = InPlace(tmp_path / "model.gguf", valid)
    yield target
    target.close()


def test_size_fields_absurd_values(in_place: InPlace, valid: bytes, fields: list[Field]) -> None:
    targets = _size_fields(fields)
    assert len(targets) > 120
    n = 0
    for f in targets:
        for value in (0, 2**31, 2**63, U64_MAX):
            new = (value % (1 << (8 * f.size))).to_bytes(f.size, "little")
            if f.size == 4 and value > U32_MAX:
                new = U32_MAX.to_bytes(4, "little")
            if new == valid[f.offset:f.offset + f.size]:
                continue
            assert in_place.check({f.offset: new}), (f.label, value)  # every change is caught
            n += 1
    assert n > 450


def test_header_bit_flips(in_place: InPlace, valid: bytes) -> None:
    data_offset = validate_gguf(in_place.path).data_offset
    rng = random.Random(20260101)
    rejected = accepted = 0
    for i in range(3000):
        changes: dict[int, bytes] = {}
        for _ in range(1 if i % 4 else rng.randint(2, 8)):
            pos = rng.randrange(data_offset)
            old = changes.get(pos, valid[pos:pos + 1])[0]
            changes[pos] = bytes([old ^ (1 << rng.randrange(8))])
        if in_place.check(changes):
            rejected += 1
        else:
            accepted += 1
    # Flips inside token text or float values can leave a consistent file; most don't.
    assert rejected > 1000 and accepted > 0


def test_random_bytes_in_header(in_place: InPlace, fields: list[Field]) -> None:
    """Overwrite whole header fields with random bytes (a coarser mutation than bit flips)."""
    rng = random.Random(99)
    for f in rng.sample(fields, 500):
        in_place.check({f.offset: rng.randbytes(min(f.size, 16))})


# ---------------------------------------------------------------------------------------
# Paths and non-GGUF files


def test_missing_file(tmp_path: Path) -> None:
    rejects(tmp_path / "nope.gguf", "no such file")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.gguf").mkdir()
    rejects(tmp_path / "dir.gguf", "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    rejects(put(tmp_path, b""), "empty file")


@pytest.mark.parametrize(
    "data",
    [b"hello world, this is not a model at all\n", b"\x89PNG\r\n\x1a\n" + bytes(40),
     b'{"__metadata__": {}}' + bytes(16), b"GGUF", b"GG", b"PK\x03\x04" + bytes(100)],
)  # fmt: skip
def test_not_gguf(tmp_path: Path, data: bytes) -> None:
    msg = rejects(put(tmp_path, data))
    assert "not a GGUF file" in msg or "truncated" in msg


def test_special_file_and_odd_name(tmp_path: Path, valid: bytes) -> None:
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    rejects(fifo, "is not a regular file")  # and it must not block on open()
    odd = put(tmp_path, valid[:100], "odd\nname.gguf")
    with pytest.raises(ModelFileError) as info:
        validate_gguf(odd)
    assert len(str(info.value).splitlines()) == 1 and "odd\\nname.gguf" in str(info.value)


def test_error_is_value_error_and_pickles(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        validate_gguf(tmp_path / "x.gguf")
    err = info.value
    assert isinstance(err, ModelFileError) and err.reason == "no such file"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.path == err.path


# ---------------------------------------------------------------------------------------
# The protection matters: llama.cpp itself fails on files we reject


def _llama_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except Exception:
        return False
    return True


_LOAD = textwrap.dedent("""
    import sys
    import llama_cpp
    model = llama_cpp.Llama(sys.argv[1], n_ctx=64, verbose=False)
    model.eval([10, 20, 30, 40])
    print("LOAD" + "ED_OK")
""")


def _load_in_child(path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GGML_NO_BACKTRACE="1")  # no gdb backtrace on abort()
    return subprocess.run([sys.executable, "-c", _LOAD, str(path)], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.llama
def test_llama_cpp_fails_on_rejected_files(tmp_path: Path, valid: bytes,
                                           fields: list[Field]) -> None:
    if not _llama_available():
        if os.environ.get("CI") == "true":
            pytest.fail("llama_cpp is not importable and CI=true")
        pytest.skip("llama_cpp is not importable")
    good = put(tmp_path, valid, "good.gguf")
    ok = _load_in_child(good)
    assert ok.returncode == 0 and "LOADED_OK" in ok.stdout, ok.stderr[-2000:]

    bad: dict[str, Path] = {}
    spec, _ = _spec_case("duplicate_token")  # llama.cpp: GGML_ASSERT -> abort()
    bad["duplicate_token"] = spec.write(tmp_path / "dup.gguf")
    spec, _ = _spec_case("output_weight")
    bad["output_weight"] = spec.write(tmp_path / "out.gguf")
    spec, _ = _spec_case("pattern_all_global")  # llama.cpp: is_swa_any() assert
    bad["pattern_all_global"] = spec.write(tmp_path / "global.gguf")
    spec, _ = _spec_case("norm_f16")  # loads, then binary_op aborts in the first eval
    bad["norm_f16"] = spec.write(tmp_path / "f16norm.gguf")
    bad["truncated"] = put(tmp_path, valid[:-1000], "trunc.gguf")
    f = find_field(fields, "dim 1 of tensor 0")
    bad["zero_dim"] = put(tmp_path, patch(valid, f.offset, "Q", 0), "zero.gguf")
    outcomes = {}
    for name, path in bad.items():
        rejects(path)
        res = _load_in_child(path)
        outcomes[name] = res.returncode
        assert res.returncode != 0 and "LOADED_OK" not in res.stdout, name
    # Some kill the process outright (SIGABRT from GGML_ASSERT), which no `except` catches.
    assert any(rc < 0 for rc in outcomes.values()), outcomes
