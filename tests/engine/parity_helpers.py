"""Shared builders for the parity tests: tiny random-weights models, tokenizers, llama.cpp."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
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
    """Import llama_cpp; skip when it is absent, except under CI=true where that fails."""
    try:
        import llama_cpp
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
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
