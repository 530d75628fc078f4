"""Backends: prefix reuse measured by instrumentation, deadline truncation, cancellation,
and the llama.cpp path's independence from torch.

Prefix reuse is checked by counting, not timing: a second prompt sharing k tokens with
what the backend holds evaluates exactly len(prompt) - k tokens (at least one: the last
token's logits are the answer), and its next-token logits equal a fresh evaluation of the
whole prompt in a new context. Prefixes longer than the sliding window (16) are reused.
Models are tiny random-weights `cohere2` files in F32; llama.cpp runs with an F32 KV cache
and flash attention off (the parity setting).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.backends import (
    STOP_CANCELLED,
    STOP_DEADLINE,
    Backend,
    GenerationRequest,
    select_backend,
)
from engine.gguf_io import save_gguf
from engine.parity import (
    llama_cpp_or_skip,
    random_model,
    tiny_args,
    tiny_tokenizer,
)

ROOT = Path(__file__).resolve().parents[2]
# The checkout first on the path, whatever else the caller's PYTHONPATH holds.
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
TOL = 1e-3  # max |logit difference|, F32 weights and cache (the parity tolerance)
N_CTX = 1024


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def model_path(tok, tmp_path_factory) -> Path:
    args = tiny_args(tok.vocab_size, context_length=4096)
    model = random_model(args, seed=7, std=0.1, emb_std=1.0)
    return save_gguf(tmp_path_factory.mktemp("m") / "tiny.gguf", args, model.state_dict(), tok)


def tokens(vocab: int, n: int, seed: int) -> list[int]:
    # Ordinary tokens only (ids >= 7): no end-of-generation ids inside prompts.
    return np.random.default_rng(seed).integers(7, vocab, size=n).tolist()


class Countdown(threading.Event):
    """An event that reads as set from its (n+1)-th check on: a deterministic mid-run cancel."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n

    def is_set(self) -> bool:
        self.left -= 1
        return self.left < 0


def make(kind: str, path: Path, **kw) -> Backend:
    """`kind` is llama, torch (CPU) or torch-cuda."""
    if kind == "llama":
        llama_cpp_or_skip()
        kw = {"f32_kv_cache": True, "flash_attn": False, "n_threads": 1, **kw}
    else:
        kw = {"device": "cuda" if kind == "torch-cuda" else "cpu", **kw}
    return select_backend(kind.split("-")[0], path, n_ctx=kw.pop("n_ctx", N_CTX), **kw)


KINDS = [pytest.param("torch", id="torch"),
         pytest.param("llama", id="llama", marks=pytest.mark.llama),
         pytest.param("torch-cuda", id="torch-cuda", marks=pytest.mark.gpu)]


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def backend(kind, model_path):
    b = make(kind, model_path)
    yield b
    b.close()


@pytest.fixture(scope="module")
def fresh(kind, model_path):
    """A second backend of the same kind: `reset()` before each use gives a new context."""
    b = make(kind, model_path)
    yield b
    b.close()


def fresh_logits(fresh: Backend, prompt: list[int]) -> np.ndarray:
    fresh.reset()
    out = fresh.next_token_logits(prompt)
    assert fresh.last_evaluated_tokens == len(prompt)
    return out


def test_is_a_backend(backend, kind):
    assert isinstance(backend, Backend) and backend.name == kind.split("-")[0]


def test_prefix_reuse_evaluates_only_the_tail(backend, fresh, tok):
    v = tok.vocab_size
    a = tokens(v, 120, seed=1)
    backend.reset()
    backend.next_token_logits(a)
    assert backend.last_evaluated_tokens == 120
    # (new prompt, common prefix with the previous one); every prefix > window 16.
    cases = [
        (a[:90] + tokens(v, 25, seed=2), 90),   # edit near the end
        (None, None),                           # the same prompt again
        (None, "extend"),                       # prompt grows by 7 tokens
        (a[:40] + tokens(v, 3, seed=3), 40),    # shorter prompt, prefix past 2 windows
        (a[:17] + tokens(v, 60, seed=4), 17),   # prefix one past the window
    ]
    prev = a
    for new, common in cases:
        if new is None and common is None:
            new, common = prev, len(prev)
        elif common == "extend":
            new, common = prev + tokens(v, 7, seed=5), len(prev)
        logits = backend.next_token_logits(new)
        assert backend.last_evaluated_tokens == max(1, len(new) - common)
        ref = fresh_logits(fresh, new)
        assert np.abs(logits - ref).max() < TOL
        assert int(logits.argmax()) == int(ref.argmax())
        prev = new


def test_generation_reuses_prompt_and_generated_tokens(backend, fresh, tok):
    v = tok.vocab_size
    prompt = tokens(v, 50, seed=11)
    backend.reset()
    g = backend.generate(GenerationRequest(tokens=prompt, max_tokens=8, stop_ids=frozenset()))
    assert len(g.tokens) == 8 and g.evaluated_prompt_tokens == 50
    assert g.text == tok.decode(g.tokens, skip_special=True)  # control tokens show no text
    # The next keystroke accepts the completion: prompt + generated tokens. All but the
    # last generated token are already in the cache.
    nxt = prompt + g.tokens
    g2 = backend.generate(GenerationRequest(tokens=nxt, max_tokens=4, stop_ids=frozenset()))
    assert g2.evaluated_prompt_tokens == 1 and g2.prompt_tokens == 58
    # Greedy generation after reuse equals greedy generation from a fresh context.
    fresh.reset()
    g3 = fresh.generate(GenerationRequest(tokens=nxt, max_tokens=4, stop_ids=frozenset()))
    assert g3.tokens == g2.tokens and g3.evaluated_prompt_tokens == 58


def test_deadline_in_the_past_returns_truncated_at_once(backend, tok):
    backend.reset()
    before = list(backend.cached_tokens)
    g = backend.generate(GenerationRequest(tokens=tokens(tok.vocab_size, 30, seed=6),
                                           deadline=time.monotonic() - 0.001))
    assert g.truncated and g.stop_reason == STOP_DEADLINE
    assert g.tokens == [] and g.text == "" and g.evaluated_prompt_tokens == 0
    assert backend.cached_tokens == before


def test_short_deadline_truncates_generation(backend, tok):
    prompt = tokens(tok.vocab_size, 20, seed=8)
    # Without a deadline it runs to the end of the context (stop ids are off): time that,
    # then give a quarter of it, so the check holds on a fast or a loaded machine.
    backend.reset()
    t0 = time.monotonic()
    full = backend.generate(GenerationRequest(tokens=prompt, max_tokens=N_CTX,
                                              stop_ids=frozenset()))
    budget = (time.monotonic() - t0) / 4
    assert full.stop_reason == "context_full"
    backend.reset()
    t0 = time.monotonic()
    g = backend.generate(GenerationRequest(tokens=prompt, max_tokens=N_CTX,
                                           stop_ids=frozenset(), deadline=t0 + budget))
    elapsed = time.monotonic() - t0
    assert g.truncated and g.stop_reason == STOP_DEADLINE
    assert len(g.tokens) < N_CTX - 20
    assert elapsed < budget + 5.0  # the prompt and one step past the deadline, on a busy machine


def test_cancel_mid_prefill_keeps_a_consistent_cache(kind, model_path, fresh, tok):
    # Small chunks / batches so the cancel lands inside the prompt deterministically.
    opts = {"n_batch": 16} if kind == "llama" else {"prefill_chunk": 16}
    b = make(kind, model_path, **opts)
    try:
        prompt = tokens(tok.vocab_size, 200, seed=9)
        # torch checks once per chunk; llama.cpp's abort callback runs once per graph node
        # (about 90 per 16-token batch of this model): both stop a few batches in.
        checks = 300 if kind == "llama" else 4
        g = b.generate(GenerationRequest(tokens=prompt, cancel=Countdown(checks)))
        assert g.truncated and g.stop_reason == STOP_CANCELLED and g.tokens == []
        done = g.evaluated_prompt_tokens
        assert 0 < done < 200 and done % 16 == 0
        assert b.cached_tokens == prompt[:done]
        # The aborted work left nothing behind: the next call evaluates the rest, and its
        # logits equal a fresh evaluation.
        logits = b.next_token_logits(prompt)
        assert b.last_evaluated_tokens == 200 - done
        assert np.abs(logits - fresh_logits(fresh, prompt)).max() < TOL
    finally:
        b.close()


@pytest.mark.llama
def test_llama_swa_ring_guard(model_path, tok):
    """swa_full=False: a prefix whose window left the SWA ring is re-evaluated, not reused."""
    llama_cpp_or_skip()
    v = tok.vocab_size
    # SWA cache = pad(16 + 32, 256) = 256 cells; 600 tokens push early positions out.
    ring = make("llama", model_path, n_ctx=N_CTX, n_batch=32, swa_full=False)
    ref = make("llama", model_path, n_ctx=N_CTX)
    try:
        a = tokens(v, 600, seed=12)
        ring.next_token_logits(a)
        far = a[:100] + tokens(v, 10, seed=13)  # window of position 100 was overwritten
        logits = ring.next_token_logits(far)
        assert ring.last_evaluated_tokens == 110
        assert np.abs(logits - fresh_logits(ref, far)).max() < TOL
        ring.next_token_logits(a)
        near = a[:590] + tokens(v, 5, seed=14)  # window still in the ring: reuse is safe
        logits = ring.next_token_logits(near)
        assert ring.last_evaluated_tokens == 5
        assert np.abs(logits - fresh_logits(ref, near)).max() < TOL
    finally:
        ring.close()
        ref.close()


@pytest.mark.gpu
def test_auto_picks_torch_when_cuda_is_there():
    from engine.backends import _driver_sees_gpu, cuda_available, resolve_backend_name

    assert _driver_sees_gpu() and cuda_available()
    assert resolve_backend_name("auto") == "torch"


NO_TORCH_SCRIPT = """
import json, sys
from engine.backends import select_backend, GenerationRequest
import engine.complete, hybrid_lsp.cli  # the CLI's import path
b = select_backend("auto", sys.argv[1], cuda=False, n_ctx=256)
g = b.generate(GenerationRequest(tokens=[10, 11, 12, 13], max_tokens=3, stop_ids=frozenset()))
print(json.dumps({"backend": b.name, "tokens": len(g.tokens),
                  "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch")}))
"""


@pytest.mark.llama
def test_llama_path_never_imports_torch(model_path):
    llama_cpp_or_skip()
    out = subprocess.run([sys.executable, "-c", NO_TORCH_SCRIPT, str(model_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=SUBPROCESS_ENV)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res == {"backend": "llama", "tokens": 3, "torch": []}


@pytest.mark.parametrize("backend_name", ["torch", "llama"])
def test_unknown_prompt_format_is_refused(tok, tmp_path, monkeypatch, backend_name):
    import engine.prompt
    from engine.backends import select_backend
    from engine.prompt import UnsupportedPromptFormat

    args = tiny_args(tok.vocab_size)
    model = random_model(args, seed=2)
    monkeypatch.setattr(engine.prompt, "PROMPT_FORMAT_VERSION", 99)
    path = tmp_path / "future.gguf"
    save_gguf(path, args, model.state_dict(), tok)
    monkeypatch.undo()
    with pytest.raises(UnsupportedPromptFormat, match=r"future\.gguf.*version 99"):
        select_backend(backend_name, path)
