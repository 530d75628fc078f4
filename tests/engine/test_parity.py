"""Torch and llama.cpp compute the same model from the same GGUF file (issue: model core).

Tiny random-weights `cohere2` models built here (no network): 4 layers, global every 2nd,
window 16, GQA 4:2. Logits agree for prompts longer than the window and at positions
past 32K; greedy generations agree; Q8_0 stays close; the comparison fails when the
window is off by one, when RoPE rotates halves instead of pairs, or when the local/global
period is wrong (so the tests can fail).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import engine.model as model_mod
from engine.gguf_io import build_model, load_gguf, save_gguf
from engine.parity import (
    _rotate_half,
    _textbook_rope_tables,
    llama_cpp_or_skip,
    llama_logits,
    open_llama,
    random_model,
    tiny_args,
    tiny_tokenizer,
    torch_logits,
)

pytestmark = pytest.mark.llama

F32_TOL = 1e-3
N_PROMPT = 100  # > 6 windows of 16
FAR = 40_000  # positions past 32K


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def llama_cpp():
    return llama_cpp_or_skip()


@pytest.fixture(scope="module")
def f32_model(tok, tmp_path_factory):
    args = tiny_args(tok.vocab_size)
    model = random_model(args, seed=1, std=0.1, emb_std=1.0)
    path = tmp_path_factory.mktemp("m") / "tiny-f32.gguf"
    save_gguf(path, args, model.state_dict(), tok, dtype="f32")
    return model, path


@pytest.fixture(scope="module")
def llm_f32(llama_cpp, f32_model):
    return open_llama(llama_cpp, f32_model[1], n_ctx=FAR + 512)


def prompt(vocab: int, n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return rng.integers(7, vocab, size=n).tolist()  # skip the control tokens 0..6


def test_logits_agree_beyond_window(f32_model, llm_f32):
    model, _ = f32_model
    toks = prompt(model.args.vocab_size, N_PROMPT)
    ref = torch_logits(model, toks)
    got = llama_logits(llm_f32, toks)
    diff = np.abs(ref - got).max()
    assert diff < F32_TOL, f"max |torch - llama.cpp| = {diff:.2e}"
    assert (ref.argmax(-1) == got.argmax(-1)).all()


def test_logits_agree_past_32k(f32_model, llm_f32):
    model, _ = f32_model
    toks = prompt(model.args.vocab_size, 64, seed=1)
    ref = torch_logits(model, toks, start=FAR)
    got = llama_logits(llm_f32, toks, start=FAR)
    diff = np.abs(ref - got).max()
    assert diff < F32_TOL, f"max diff at positions {FAR}+: {diff:.2e}"
    # The offset really took effect: RoPE is relative, so only rounding differs, but it does.
    near = torch_logits(model, toks, start=0)
    assert np.abs(near - ref).max() > 1e-5


def test_ggml_order_rope_tables_matter_far_out(f32_model, llm_f32, monkeypatch):
    """A textbook float32 RoPE table drifts from llama.cpp past 32K; ours does not."""
    model, _ = f32_model
    toks = prompt(model.args.vocab_size, 64, seed=1)
    got = llama_logits(llm_f32, toks, start=FAR)
    ours = np.abs(torch_logits(model, toks, start=FAR) - got).max()
    monkeypatch.setattr(model_mod, "rope_tables", _textbook_rope_tables)
    naive_model = model_mod.Transformer(model.args)
    naive_model.load_state_dict(_state(model))
    naive = np.abs(torch_logits(naive_model.eval(), toks, start=FAR) - got).max()
    assert naive > 4 * ours, f"naive {naive:.2e} vs ggml-order {ours:.2e}"


def test_chunked_prefill_matches_one_shot(f32_model):
    model, _ = f32_model
    toks = prompt(model.args.vocab_size, 90, seed=2)
    whole = torch_logits(model, toks)
    model.setup_caches(1, 128)
    try:
        with torch.no_grad():
            parts = [model(torch.tensor([toks[a:b]]), start=a)[0]
                     for a, b in [(0, 7), (7, 40), (40, 41), (41, 90)]]
        chunked = torch.cat(parts).numpy()
    finally:
        model.drop_caches()
    assert np.abs(whole - chunked).max() < 1e-4


def greedy_torch(model, toks: list[int], n: int) -> tuple[list[int], float]:
    model.setup_caches(1, len(toks) + n + 1)
    out, margin = [], float("inf")
    try:
        with torch.no_grad():
            logits = model(torch.tensor([toks]), start=0)[0, -1]
            pos = len(toks)
            for _ in range(n):
                top2 = torch.topk(logits, 2).values
                margin = min(margin, float(top2[0] - top2[1]))
                nxt = int(logits.argmax())
                out.append(nxt)
                logits = model(torch.tensor([[nxt]]), start=pos)[0, -1]
                pos += 1
    finally:
        model.drop_caches()
    return out, margin


def greedy_llama(llm, toks: list[int], n: int) -> list[int]:
    llm.reset()
    llm._ctx.kv_cache_clear()
    llm.eval(toks)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


def test_greedy_generation_equal(f32_model, llm_f32):
    model, _ = f32_model
    toks = prompt(model.args.vocab_size, 40, seed=3)
    ref, margin = greedy_torch(model, toks, 32)
    assert margin > 100 * F32_TOL, f"top-1 margin {margin:.3g} too small for a fair test"
    assert greedy_llama(llm_f32, toks, 32) == ref


def test_q8_0_close(llama_cpp, f32_model, tok, tmp_path):
    model, _ = f32_model
    path = tmp_path / "tiny-q8.gguf"
    save_gguf(path, model.args, model.state_dict(), tok, dtype="q8_0")
    llm = open_llama(llama_cpp, path, n_ctx=256)
    toks = prompt(model.args.vocab_size, N_PROMPT, seed=4)
    ref = torch_logits(model, toks)
    got = llama_logits(llm, toks)
    cos = (ref * got).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1))
    assert cos.min() > 0.99, f"min cosine {cos.min():.4f}"


# -- the comparison can fail ------------------------------------------------------------

def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("delta", [-1, 1])
def test_window_off_by_one_is_caught(f32_model, llm_f32, delta):
    model, _ = f32_model
    wrong = model_mod.Transformer(tiny_args(model.args.vocab_size, window=16 + delta))
    wrong.load_state_dict(_state(model))
    toks = prompt(model.args.vocab_size, N_PROMPT)
    diff = np.abs(torch_logits(wrong.eval(), toks) - llama_logits(llm_f32, toks)).max()
    assert diff > 10 * F32_TOL, f"window {16 + delta} went unnoticed (diff {diff:.2e})"


def test_wrong_rope_layout_is_caught(f32_model, llm_f32, monkeypatch):
    model, _ = f32_model
    monkeypatch.setattr(model_mod, "apply_rope", _rotate_half)
    toks = prompt(model.args.vocab_size, N_PROMPT)
    diff = np.abs(torch_logits(model, toks) - llama_logits(llm_f32, toks)).max()
    assert diff > 10 * F32_TOL, f"rotate-half RoPE went unnoticed (diff {diff:.2e})"


def test_wrong_period_is_caught(f32_model, llm_f32):
    model, _ = f32_model
    wrong = model_mod.Transformer(tiny_args(model.args.vocab_size, global_every=4))
    wrong.load_state_dict(_state(model))
    toks = prompt(model.args.vocab_size, N_PROMPT)
    diff = np.abs(torch_logits(wrong.eval(), toks) - llama_logits(llm_f32, toks)).max()
    assert diff > 10 * F32_TOL


# -- round trip -------------------------------------------------------------------------

def test_round_trip_f32_identical(f32_model):
    model, path = f32_model
    loaded = load_gguf(path)
    assert loaded.info.args == model.args
    back = build_model(loaded)
    toks = prompt(model.args.vocab_size, 50, seed=5)
    assert np.array_equal(torch_logits(model, toks), torch_logits(back, toks))


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0"])
def test_round_trip_lossy_dtypes(f32_model, tok, tmp_path, dtype):
    model, _ = f32_model
    path = tmp_path / f"m-{dtype}.gguf"
    save_gguf(path, model.args, model.state_dict(), tok, dtype=dtype)
    loaded = load_gguf(path)
    assert loaded.info.file_type == dtype
    for name, ref in model.state_dict().items():
        got = loaded.state_dict[name]
        assert got.shape == ref.shape and got.dtype == torch.float32
        if ref.dim() == 1:
            assert torch.equal(got, ref), name  # norms stay F32
        elif dtype == "f16":
            assert torch.equal(got, ref.half().float()), name
        elif dtype == "bf16":
            assert torch.equal(got, ref.bfloat16().float()), name
        else:
            # Q8_0: per-32 block scale d = absmax/127 stored in f16, so |error| <= d/2 from
            # rounding plus 127 * |d - f16(d)| <= 127 * 2^-11 d from the scale: 0.57 d.
            blocks = ref.reshape(-1, 32)
            bound = blocks.abs().amax(-1, keepdim=True) / 127 * 0.57 + 1e-7
            assert ((got.reshape(-1, 32) - blocks).abs() <= bound).all(), name
    # Export again from the loaded weights: a second round trip changes nothing.
    path2 = tmp_path / f"m2-{dtype}.gguf"
    save_gguf(path2, model.args, loaded.state_dict, tok, dtype=dtype)
    again = load_gguf(path2)
    for name, t in loaded.state_dict.items():
        assert torch.equal(again.state_dict[name], t), name
