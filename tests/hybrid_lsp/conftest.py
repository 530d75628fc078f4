"""Shared fixtures: a tiny random-weights model file and a fixture workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SNIPPETS = [
    "fn main() {\n    println!(\"hello, world\");\n}\n",
    "pub struct Point { pub x: f64, pub y: f64 }\n",
    "impl Point {\n    pub fn norm(&self) -> f64 { (self.x * self.x).sqrt() }\n}\n",
    "use std::collections::HashMap;\nlet mut m: HashMap<String, usize> = HashMap::new();\n",
    "match value {\n    Some(v) => v,\n    None => return Err(Error::Missing),\n}\n",
    "#[derive(Debug, Clone, PartialEq)]\nenum Token { Ident(String), Number(i64), Eof }\n",
] * 4


def llama_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def test_backend() -> str:
    """The backend the end-to-end tests serve with: `HYBRID_LSP_TEST_BACKEND` if set; else
    torch when a CUDA GPU is present (the same tests then cover the GPU path), llama.cpp
    when it is installed (CI), torch on the CPU otherwise."""
    chosen = os.environ.get("HYBRID_LSP_TEST_BACKEND")
    if chosen:
        return chosen
    import torch

    if torch.cuda.is_available():
        return "torch"
    return "llama" if llama_available() else "torch"


test_backend.__test__ = False  # not a test


def build_tiny_model(path: Path) -> Path:
    """A ~100 KB cohere2 model with random weights and a BPE trained on a few snippets."""
    import torch

    from engine.config import ModelArgs
    from engine.gguf_io import save_gguf
    from engine.model import Transformer
    from engine.tokenizer import train_tokenizer

    src = path.parent / "tok-src"
    src.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(SNIPPETS):
        (src / f"f{i}.rs").write_text(s)
    tok = train_tokenizer(src, 320)
    args = ModelArgs(vocab_size=tok.vocab_size, dim=32, n_layer=2, n_head=2, n_kv_head=1,
                     ffn_dim=64, window=16, global_every=2, context_length=8192)
    torch.manual_seed(0)
    model = Transformer(args)
    model.init_weights(seed=0, std=0.02)
    return save_gguf(path, args, model.state_dict(), tok, name="tiny-test")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.gguf")
