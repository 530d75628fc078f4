"""Torch vs llama.cpp parity: tiny random-weights models, both backends' logits, a report.

The builders here serve the parity tests (tests/engine/test_parity.py) and
`hybrid-lsp bench parity`, which prints the measured differences: next-token logits of
torch and llama.cpp for one GGUF file (F32 and Q8_0), near position 0 and past 32K, and
how far they move when the window is off by one or RoPE rotates halves instead of pairs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from engine.config import ModelArgs
from engine.model import Transformer

RUST_SNIPPETS = [
    "fn main() {\n    println!(\"hello, world\");\n}\n",
    "pub struct Point { pub x: f64, pub y: f64 }\n",
    "impl Point {\n    pub fn norm(&self) -> f64 { (self.x * self.x + self.y * self.y).sqrt() }"
    "\n}\n",
    "use std::collections::HashMap;\nlet mut m: HashMap<String, usize> = HashMap::new();\n",
    "match value {\n    Some(v) => v,\n    None => return Err(Error::Missing),\n}\n",
    "#[derive(Debug, Clone, PartialEq)]\nenum Token { Ident(String), Number(i64), Eof }\n",
    "for (i, item) in items.iter().enumerate() {\n\tif i % 2 == 0 { continue; }\n}\n",
] * 4


def llama_cpp_or_skip():
    """Import llama_cpp; in tests, skip when it is absent (CI=true makes that a failure)."""
    try:
        import llama_cpp
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        import pytest

        pytest.skip("llama-cpp-python is not installed")
    return llama_cpp


def tiny_tokenizer(tmp: Path, vocab_size: int = 320):
    """A byte-level BPE trained in a second on a handful of Rust snippets."""
    from engine.tokenizer import train_tokenizer

    src = tmp / "src"
    src.mkdir(exist_ok=True)
    for i, s in enumerate(RUST_SNIPPETS):
        (src / f"f{i}.rs").write_text(s)
    return train_tokenizer(src, vocab_size)


def tiny_args(vocab_size: int, **kw) -> ModelArgs:
    base = dict(dim=64, n_layer=4, n_head=4, n_kv_head=2, ffn_dim=128, window=16,
                global_every=2, context_length=65536, rope_base=10000.0, norm_eps=1e-5,
                logit_scale=1.0)
    base.update(kw)
    return ModelArgs(vocab_size=vocab_size, **base)


def random_model(args: ModelArgs, seed: int = 0, std: float = 0.02, emb_std: float | None = None,
                 norm_noise: float = 0.1) -> Transformer:
    """Random weights; norms perturbed from 1 so a swapped or skipped norm is visible."""
    torch.manual_seed(seed)
    m = Transformer(args)
    m.init_weights(seed=seed, std=std)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        if emb_std is not None:
            m.tok_embeddings.weight.copy_(torch.randn(m.tok_embeddings.weight.shape, generator=g)
                                          * emb_std)
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=g) * norm_noise)
    return m.eval()


def open_llama(llama_cpp, path: Path, n_ctx: int, *, logits_all: bool = True):
    """A llama.cpp context with F32 KV cache and flash attention off (the parity setting)."""
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=2,
        n_threads_batch=2, logits_all=logits_all, flash_attn=False,
        type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, verbose=False,
        seed=0,
    )


def llama_logits(llm, tokens: list[int], *, start: int = 0) -> np.ndarray:
    """Logits (T, vocab) of llama.cpp for `tokens` at positions start .. start+T-1.

    With start > 0 the cache is empty and the batch simply begins at that position,
    which llama.cpp accepts; it probes RoPE far out without evaluating 32K tokens.
    """
    llm.reset()
    llm._ctx.kv_cache_clear()
    llm.n_tokens = start
    llm.eval(tokens)
    return np.array(llm.scores[start:start + len(tokens)], dtype=np.float32)


def torch_logits(model: Transformer, tokens: list[int], *, start: int = 0) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.tensor([tokens]), start=start)[0]
    return out.float().numpy()


# -- report ------------------------------------------------------------------------------

def _rotate_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """NEOX / HF rotate_half RoPE: pairs (i, i + D/2) instead of (2i, 2i+1) (a wrong layout)."""
    xf = x.float()
    half = xf.shape[-1] // 2
    x0, x1 = xf[..., :half], xf[..., half:]
    return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).to(x.dtype)


def _textbook_rope_tables(n_pos: int, rot_dim: int, base: float):
    """RoPE tables computed as base^(-2i/d) * p in one float32 product (not ggml's order)."""
    inv = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim))
    t = torch.arange(n_pos, dtype=torch.float32)[:, None] * inv[None]
    return torch.cos(t), torch.sin(t)


def _with_weights(model: Transformer, args: ModelArgs) -> Transformer:
    other = Transformer(args)
    other.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    return other.eval()


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def parity_report(workdir: Path, *, far: int = 40_000) -> dict[str, float | bool | str]:
    """Measure torch vs llama.cpp on a tiny random cohere2 model (see the module docstring)."""
    import engine.model as model_mod
    from engine.gguf_io import save_gguf

    llama_cpp = llama_cpp_or_skip()
    tok = tiny_tokenizer(workdir)
    args = tiny_args(tok.vocab_size)
    model = random_model(args, seed=1, std=0.1, emb_std=1.0)
    f32, q8 = workdir / "parity-f32.gguf", workdir / "parity-q8_0.gguf"
    save_gguf(f32, args, model.state_dict(), tok, dtype="f32")
    save_gguf(q8, args, model.state_dict(), tok, dtype="q8_0")
    llm = open_llama(llama_cpp, f32, n_ctx=far + 512)
    rng = np.random.default_rng(0)
    toks = rng.integers(7, tok.vocab_size, size=100).tolist()
    far_toks = rng.integers(7, tok.vocab_size, size=64).tolist()
    ref, got = torch_logits(model, toks), llama_logits(llm, toks)
    ref_far, got_far = torch_logits(model, far_toks, start=far), llama_logits(
        llm, far_toks, start=far)
    out: dict[str, float | bool | str] = {
        "cpu": cpu_name(),
        "f32_max_abs_diff_pos0": float(np.abs(ref - got).max()),
        "f32_argmax_agree_pos0": float((ref.argmax(-1) == got.argmax(-1)).mean()),
        "f32_max_abs_diff_far": float(np.abs(ref_far - got_far).max()),
        "logit_std": float(ref.std()),
    }
    saved = model_mod.rope_tables
    try:
        model_mod.rope_tables = _textbook_rope_tables
        naive = _with_weights(model, args)
        out["textbook_rope_max_abs_diff_far"] = float(
            np.abs(torch_logits(naive, far_toks, start=far) - got_far).max())
    finally:
        model_mod.rope_tables = saved
    for delta in (-1, 1):
        wrong = _with_weights(model, tiny_args(tok.vocab_size, window=args.window + delta))
        out[f"window{delta:+d}_max_abs_diff"] = float(np.abs(torch_logits(wrong, toks) - got).max())
    saved_rope = model_mod.apply_rope
    try:
        model_mod.apply_rope = _rotate_half
        out["rotate_half_max_abs_diff"] = float(np.abs(torch_logits(model, toks) - got).max())
    finally:
        model_mod.apply_rope = saved_rope
    llm_q8 = open_llama(llama_cpp, q8, n_ctx=256)
    gq = llama_logits(llm_q8, toks)
    cos = (ref * gq).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(gq, axis=-1))
    out["q8_0_min_cosine"] = float(cos.min())
    out["q8_0_argmax_agree"] = float((ref.argmax(-1) == gq.argmax(-1)).mean())
    return out


def bench_parity(argv: list[str] | None = None) -> int:
    """`hybrid-lsp bench parity [--json]`: print the parity figures (see parity_report)."""
    import argparse
    import json
    import sys
    import tempfile

    p = argparse.ArgumentParser(prog="hybrid-lsp bench parity",
                                description="torch vs llama.cpp logits on one GGUF file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        r = parity_report(Path(d))
    if args.json:
        sys.stdout.write(json.dumps(r) + "\n")
        return 0
    w = sys.stdout.write
    w(f"CPU: {r['cpu']}; tiny cohere2 (4 layers, window 16, GQA 4:2), logit std "
      f"{r['logit_std']:.2f}\n")
    w(f"F32, positions 0-99: max |torch - llama.cpp| {r['f32_max_abs_diff_pos0']:.2e}, "
      f"argmax agreement {r['f32_argmax_agree_pos0']:.0%}   target < 1e-3\n")
    w(f"F32, positions 40000+: max diff {r['f32_max_abs_diff_far']:.2e} (textbook RoPE "
      f"tables: {r['textbook_rope_max_abs_diff_far']:.2e})\n")
    w(f"Q8_0 vs torch F32: min cosine {r['q8_0_min_cosine']:.5f}, argmax agreement "
      f"{r['q8_0_argmax_agree']:.0%}   target cosine > 0.99\n")
    w(f"deliberate mistakes: window -1 {r['window-1_max_abs_diff']:.2f}, window +1 "
      f"{r['window+1_max_abs_diff']:.2f}, rotate-half RoPE {r['rotate_half_max_abs_diff']:.2f}\n")
    return 0
