"""GGUF model files: export torch weights, read the config and tokenizer, load weights back.

One file is the whole model: the `cohere2` hyperparameters, the tokenizer
(tokenizer.ggml.*), the prompt-format version and the weights. Writing and reading go
through gguf-py (`gguf` on PyPI); key names come from its constants or from the
`KEY_*` constants below, never inline strings.

Importing this module does not import torch (the llama.cpp backend reads model info
through it); the tensor functions import torch when called.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import numpy as np

from engine.config import ConfigError, ModelArgs

if TYPE_CHECKING:
    import torch

    from engine.tokenizer import Tokenizer

log = logging.getLogger(__name__)

ARCH = "cohere2"
KEY_PROMPT_FORMAT = "hybrid_lsp.prompt_format_version"
KEY_DEMO = "hybrid_lsp.demo"
KEY_EXTRA_PREFIX = "hybrid_lsp."

_K = gguf.Keys
_LLM_KEYS = {
    "context_length": _K.LLM.CONTEXT_LENGTH,
    "dim": _K.LLM.EMBEDDING_LENGTH,
    "n_layer": _K.LLM.BLOCK_COUNT,
    "ffn_dim": _K.LLM.FEED_FORWARD_LENGTH,
    "n_head": _K.Attention.HEAD_COUNT,
    "n_kv_head": _K.Attention.HEAD_COUNT_KV,
    "norm_eps": _K.Attention.LAYERNORM_EPS,
    "window": _K.Attention.SLIDING_WINDOW,
    "global_every": _K.Attention.SLIDING_WINDOW_PATTERN,
    "logit_scale": _K.LLM.LOGIT_SCALE,
    "rope_base": _K.Rope.FREQ_BASE,
}

#: torch parameter name -> GGUF tensor name ({bid} is the layer index).
TENSOR_NAMES: dict[str, str] = {
    "tok_embeddings.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "layers.{bid}.attn_norm.weight": "blk.{bid}.attn_norm.weight",
    "layers.{bid}.attention.wq.weight": "blk.{bid}.attn_q.weight",
    "layers.{bid}.attention.wk.weight": "blk.{bid}.attn_k.weight",
    "layers.{bid}.attention.wv.weight": "blk.{bid}.attn_v.weight",
    "layers.{bid}.attention.wo.weight": "blk.{bid}.attn_output.weight",
    "layers.{bid}.feed_forward.gate.weight": "blk.{bid}.ffn_gate.weight",
    "layers.{bid}.feed_forward.up.weight": "blk.{bid}.ffn_up.weight",
    "layers.{bid}.feed_forward.down.weight": "blk.{bid}.ffn_down.weight",
}

_Q = gguf.GGMLQuantizationType

#: export dtype -> (type of the 2-D weights, general.file_type). gguf-py's quantizers for
#: Q8_0, Q5_0, Q5_1, Q4_0 and Q4_1 are bit-exact with ggml's reference quantizers (the
#: ones llama-quantize uses without an imatrix; checked with `llama_model_quantize`, pure).
DTYPES: dict[str, tuple[gguf.GGMLQuantizationType, int]] = {
    "f32": (_Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (_Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (_Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (_Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q5_1": (_Q.Q5_1, gguf.LlamaFileType.MOSTLY_Q5_1),
    "q5_0": (_Q.Q5_0, gguf.LlamaFileType.MOSTLY_Q5_0),
    "q4_1": (_Q.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
    "q4_0": (_Q.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}

#: The token embedding is also the output projection (tied), so the 4- and 5-bit dtypes
#: keep it at Q8_0. llama-quantize does the same for a tied output: Q6_K where rows are a
#: multiple of 256, Q8_0 otherwise; gguf-py cannot quantize Q6_K, so Q8_0 everywhere.
EMBEDDING_TYPE: dict[str, gguf.GGMLQuantizationType] = {
    "q5_1": _Q.Q8_0, "q5_0": _Q.Q8_0, "q4_1": _Q.Q8_0, "q4_0": _Q.Q8_0,
}
EMBEDDING_TENSOR = "token_embd.weight"


class ExportError(ValueError):
    """The model cannot be written as a GGUF file llama.cpp runs."""


def gguf_name(torch_name: str) -> str:
    """Map a torch parameter name to its GGUF tensor name."""
    parts = torch_name.split(".")
    if parts[0] == "layers" and len(parts) > 2:
        key = ".".join(["layers", "{bid}", *parts[2:]])
        if key in TENSOR_NAMES:
            return TENSOR_NAMES[key].format(bid=parts[1])
    if torch_name in TENSOR_NAMES:
        return TENSOR_NAMES[torch_name]
    raise ExportError(f"Expected a parameter of the cohere2 model, got {torch_name!r}")


def torch_name(gguf_tensor: str) -> str:
    """Map a GGUF tensor name back to the torch parameter name."""
    inverse = {v: k for k, v in TENSOR_NAMES.items()}
    parts = gguf_tensor.split(".")
    if parts[0] == "blk" and len(parts) > 2:
        key = ".".join(["blk", "{bid}", *parts[2:]])
        if key in inverse:
            return inverse[key].format(bid=parts[1])
    if gguf_tensor in inverse:
        return inverse[gguf_tensor]
    raise KeyError(f"Unknown tensor {gguf_tensor!r} for {ARCH}")


def _tensor_type(name: str, arr: np.ndarray, dtype: str,
                 embedding_dtype: str | None = None) -> gguf.GGMLQuantizationType:
    """Norms (1-D) stay F32; the embedding is `embedding_dtype` if given, else follows
    EMBEDDING_TYPE; block types need rows that are a multiple of their block size (32 for
    every quantized type here)."""
    if arr.ndim == 1:
        return _Q.F32
    qtype = DTYPES[dtype][0]
    if name == EMBEDDING_TENSOR:
        qtype = (DTYPES[embedding_dtype][0] if embedding_dtype
                 else EMBEDDING_TYPE.get(dtype, qtype))
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if arr.shape[-1] % block:
        raise ExportError(f"{name}: rows of {arr.shape[-1]} are not a multiple of {block} "
                          f"({qtype.name})")
    return qtype


def _check_dtypes(dtype: str, embedding_dtype: str | None) -> None:
    for d in (dtype, embedding_dtype):
        if d is not None and d not in DTYPES:
            raise ExportError(f"Expected dtype in {sorted(DTYPES)}, got {d!r}")


def tensor_types(args: ModelArgs, dtype: str, embedding_dtype: str | None = None,
                 ) -> dict[str, gguf.GGMLQuantizationType]:
    """The ggml type of each GGUF tensor when `args` is exported as `dtype`."""
    _check_dtypes(dtype, embedding_dtype)
    return {name: _tensor_type(name, np.empty(shape, dtype=np.float32), dtype, embedding_dtype)
            for name, shape in _gguf_shapes(args).items()}


def export_size(args: ModelArgs, dtype: str, embedding_dtype: str | None = None) -> int:
    """Bytes of tensor data in a `dtype` export of `args` (the file adds the tokenizer,
    metadata and alignment padding): computed from the shapes, no weights needed."""
    shapes = _gguf_shapes(args)
    total = 0
    for name, qtype in tensor_types(args, dtype, embedding_dtype).items():
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        total += int(np.prod(shapes[name])) // block * size
    return total


def _gguf_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """GGUF tensor name -> torch (numpy) shape, rows last, as `save_gguf` receives them."""
    return {gguf_name(k): v for k, v in _param_shapes(args).items()}


def _param_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    hd = args.head_dim
    per_layer = {
        "attn_norm.weight": (args.dim,),
        "attention.wq.weight": (args.n_head * hd, args.dim),
        "attention.wk.weight": (args.n_kv_head * hd, args.dim),
        "attention.wv.weight": (args.n_kv_head * hd, args.dim),
        "attention.wo.weight": (args.dim, args.n_head * hd),
        "feed_forward.gate.weight": (args.ffn_dim, args.dim),
        "feed_forward.up.weight": (args.ffn_dim, args.dim),
        "feed_forward.down.weight": (args.dim, args.ffn_dim),
    }
    shapes: dict[str, tuple[int, ...]] = {
        "tok_embeddings.weight": (args.vocab_size, args.dim), "norm.weight": (args.dim,)}
    for i in range(args.n_layer):
        shapes.update({f"layers.{i}.{k}": v for k, v in per_layer.items()})
    return shapes


def _encode(arr: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    if qtype == _Q.F32:
        return arr.astype(np.float32)
    if qtype == _Q.F16:
        return arr.astype(np.float16)
    return gguf.quants.quantize(arr.astype(np.float32), qtype)


def save_gguf(
    path: str | Path, args: ModelArgs, state_dict: dict[str, torch.Tensor], tokenizer: Tokenizer,
    *, dtype: str = "f32", embedding_dtype: str | None = None, name: str = "hybrid-lsp",
    demo: bool = False, extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Write the model, its tokenizer and its prompt-format version to one GGUF file.

    `embedding_dtype` overrides the token embedding's type (by default Q8_0 for the 4- and
    5-bit dtypes, see EMBEDDING_TYPE; `general.file_type` follows `dtype`).
    Refuses what `cohere2` cannot express (ExportError). The file is written to a
    temporary name and renamed, so a crash never leaves a half-written model behind.
    """
    from engine.prompt import PROMPT_FORMAT_VERSION

    _check_dtypes(dtype, embedding_dtype)
    problems = args.gguf_problems()
    if tokenizer.vocab_size != args.vocab_size:
        problems.append(f"tokenizer has {tokenizer.vocab_size} tokens, model {args.vocab_size}")
    if problems:
        raise ExportError("cannot export as cohere2: " + "; ".join(problems))
    expected = {gguf_name(k) for k in _expected_torch_names(args)}
    got = {gguf_name(k): v for k, v in state_dict.items()}
    if set(got) != expected:
        raise ExportError(f"state dict mismatch: missing {sorted(expected - set(got))[:5]}, "
                          f"extra {sorted(set(got) - expected)[:5]}")

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(tmp, ARCH)
    w.add_name(name)
    w.add_file_type(DTYPES[dtype][1])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(args.context_length)
    w.add_embedding_length(args.dim)
    w.add_block_count(args.n_layer)
    w.add_feed_forward_length(args.ffn_dim)
    w.add_head_count(args.n_head)
    w.add_head_count_kv(args.n_kv_head)
    w.add_layer_norm_eps(float(args.norm_eps))
    w.add_sliding_window(args.window)
    w.add_sliding_window_pattern(int(args.global_every))
    w.add_logit_scale(float(args.logit_scale))
    w.add_rope_freq_base(float(args.rope_base))
    w.add_rope_dimension_count(args.head_dim)
    w.add_rope_scaling_type(gguf.RopeScalingType.NONE)
    w.add_vocab_size(args.vocab_size)
    w.add_uint32(KEY_PROMPT_FORMAT, PROMPT_FORMAT_VERSION)
    w.add_bool(KEY_DEMO, bool(demo))
    for key, value in (extra_metadata or {}).items():
        w.add_string(KEY_EXTRA_PREFIX + key, str(value))
    tokenizer.add_to_gguf(w)
    for tname in sorted(got, key=_tensor_order):
        arr = got[tname].detach().float().cpu().numpy()
        qtype = _tensor_type(tname, arr, dtype, embedding_dtype)
        w.add_tensor(tname, _encode(arr, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return path


def _tensor_order(name: str) -> tuple:
    parts = name.split(".")
    if parts[0] == "blk":
        return (1, int(parts[1]), name)
    return (0 if name.startswith("token_embd") else 2, 0, name)


def _expected_torch_names(args: ModelArgs) -> list[str]:
    names = []
    for key in TENSOR_NAMES:
        if "{bid}" in key:
            names += [key.format(bid=i) for i in range(args.n_layer)]
        else:
            names.append(key)
    return names


# -- reading ---------------------------------------------------------------------------

def _field_value(reader: gguf.GGUFReader, key: str) -> Any:
    f = reader.get_field(key)
    return None if f is None else f.contents()


@dataclass(frozen=True)
class ModelInfo:
    """Everything in a model file except the weights."""

    path: Path
    args: ModelArgs
    tokenizer: Tokenizer
    name: str
    demo: bool
    file_type: str
    prompt_format_version: int | None
    metadata: dict[str, Any] = field(default_factory=dict)


def _args_from_reader(reader: gguf.GGUFReader, path: Path) -> ModelArgs:
    arch = _field_value(reader, _K.General.ARCHITECTURE)
    if arch != ARCH:
        raise ConfigError(f"{path.name}: expected architecture {ARCH!r}, got {arch!r}")
    values: dict[str, Any] = {}
    for attr, key in _LLM_KEYS.items():
        v = _field_value(reader, key.format(arch=ARCH))
        if v is None and attr == "global_every":
            v = 4  # llama.cpp's default period for cohere2
        if v is None:
            raise ConfigError(f"{path.name}: missing key {key.format(arch=ARCH)}")
        if isinstance(v, list):
            raise ConfigError(f"{path.name}: per-layer arrays are not supported for {attr}")
        values[attr] = v
    tokens = reader.get_field(_K.Tokenizer.LIST)
    if tokens is None:
        raise ConfigError(f"{path.name}: missing {_K.Tokenizer.LIST}")
    values["vocab_size"] = len(tokens.data)
    return ModelArgs(**values)


def _file_type_name(ft: int | None) -> str:
    for name, (_, code) in DTYPES.items():
        if ft == code:
            return name
    return f"type {ft}"


def read_model_info(path: str | Path, *, validate: bool = True) -> ModelInfo:
    """Read config, tokenizer and metadata (no weights, no torch).

    With validate=True the file first passes `engine.gguf_validate`, which raises
    ModelFileError with one line naming the file and the problem.
    """
    from engine.tokenizer import Tokenizer

    path = Path(path)
    if validate:
        from engine.gguf_validate import validate_gguf

        # The validator reads every key anyway, much faster than GGUFReader (0.1 s against
        # 0.9 s for a 16K vocabulary): build the info from what it read.
        summary = validate_gguf(path, keep_arrays=_TOKENIZER_ARRAYS)
        return _info_from_reader(_SummaryFields(summary.kv), path, Tokenizer)
    reader = gguf.GGUFReader(path, "r")
    return _info_from_reader(reader, path, Tokenizer)


_TOKENIZER_ARRAYS = frozenset({_K.Tokenizer.LIST, _K.Tokenizer.TOKEN_TYPE, _K.Tokenizer.MERGES})


class _SummaryField:
    """One key's value, as GGUFReader's field offers it (`contents()`, `data`)."""

    def __init__(self, value: Any) -> None:
        from engine.gguf_validate import GGUFArray

        if isinstance(value, GGUFArray):
            if value.values is None:
                raise ConfigError(f"array of {value.count} elements was not read")
            value = list(value.values)
        self.value = value
        self.data = value if isinstance(value, list) else [value]

    def contents(self) -> Any:
        return self.value


class _SummaryFields:
    """A validated file's keys behind GGUFReader's interface (`fields`, `get_field`)."""

    def __init__(self, kv: dict[str, Any]) -> None:
        self.fields = kv

    def get_field(self, key: str) -> _SummaryField | None:
        return _SummaryField(self.fields[key]) if key in self.fields else None


def _info_from_reader(reader: gguf.GGUFReader, path: Path, tokenizer_cls) -> ModelInfo:
    args = _args_from_reader(reader, path)
    metadata = {}
    for key in reader.fields:
        if key.startswith(KEY_EXTRA_PREFIX) or key.startswith("general."):
            metadata[key] = _field_value(reader, key)
    pf = _field_value(reader, KEY_PROMPT_FORMAT)
    return ModelInfo(
        path=path, args=args, tokenizer=tokenizer_cls.from_gguf(reader),
        name=str(_field_value(reader, _K.General.NAME) or path.stem),
        demo=bool(_field_value(reader, KEY_DEMO)),
        file_type=_file_type_name(_field_value(reader, _K.General.FILE_TYPE)),
        prompt_format_version=None if pf is None else int(pf), metadata=metadata,
    )


@dataclass(frozen=True)
class LoadedModel:
    info: ModelInfo
    state_dict: dict[str, torch.Tensor]


def load_gguf(path: str | Path, *, validate: bool = True) -> LoadedModel:
    """Read a model file into float32 torch tensors (quantized types are dequantized)."""
    import torch

    from engine.tokenizer import Tokenizer

    path = Path(path)
    if validate:
        from engine.gguf_validate import validate_gguf

        validate_gguf(path)
    reader = gguf.GGUFReader(path, "r")
    info = _info_from_reader(reader, path, Tokenizer)
    state = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        arr = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        state[torch_name(t.name)] = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
    return LoadedModel(info=info, state_dict=state)


def build_model(loaded: LoadedModel, *, device: str | torch.device = "cpu",
                dtype: torch.dtype | None = None):
    """A `Transformer` holding the loaded weights (built on `meta`, assigned, no copy)."""
    import torch

    from engine.model import Transformer

    with torch.device("meta"):
        model = Transformer(loaded.info.args)
    model.load_state_dict(loaded.state_dict, assign=True, strict=True)
    model = model.to(device=device, dtype=dtype or torch.float32)
    return model.eval()
