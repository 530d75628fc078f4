"""Pure-Python GGUF validator: check a model file before any native loader sees it.

llama.cpp can `abort()` the whole process on a malformed file (its SECURITY.md promises
no safety on hostile models), so every model file goes through `validate_gguf` first.
The file is parsed with bounded `struct` reads: every length and count is checked
against fixed limits and the bytes left in the file *before* anything is read or
allocated. Nothing is memory-mapped and no size from the file is trusted.

Two layers:

* `parse_gguf`: the container format (GGUF v2/v3) and its structural rules, a
  superset of ggml's `gguf_init_from_file_impl` checks with tighter limits
  (shared/docs/reliability-notes.md section 3).
* `validate_gguf`: `parse_gguf` plus the model: architecture allowlist, key schema
  (value and array element types), tokenizer, and for `cohere2` the required keys and
  the exact tensor set and shapes llama.cpp will create (llama-cpp-notes.md 1, 2, 8).

Every failure is a `ModelFileError` whose message is one line: `<file>: <what is wrong>`.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

__all__ = [
    "GGUFArray",
    "GGUFSummary",
    "ModelFileError",
    "TensorInfo",
    "parse_gguf",
    "validate_gguf",
]

# Limits (tighter than ggml's 1 GiB string/array caps, see reliability-notes.md 3).
MAX_STRING_BYTES = 1 << 20
MAX_ARRAY_ELEMENTS = 16 << 20
MAX_KEY_BYTES = 65535  # GGUF spec: keys are at most 2^16 - 1 bytes.
MAX_TENSOR_NAME_BYTES = 63  # GGML_MAX_NAME (64) including the NUL.
MAX_DIMS = 4
MAX_ALIGNMENT = 1 << 20
MAX_N_TENSORS = 1 << 16
MAX_N_KV = 1 << 16
MAX_BLOCKS = 4096
DEFAULT_ALIGNMENT = 32
MATERIALISE_LIMIT = 4096  # arrays longer than this keep only their type and count
INT64_MAX = (1 << 63) - 1

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
HEADER_BYTES = 24  # magic, version, n_tensors, n_kv
MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-byte key, type, 1-byte value
MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, 1 dim, type, offset

T = GGUFValueType
_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i",
    T.FLOAT32: "f", T.BOOL: "B", T.UINT64: "Q", T.INT64: "q", T.FLOAT64: "d",
}  # fmt: skip


class ModelFileError(ValueError):
    """A model file that must not be loaded; str() is one line naming the file."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = _display_path(path)
        self.reason = _one_line(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self) -> tuple[type[ModelFileError], tuple[str, str]]:
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class GGUFArray:
    """An array value: element type, length, and the values when count <= MATERIALISE_LIMIT."""

    element_type: GGUFValueType
    count: int
    values: tuple[Any, ...] | None


class TensorInfo(NamedTuple):
    """One tensor: ggml type, shape in ggml order (ne[0] first, i.e. reversed torch
    order), absolute byte offset of its data in the file, and its size in bytes."""

    type: GGMLQuantizationType
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def torch_shape(self) -> tuple[int, ...]:
        """The shape in torch / numpy order (the reverse of ggml's ne)."""
        return tuple(reversed(self.shape))


@dataclass(frozen=True)
class GGUFSummary:
    """What a validated file holds. `kv` maps keys to Python values (str, int, float,
    bool or `GGUFArray`); `kv_types` gives each key's GGUF value type."""

    version: int
    n_tensors: int
    n_kv: int
    architecture: str
    alignment: int
    data_offset: int
    kv: dict[str, Any]
    tensors: dict[str, TensorInfo]
    kv_types: dict[str, GGUFValueType] = field(default_factory=dict)
    file_size: int = 0


class _Invalid(Exception):
    """Internal: raised with the reason; turned into ModelFileError at the boundary."""


def _one_line(text: str) -> str:
    lines = text.splitlines()
    return text if len(lines) == 1 else " ".join(line.strip() for line in lines)


def _display_path(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    return text if text.isprintable() else ascii(text)


def _show(text: str | bytes, limit: int = 80) -> str:
    """Quote a string taken from the file so it cannot break the one-line message."""
    if len(text) > limit:
        text = text[:limit]
        return repr(text) + "..."
    return repr(text)


# ---------------------------------------------------------------------------------------
# Bounded reader


class _Reader:
    """Reads from a file of known size, checking every length before reading."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise _Invalid(
                f"truncated: {what} needs {n} bytes at offset {self.pos} "
                f"but the file has {self.size} bytes"
            )

    def read(self, n: int, what: str) -> bytes:
        self.need(n, what)
        data = self.f.read(n)
        if len(data) != n:  # the file shrank while we read it
            raise _Invalid(f"truncated: {what} at offset {self.pos}: short read")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.pos += n
        self.f.seek(self.pos)

    def unpack(self, fmt: str, what: str) -> Any:
        (value,) = struct.unpack("<" + fmt, self.read(struct.calcsize(fmt), what))
        return value

    def u32(self, what: str) -> int:
        return self.unpack("I", what)

    def u64(self, what: str) -> int:
        return self.unpack("Q", what)

    def string_bytes(self, what: str, limit: int) -> bytes:
        n = self.u64(f"length of {what}")
        if n > limit:
            raise _Invalid(f"{what} is {n} bytes long (limit {limit})")
        return self.read(n, what)

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> str:
        raw = self.string_bytes(what, limit)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid(f"{what} is not valid UTF-8: {_show(raw)}") from None


# ---------------------------------------------------------------------------------------
# Container parsing


def parse_gguf(path: str | os.PathLike[str]) -> GGUFSummary:
    """Parse and structurally check a GGUF file (no model-level checks).

    Raises ModelFileError for anything a GGUF v2/v3 file must not contain.
    """
    return _guarded(path, lambda f, size: _parse(f, size, check_tokens=False))


def validate_gguf(
    path: str | os.PathLike[str],
    *,
    architectures: frozenset[str] = frozenset({"cohere2"}),
    keep_arrays: frozenset[str] = frozenset(),
) -> GGUFSummary:
    """Check that `path` is a well-formed GGUF model this project may hand to llama.cpp.

    Structural checks as in `parse_gguf`, then the architecture allowlist, the key
    schema, the tokenizer, and for `cohere2` the hyperparameters and exact tensor set.
    Arrays under `keep_arrays` keep their values whatever their length (the tokenizer's,
    for `engine.gguf_io.read_model_info`); others only up to MATERIALISE_LIMIT.
    """

    def run(f: BinaryIO, size: int) -> GGUFSummary:
        summary = _parse(f, size, check_tokens=True, keep_arrays=keep_arrays)
        _check_model(summary, architectures)
        return summary

    return _guarded(path, run)


def _guarded(path: str | os.PathLike[str], run: Any) -> GGUFSummary:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelFileError(path, "no such file") from None
    except ValueError:  # e.g. an embedded NUL byte
        raise ModelFileError(path, "invalid path") from None
    except OSError as exc:
        raise ModelFileError(path, f"cannot open: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFileError(path, "is a directory, not a model file")
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(path, "is not a regular file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise _Invalid("empty file (0 bytes), not a GGUF model")
            return run(f, size)
    except _Invalid as exc:
        raise ModelFileError(path, str(exc)) from None
    except OSError as exc:
        raise ModelFileError(path, f"cannot read: {exc.strerror or exc}") from None
    except (MemoryError, RecursionError) as exc:  # never expected; keep the one-line contract
        raise ModelFileError(path, f"cannot validate: {type(exc).__name__}") from None
    except Exception as exc:  # a validator bug must not crash the caller with a traceback
        raise ModelFileError(
            path, f"internal error while validating: {type(exc).__name__}: {exc}"
        ) from exc


def _parse(f: BinaryIO, size: int, *, check_tokens: bool,
           keep_arrays: frozenset[str] = frozenset()) -> GGUFSummary:
    r = _Reader(f, size)
    if size < HEADER_BYTES:
        head = r.read(min(size, 4), "magic")
        if head != GGUF_MAGIC[: len(head)]:
            raise _Invalid(f"not a GGUF file (starts with {_show(head)})")
        raise _Invalid(f"truncated: {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic = r.read(4, "magic")
    if magic != GGUF_MAGIC:
        raise _Invalid(f"not a GGUF file (starts with {_show(magic)}, expected b'GGUF')")
    version = r.u32("version")
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in (1, 2, 3):
            raise _Invalid("big-endian GGUF files are not supported")
        raise _Invalid(f"unsupported GGUF version {version} (supported: 2, 3)")
    n_tensors = r.u64("n_tensors")
    n_kv = r.u64("n_kv")
    if n_tensors > MAX_N_TENSORS:
        raise _Invalid(f"n_tensors is {n_tensors} (limit {MAX_N_TENSORS})")
    if n_kv > MAX_N_KV:
        raise _Invalid(f"n_kv is {n_kv} (limit {MAX_N_KV})")
    min_bytes = HEADER_BYTES + n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES
    if min_bytes > size:
        raise _Invalid(
            f"truncated or corrupt: n_tensors={n_tensors} and n_kv={n_kv} need at least "
            f"{min_bytes} bytes but the file has {size} bytes"
        )

    kv: dict[str, Any] = {}
    kv_types: dict[str, GGUFValueType] = {}
    for i in range(n_kv):
        key = r.string(f"key of KV pair {i}", MAX_KEY_BYTES)
        if not key:
            raise _Invalid(f"KV pair {i} has an empty key")
        if not key.isprintable():
            raise _Invalid(f"KV pair {i} has a key with control characters: {_show(key)}")
        if key in kv:
            raise _Invalid(f"duplicate key {_show(key)}")
        vtype = _value_type(r.u32(f"type of key {_show(key)}"), key)
        kv[key] = _read_value(r, vtype, key, check_tokens, key in keep_arrays)
        kv_types[key] = vtype

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in kv:
        if kv_types["general.alignment"] != T.UINT32:
            raise _Invalid(
                f"general.alignment has type {kv_types['general.alignment'].name}, must be UINT32"
            )
        alignment = kv["general.alignment"]
        if alignment <= 0 or alignment & (alignment - 1) or alignment > MAX_ALIGNMENT:
            raise _Invalid(
                f"general.alignment is {alignment}, must be a power of two <= {MAX_ALIGNMENT}"
            )

    tensors: dict[str, TensorInfo] = {}
    for i in range(n_tensors):
        tname_raw = r.string_bytes(f"name of tensor {i}", MAX_TENSOR_NAME_BYTES)
        if not tname_raw:
            raise _Invalid(f"tensor {i} has an empty name")
        try:
            tname = tname_raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid(f"tensor {i} name is not valid UTF-8: {_show(tname_raw)}") from None
        if tname in tensors:
            raise _Invalid(f"duplicate tensor {_show(tname)}")
        label = f"tensor {_show(tname)}"
        n_dims = r.u32(f"n_dims of {label}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise _Invalid(f"{label} has n_dims={n_dims} (must be 1..{MAX_DIMS})")
        shape = tuple(r.u64(f"dimension {d} of {label}") for d in range(n_dims))
        for d, ne in enumerate(shape):
            if ne == 0 or ne > INT64_MAX:
                raise _Invalid(f"{label} has dimension {d} = {ne} (must be 1..2^63-1)")
        n_elements = math.prod(shape)
        if n_elements > INT64_MAX:
            raise _Invalid(f"{label} has {n_elements} elements, more than 2^63-1")
        raw_type = r.u32(f"type of {label}")
        try:
            gtype = GGMLQuantizationType(raw_type)
            block, type_size = GGML_QUANT_SIZES[gtype]
        except (ValueError, KeyError):
            raise _Invalid(f"{label} has unknown ggml type {raw_type}") from None
        if shape[0] % block:
            raise _Invalid(
                f"{label} of type {gtype.name} has {shape[0]} elements per row, "
                f"not a multiple of its block size {block}"
            )
        nbytes = n_elements // block * type_size
        offset = r.u64(f"data offset of {label}")
        if offset % alignment:
            raise _Invalid(f"{label} data offset {offset} is not a multiple of {alignment}")
        tensors[tname] = TensorInfo(gtype, shape, offset, nbytes)

    data_offset = _align(r.pos, alignment)
    if tensors and data_offset > size:
        raise _Invalid(
            f"truncated: tensor data should start at byte {data_offset} "
            f"but the file has {size} bytes"
        )
    _check_layout(tensors, data_offset, alignment, size)
    absolute = {
        name: info._replace(offset=data_offset + info.offset) for name, info in tensors.items()
    }
    arch = kv.get("general.architecture", "")
    return GGUFSummary(
        version=version,
        n_tensors=n_tensors,
        n_kv=n_kv,
        architecture=arch if isinstance(arch, str) else "",
        alignment=alignment,
        data_offset=data_offset,
        kv=kv,
        tensors=absolute,
        kv_types=kv_types,
        file_size=size,
    )


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def _value_type(raw: int, key: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise _Invalid(f"key {_show(key)} has unknown value type {raw}") from None


def _read_value(r: _Reader, vtype: GGUFValueType, key: str, check_tokens: bool,
                keep: bool = False) -> Any:
    what = f"value of key {_show(key)}"
    if vtype == T.STRING:
        return r.string(what)
    if vtype == T.ARRAY:
        return _read_array(r, key, check_tokens and key == "tokenizer.ggml.tokens", keep)
    value = r.unpack(_SCALAR_FORMATS[vtype], what)
    if vtype == T.BOOL:
        if value > 1:
            raise _Invalid(f"key {_show(key)} is a bool with byte value {value}")
        return bool(value)
    return value


def _read_array(r: _Reader, key: str, is_vocab: bool, keep_all: bool = False) -> GGUFArray:
    """Read an array; for the vocabulary (`is_vocab`) also check every token. Values are
    kept up to MATERIALISE_LIMIT elements, or all of them with `keep_all`."""
    label = f"array {_show(key)}"
    etype = _value_type(r.u32(f"element type of {label}"), key)
    if etype == T.ARRAY:
        raise _Invalid(f"{label} is an array of arrays (not supported)")
    count = r.u64(f"length of {label}")
    if count > MAX_ARRAY_ELEMENTS:
        raise _Invalid(f"{label} has {count} elements (limit {MAX_ARRAY_ELEMENTS})")
    keep = keep_all or count <= MATERIALISE_LIMIT
    if etype == T.STRING:
        r.need(count * 8, f"{count} string lengths of {label}")
        values: list[str] = []
        seen: set[str] | None = set() if is_vocab else None
        for i in range(count):
            s = r.string(f"element {i} of {label}")
            if seen is not None:
                _check_token(s, i, seen)
            if keep:
                values.append(s)
        return GGUFArray(etype, count, tuple(values) if keep else None)
    fmt = _SCALAR_FORMATS[etype]
    nbytes = count * struct.calcsize(fmt)
    if not keep:
        r.skip(nbytes, f"{count} elements of {label}")
        return GGUFArray(etype, count, None)
    items = struct.unpack(f"<{count}{fmt}", r.read(nbytes, f"{count} elements of {label}"))
    if etype == T.BOOL:
        if any(v > 1 for v in items):
            raise _Invalid(f"{label} holds a bool that is neither 0 nor 1")
        items = tuple(bool(v) for v in items)
    return GGUFArray(etype, count, items)


def _check_token(token: str, index: int, seen: set[str]) -> None:
    # llama.cpp replaces an empty token by "[EMPTY_<i>]" and then asserts (abort) that
    # all token texts are distinct, so both are fatal for the native loader.
    if not token:
        raise _Invalid(f"tokenizer.ggml.tokens element {index} is empty")
    if token in seen:
        raise _Invalid(f"tokenizer.ggml.tokens has a duplicate token {_show(token)} at {index}")
    seen.add(token)


def _check_layout(tensors: dict[str, TensorInfo], data_offset: int, alignment: int,
                  size: int) -> None:
    """Tensor data inside the file, no overlap, packed in order as ggml requires."""
    available = size - data_offset
    for name, info in tensors.items():
        end = info.offset + info.nbytes
        if end > available:
            raise _Invalid(
                f"truncated: tensor data of {_show(name)} ends at byte {data_offset + end} "
                f"but the file has {size} bytes"
            )
    ordered = sorted(tensors.items(), key=lambda item: item[1].offset)
    for (prev, a), (name, b) in zip(ordered, ordered[1:], strict=False):
        if b.offset < a.offset + a.nbytes:
            raise _Invalid(f"tensors {_show(prev)} and {_show(name)} overlap")
    expected = 0
    for name, info in tensors.items():  # file order, as ggml's loader checks it
        if info.offset != expected:
            raise _Invalid(
                f"tensor {_show(name)} data is at offset {info.offset}, expected {expected} "
                f"(tensors must be packed in order with alignment {alignment})"
            )
        expected += _align(info.nbytes, alignment)


# ---------------------------------------------------------------------------------------
# Model-level checks

_U32 = (T.UINT32,)
_F32 = (T.FLOAT32,)
_STR = (T.STRING,)
_BOOL = (T.BOOL,)
_STR_ARRAY = ((T.ARRAY, T.STRING),)

# Known keys and the value types llama.cpp (or our engine) accepts for them. A scalar
# signature is the value type, an array one is (ARRAY, element type).
_GENERAL_SCHEMA: dict[str, tuple[Any, ...]] = {
    "general.architecture": _STR,
    "general.alignment": _U32,
    "general.name": _STR,
    "general.type": _STR,
    "general.description": _STR,
    "general.license": _STR,
    "general.file_type": _U32,
    "general.quantization_version": _U32,
    "tokenizer.ggml.model": _STR,
    "tokenizer.ggml.pre": _STR,
    "tokenizer.ggml.tokens": _STR_ARRAY,
    "tokenizer.ggml.merges": _STR_ARRAY,
    "tokenizer.ggml.token_type": ((T.ARRAY, T.INT32),),
    "tokenizer.ggml.scores": ((T.ARRAY, T.FLOAT32), (T.ARRAY, T.INT32)),
    "tokenizer.ggml.add_bos_token": _BOOL,
    "tokenizer.ggml.add_eos_token": _BOOL,
    "tokenizer.ggml.add_sep_token": _BOOL,
    "tokenizer.ggml.add_space_prefix": _BOOL,
    "tokenizer.chat_template": _STR,
    "hybrid_lsp.prompt_format_version": _U32,
}
_TOKEN_ID_KEYS = tuple(
    f"tokenizer.ggml.{name}_token_id"
    for name in (
        "bos", "eos", "eot", "eom", "unknown", "seperator", "padding", "mask", "cls",
        "prefix", "suffix", "middle", "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep",
        "fim_sep",
    )
)  # fmt: skip
_GENERAL_SCHEMA.update(dict.fromkeys(_TOKEN_ID_KEYS, _U32))

_ARCH_SCHEMA: dict[str, tuple[Any, ...]] = {
    "vocab_size": _U32,
    "context_length": _U32,
    "embedding_length": _U32,
    "block_count": _U32,
    "feed_forward_length": _U32,
    "attention.head_count": _U32,
    "attention.head_count_kv": _U32,
    "attention.key_length": _U32,
    "attention.value_length": _U32,
    "attention.layer_norm_epsilon": _F32,
    "attention.layer_norm_rms_epsilon": _F32,
    "attention.sliding_window": _U32,
    "attention.sliding_window_pattern": (
        T.UINT32, (T.ARRAY, T.BOOL), (T.ARRAY, T.INT32), (T.ARRAY, T.UINT32),
    ),
    "logit_scale": _F32,
    "rope.freq_base": _F32,
    "rope.freq_base_swa": _F32,
    "rope.dimension_count": _U32,
    "rope.scaling.type": _STR,
    "rope.scaling.factor": _F32,
    "rope.scaling.original_context_length": _U32,
}  # fmt: skip

_COHERE2_REQUIRED = (
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.layer_norm_epsilon",
    "attention.sliding_window",
    "logit_scale",
    "rope.freq_base",
)

_TYPE_NAMES = {T.FLOAT32: "f32", T.UINT32: "u32", T.INT32: "i32", T.BOOL: "bool",
               T.STRING: "string"}  # fmt: skip


def _signature(summary: GGUFSummary, key: str) -> Any:
    vtype = summary.kv_types[key]
    if vtype == T.ARRAY:
        return (T.ARRAY, summary.kv[key].element_type)
    return vtype


def _sig_name(sig: Any) -> str:
    if isinstance(sig, tuple):
        return f"array of {_TYPE_NAMES.get(sig[1], sig[1].name.lower())}"
    return _TYPE_NAMES.get(sig, sig.name.lower())


def _check_model(summary: GGUFSummary, architectures: frozenset[str]) -> None:
    kv = summary.kv
    if "general.architecture" not in kv:
        raise _Invalid("missing key 'general.architecture'")
    _check_schema(summary, "general.architecture", _STR)
    arch = summary.architecture
    if arch not in architectures:
        allowed = ", ".join(sorted(architectures)) or "none"
        raise _Invalid(f"architecture {_show(arch)} is not supported (expected: {allowed})")
    for key in kv:
        spec = _GENERAL_SCHEMA.get(key)
        if spec is None and key.startswith(arch + "."):
            spec = _ARCH_SCHEMA.get(key[len(arch) + 1 :])
        if spec is not None:
            _check_schema(summary, key, spec)
    n_vocab = _check_tokenizer(summary)
    if arch == "cohere2":
        _check_cohere2(summary, n_vocab)


def _check_schema(summary: GGUFSummary, key: str, spec: tuple[Any, ...]) -> None:
    sig = _signature(summary, key)
    if sig not in spec:
        want = " or ".join(_sig_name(s) for s in spec)
        raise _Invalid(f"key {_show(key)} has type {_sig_name(sig)}, expected {want}")


def _require(summary: GGUFSummary, key: str) -> Any:
    if key not in summary.kv:
        raise _Invalid(f"missing key {_show(key)}")
    return summary.kv[key]


def _check_tokenizer(summary: GGUFSummary) -> int:
    model = _require(summary, "tokenizer.ggml.model")
    if model != "gpt2":
        raise _Invalid(f"tokenizer.ggml.model is {_show(model)}, expected 'gpt2' (byte-level BPE)")
    tokens: GGUFArray = _require(summary, "tokenizer.ggml.tokens")
    _require(summary, "tokenizer.ggml.merges")
    n_vocab = tokens.count
    if n_vocab == 0:
        raise _Invalid("tokenizer.ggml.tokens is empty")
    for key in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
        arr = summary.kv.get(key)
        if arr is not None and arr.count != n_vocab:
            raise _Invalid(f"{key} has {arr.count} elements but there are {n_vocab} tokens")
    for key in _TOKEN_ID_KEYS:
        if key in summary.kv and summary.kv[key] >= n_vocab:
            raise _Invalid(f"{key} is {summary.kv[key]}, not below n_vocab={n_vocab}")
    return n_vocab


def _check_cohere2(summary: GGUFSummary, n_vocab: int) -> None:
    kv = summary.kv
    p = "cohere2."
    for name in _COHERE2_REQUIRED:
        _require(summary, p + name)
    n_embd = kv[p + "embedding_length"]
    n_layer = kv[p + "block_count"]
    n_ff = kv[p + "feed_forward_length"]
    n_head = kv[p + "attention.head_count"]
    n_head_kv = kv[p + "attention.head_count_kv"]
    for name, value in (("context_length", kv[p + "context_length"]), ("embedding_length", n_embd),
                        ("block_count", n_layer), ("feed_forward_length", n_ff),
                        ("attention.head_count", n_head),
                        ("attention.head_count_kv", n_head_kv),
                        ("attention.sliding_window", kv[p + "attention.sliding_window"])):
        if value == 0:
            raise _Invalid(f"{p}{name} is 0, must be > 0")
    if n_layer > MAX_BLOCKS:
        raise _Invalid(f"{p}block_count is {n_layer} (limit {MAX_BLOCKS})")
    if n_head % n_head_kv:
        raise _Invalid(f"{p}attention.head_count_kv ({n_head_kv}) does not divide "
                       f"head_count ({n_head})")
    head_dim = kv.get(p + "attention.key_length", n_embd // n_head)
    if kv.get(p + "attention.value_length", head_dim) != head_dim:
        raise _Invalid(f"{p}attention.value_length differs from key_length ({head_dim})")
    if head_dim == 0 or n_head * head_dim != n_embd:
        raise _Invalid(f"head_count ({n_head}) x head_dim ({head_dim}) != "
                       f"embedding_length ({n_embd}), which cohere2 requires")
    n_rot = kv.get(p + "rope.dimension_count", head_dim)
    if n_rot > head_dim or n_rot % 2:
        raise _Invalid(f"{p}rope.dimension_count is {n_rot}, must be even and <= {head_dim}")
    for name, positive in (("attention.layer_norm_epsilon", True), ("rope.freq_base", True),
                           ("rope.freq_base_swa", True), ("logit_scale", False)):
        value = kv.get(p + name)
        if value is not None and (not math.isfinite(value) or (positive and value <= 0)):
            raise _Invalid(f"{p}{name} is {value}, must be finite{' and > 0' if positive else ''}")
    _check_swa_pattern(summary, n_layer)
    vocab_size = kv.get(p + "vocab_size", n_vocab)
    if vocab_size != n_vocab:
        raise _Invalid(f"{p}vocab_size is {vocab_size} but there are {n_vocab} tokens")
    _check_cohere2_tensors(summary, n_vocab, n_embd, n_layer, n_ff, n_head * head_dim,
                           n_head_kv * head_dim)


def _check_swa_pattern(summary: GGUFSummary, n_layer: int) -> None:
    key = "cohere2.attention.sliding_window_pattern"
    pattern = summary.kv.get(key)
    if pattern is None:
        return  # llama.cpp's default period 4: layer 0 is a sliding-window layer
    if isinstance(pattern, GGUFArray):
        if pattern.count != n_layer:
            raise _Invalid(f"{key} has {pattern.count} elements, expected block_count={n_layer}")
        # count == block_count <= MAX_BLOCKS <= MATERIALISE_LIMIT, so the values are kept.
        any_swa = any(bool(v) for v in pattern.values or ())
    else:
        any_swa = pattern != 1  # period 1 makes every layer global
    if not any_swa:
        raise _Invalid(f"{key} makes every layer global; cohere2 needs a sliding-window layer")


def _check_cohere2_tensors(summary: GGUFSummary, n_vocab: int, n_embd: int, n_layer: int,
                           n_ff: int, n_q: int, n_kv: int) -> None:
    """The exact tensor set llama.cpp's cohere2 loader creates (ggml ne order)."""
    expected: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (n_embd, n_vocab),
        "output_norm.weight": (n_embd,),
    }
    for i in range(n_layer):
        b = f"blk.{i}."
        expected.update({
            b + "attn_norm.weight": (n_embd,),
            b + "attn_q.weight": (n_embd, n_q),
            b + "attn_k.weight": (n_embd, n_kv),
            b + "attn_v.weight": (n_embd, n_kv),
            b + "attn_output.weight": (n_q, n_embd),
            b + "ffn_gate.weight": (n_embd, n_ff),
            b + "ffn_up.weight": (n_embd, n_ff),
            b + "ffn_down.weight": (n_ff, n_embd),
        })  # fmt: skip
    tensors = summary.tensors
    extra = [name for name in tensors if name not in expected]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise _Invalid(f"unexpected tensor {_show(extra[0])}{more}: cohere2 has tied "
                       "embeddings, no biases and exactly block_count blocks")
    missing = [name for name in expected if name not in tensors]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _Invalid(f"missing tensor {_show(missing[0])}{more}")
    for name, want in expected.items():
        info = tensors[name]
        if info.shape != want:
            raise _Invalid(f"tensor {_show(name)} has ggml shape {list(info.shape)}, "
                           f"expected {list(want)}")
        if len(want) == 1 and info.type != GGMLQuantizationType.F32:
            raise _Invalid(f"norm tensor {_show(name)} has type {info.type.name}, expected F32")
