"""4- and 5-bit exports (q5_0, q5_1, q4_0, q4_1): layout, bit-exactness with ggml, round
trip, sizes, and llama.cpp parity on the tiny random model of tests/engine/test_parity.py.

Thresholds come from measurements on that model (100-token prompts, logit std 8.6), with
margin: llama.cpp on the q5_0 file vs torch F32 had min cosine 0.99933 (q5_1 0.99931,
q4_1 0.99787, q4_0 0.99696), vs torch running the dequantized weights 0.99996 (only
llama.cpp's Q8_0 activations differ); argmax agreed everywhere.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from engine.config import from_name
from engine.gguf_io import (
    DTYPES,
    EMBEDDING_TENSOR,
    _param_shapes,
    build_model,
    export_size,
    gguf_name,
    load_gguf,
    save_gguf,
    tensor_types,
)
from engine.gguf_validate import validate_gguf
from engine.parity import (
    llama_cpp_or_skip,
    llama_logits,
    open_llama,
    random_model,
    tiny_args,
    tiny_tokenizer,
    torch_logits,
)

Q = gguf.GGMLQuantizationType
LOW_BIT = ["q5_0", "q5_1", "q4_0", "q4_1"]
# min cosine of llama.cpp vs torch F32 (measured: see the module docstring)
F32_COSINE = {"q5_0": 0.995, "q5_1": 0.995, "q4_0": 0.98, "q4_1": 0.98}
DEQ_COSINE = 0.9995
LLAMA_FTYPE = {"q5_0": 8, "q5_1": 9, "q4_0": 2, "q4_1": 3}  # llama_ftype (llama.h)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tiny(tok):
    args = tiny_args(tok.vocab_size)
    return random_model(args, seed=1, std=0.1, emb_std=1.0)


@pytest.fixture(scope="module")
def exported(tiny, tok, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("q")
    out = {}
    for dtype in ["f32", *LOW_BIT]:
        out[dtype] = save_gguf(d / f"tiny-{dtype}.gguf", tiny.args, tiny.state_dict(), tok,
                               dtype=dtype)
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _prompt(vocab: int, n: int = 100, seed: int = 4) -> list[int]:
    return np.random.default_rng(seed).integers(7, vocab, size=n).tolist()


# -- layout, file type, validator ------------------------------------------------------

@pytest.mark.parametrize("dtype", LOW_BIT)
def test_tensor_types_and_file_type(exported, dtype):
    path = exported[dtype]
    validate_gguf(path)
    reader = gguf.GGUFReader(path)
    ft = reader.get_field(gguf.Keys.General.FILE_TYPE).contents()
    assert ft == DTYPES[dtype][1] == getattr(gguf.LlamaFileType, f"MOSTLY_{dtype.upper()}")
    for t in reader.tensors:
        if len(t.shape) == 1:
            assert t.tensor_type == Q.F32, t.name
        elif t.name == EMBEDDING_TENSOR:
            assert t.tensor_type == Q.Q8_0  # tied with the output projection
        else:
            assert t.tensor_type == DTYPES[dtype][0], t.name
    assert load_gguf(path).info.file_type == dtype


def test_rows_must_fit_the_block(tok, tmp_path):
    from engine.gguf_io import ExportError

    args = tiny_args(tok.vocab_size, dim=48, n_head=4, n_kv_head=2)  # 48 % 32 != 0
    model = random_model(args)
    save_gguf(tmp_path / "ok.gguf", args, model.state_dict(), tok, dtype="f16")
    with pytest.raises(ExportError, match="multiple of 32"):
        save_gguf(tmp_path / "bad.gguf", args, model.state_dict(), tok, dtype="q5_0")


# -- round trip ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", LOW_BIT)
def test_round_trip(tiny, tok, exported, tmp_path, dtype):
    loaded = load_gguf(exported[dtype])
    types = tensor_types(tiny.args, dtype)
    for name, ref in tiny.state_dict().items():
        got = loaded.state_dict[name]
        assert got.shape == ref.shape and got.dtype == torch.float32, name
        if ref.dim() == 1:
            assert torch.equal(got, ref), name
            continue
        qtype = types[gguf_name(name)]
        x = ref.numpy()
        want = gguf.quants.dequantize(gguf.quants.quantize(x, qtype), qtype)
        assert np.array_equal(got.numpy(), want), name
        if qtype in (Q.Q5_0, Q.Q4_0):
            # Symmetric: d = absmax / -16 (-8) in f16; rounding error <= |d| / 2 except the
            # clipped top code (+absmax maps to 15d, 7d): <= |d|, plus the f16 scale error.
            levels = 16 if qtype == Q.Q5_0 else 8
            blocks = ref.reshape(-1, 32)
            bound = blocks.abs().amax(-1, keepdim=True) / levels * 1.01 + 1e-7
            assert ((got.reshape(-1, 32) - blocks).abs() <= bound).all(), name
    # A second export of the loaded weights stores the same blocks.
    again = load_gguf(save_gguf(tmp_path / "again.gguf", tiny.args, loaded.state_dict, tok,
                                dtype=dtype))
    for name, t in loaded.state_dict.items():
        assert torch.equal(again.state_dict[name], t), name


# -- sizes ---------------------------------------------------------------------------------

def test_export_size_matches_the_file(tiny, exported):
    assert _param_shapes(tiny.args) == {k: tuple(v.shape) for k, v in tiny.state_dict().items()}
    for dtype in ["f32", *LOW_BIT]:
        reader = gguf.GGUFReader(exported[dtype])
        assert export_size(tiny.args, dtype) == sum(int(t.n_bytes) for t in reader.tensors)


def test_named_config_sizes():
    base, demo = from_name("base", 16384), from_name("demo", 4096)
    # 4-bit + Q8_0 embedding < 5-bit < Q8_0; base q5_0 fits the 34 MB budget, q8_0 does not.
    for args in (base, demo):
        sizes = [export_size(args, d) for d in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16")]
        assert sizes == sorted(sizes)
    assert 33.5e6 < export_size(base, "q5_0") < 34e6 < export_size(base, "q8_0")
    # With the embedding at 5 bits too (embedding_dtype), base q5_0 is under 31 MB.
    assert 30.5e6 < export_size(base, "q5_0", "q5_0") < 31e6
    assert tensor_types(base, "q5_0", "q5_0")["token_embd.weight"] == Q.Q5_0
    assert tensor_types(base, "q5_0", "f16")["token_embd.weight"] == Q.F16


# -- llama.cpp ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llama_cpp():
    return llama_cpp_or_skip()


@pytest.mark.llama
@pytest.mark.parametrize("dtype", LOW_BIT)
def test_llama_cpp_parity(llama_cpp, tiny, exported, dtype):
    path = exported[dtype]
    deq = build_model(load_gguf(path))
    llm = open_llama(llama_cpp, path, n_ctx=256)
    toks = _prompt(tiny.args.vocab_size)
    ref, dq, got = torch_logits(tiny, toks), torch_logits(deq, toks), llama_logits(llm, toks)
    vs_f32, vs_deq = _cosine(ref, got).min(), _cosine(dq, got).min()
    assert vs_f32 > F32_COSINE[dtype], f"llama.cpp vs torch F32: min cosine {vs_f32:.5f}"
    assert vs_deq > DEQ_COSINE, f"llama.cpp vs torch dequantized: min cosine {vs_deq:.6f}"
    assert (1 - vs_deq) < (1 - vs_f32) / 4  # the weights, not llama.cpp, make the difference
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.95
    assert (dq.argmax(-1) == got.argmax(-1)).mean() >= 0.98


@pytest.mark.llama
@pytest.mark.parametrize("dtype", LOW_BIT)
def test_quantizer_bit_exact_with_ggml(llama_cpp, exported, tmp_path, dtype):
    """llama-quantize (pure: every 2-D tensor, the embedding too) stores our blocks; and
    llama.cpp runs a file whose token embedding is 4/5-bit (get_rows on the CPU)."""
    src = exported["f32"]
    out = tmp_path / f"ggml-{dtype}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.pure, params.nthread = LLAMA_FTYPE[dtype], True, 1
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(),
                                          ctypes.byref(params)) == 0
    qtype = DTYPES[dtype][0]
    f32 = {t.name: np.array(t.data, dtype=np.float32) for t in gguf.GGUFReader(src).tensors}
    n_checked = 0
    for t in gguf.GGUFReader(out).tensors:
        if len(t.shape) == 1:
            continue
        assert t.tensor_type == qtype, t.name
        ours = gguf.quants.quantize(f32[t.name], qtype)
        assert np.array_equal(np.asarray(t.data).reshape(ours.shape), ours), t.name
        n_checked += 1
    assert n_checked == 1 + 7 * 4
    deq = build_model(load_gguf(out))
    llm = open_llama(llama_cpp, out, n_ctx=64)
    toks = _prompt(deq.args.vocab_size, 32, seed=5)
    assert _cosine(torch_logits(deq, toks), llama_logits(llm, toks)).min() > DEQ_COSINE
