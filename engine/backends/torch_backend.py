"""`TorchBackend`: the model of engine/model.py on torch (CUDA when present, else CPU).

The model's KV cache is contiguous by position (engine/model.py `KVCache`), so prefix
reuse is bookkeeping: the backend remembers which tokens fill positions 0..n-1 and, for
a new prompt, runs only the tokens after the longest common prefix, at their positions.
Entries past that point are stale and are overwritten before anything reads them.
The prompt is evaluated in chunks of `prefill_chunk` tokens with a deadline/cancel check
between chunks; decoding checks before every token (engine/generate.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engine.backends import Generation, GenerationRequest, common_prefix_len
from engine.generate import Interrupted, generate, interruption, visible_bytes
from engine.gguf_io import ModelInfo, build_model, load_gguf

log = logging.getLogger(__name__)

#: Prompt tokens per forward call; bounds how late a deadline is noticed during prefill.
DEFAULT_PREFILL_CHUNK = 512
DEFAULT_N_CTX = 8192


class TorchBackend:
    """Serve a GGUF model with torch, keeping the KV cache of the last call."""

    name = "torch"

    def __init__(self, model_path: str | Path, *, info: ModelInfo | None = None,
                 device: str | torch.device = "auto", dtype: torch.dtype | None = None,
                 n_ctx: int = DEFAULT_N_CTX, prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> None:
        self.model_path = Path(model_path)
        loaded = load_gguf(self.model_path)
        # `info` is accepted for a uniform constructor; the file's own metadata wins.
        self.info: ModelInfo = loaded.info
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = build_model(loaded, device=self.device, dtype=dtype)
        self.n_ctx = min(n_ctx, self.info.args.context_length)
        if prefill_chunk <= 0:
            raise ValueError(f"Expected prefill_chunk > 0, got {prefill_chunk}")
        self.prefill_chunk = prefill_chunk
        self.model.setup_caches(1, self.n_ctx)
        self._cached: list[int] = []  # tokens whose K/V fill positions 0..len-1
        self._evaluated = 0
        self._lock = threading.Lock()
        log.info("torch backend: %s on %s, n_ctx %d", self.model_path.name, self.device, self.n_ctx)

    # -- Backend -------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> Generation:
        with self._lock, torch.inference_mode():
            tok = self.info.tokenizer
            return generate(request, self, eog_ids=tok.eog_ids,
                            token_bytes=visible_bytes(tok.token_bytes, tok.special_ids.values()))

    def next_token_logits(self, tokens: Sequence[int]) -> np.ndarray:
        with self._lock, torch.inference_mode():
            return self.prefill(tokens, None)

    @property
    def last_evaluated_tokens(self) -> int:
        return self._evaluated

    @property
    def cached_tokens(self) -> list[int]:
        """Tokens whose keys and values are in the cache, position order."""
        return list(self._cached)

    def reset(self) -> None:
        with self._lock:
            self._cached = []

    def close(self) -> None:
        with self._lock:
            self._cached = []
            self.model.drop_caches()

    # -- Steps (engine/generate.py) ------------------------------------------------------
    def prefill(self, tokens: Sequence[int], request: GenerationRequest | None) -> np.ndarray:
        if not tokens:
            raise ValueError("Expected at least one token")
        if len(tokens) > self.n_ctx:
            raise ValueError(f"Expected at most {self.n_ctx} tokens, got {len(tokens)}")
        # Keep at least the last token to evaluate: its logits are the answer.
        start = min(common_prefix_len(self._cached, tokens), len(tokens) - 1)
        del self._cached[start:]
        self._evaluated = 0
        logits = None
        for s in range(start, len(tokens), self.prefill_chunk):
            if request is not None and (reason := interruption(request)) is not None:
                raise Interrupted(reason)
            piece = list(tokens[s: s + self.prefill_chunk])
            logits = self._forward(piece, s)
            self._cached.extend(piece)
            self._evaluated += len(piece)
        assert logits is not None
        return logits

    def decode_one_token(self, token: int, request: GenerationRequest) -> np.ndarray:
        logits = self._forward([token], len(self._cached))
        self._cached.append(token)
        return logits

    def _forward(self, tokens: list[int], start: int) -> np.ndarray:
        idx = torch.tensor([tokens], dtype=torch.long, device=self.device)  # (1, T)
        logits = self.model(idx, start=start, last_only=True)  # (1, 1, vocab)
        return logits[0, -1].float().cpu().numpy()

