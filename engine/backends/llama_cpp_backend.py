"""`LlamaCppBackend`: the same GGUF file on llama.cpp through llama-cpp-python (CPU).

Facts this relies on (shared/docs/llama-cpp-notes.md §3, §5; reliability-notes.md §3):
- Prefix reuse: `Llama.eval` first removes cache cells from `n_tokens` on, so setting
  `n_tokens = k` and evaluating `tokens[k:]` reuses the first k positions. We compute k
  as the longest common prefix with `input_ids[:n_tokens]`.
- `swa_full=True` (llama.cpp's default) keeps every position in the sliding-window layers'
  cache, so any prefix can be reused. With `swa_full=False` the SWA cache is a ring and
  reusing a prefix whose window was overwritten gives silently wrong logits; the
  `pos_min` guard below then falls back to a full re-evaluation, as llama-server does.
- Logits come from `llama_get_logits_ith(ctx, -1)` (`logits_all=False`; `scores` is
  never filled). FIM prompts are token ids: llama-cpp-python's `suffix=` is broken.
- Cancellation: during prefill, `llama_set_abort_callback` polls the request's cancel
  event and deadline inside `llama_decode`, which then returns 2; the ubatches already
  processed stay in the cache, so we trim it back to `n_tokens` right away. The callback
  is detached while decoding single tokens: ggml calls it once per graph node (84 times
  per token on the 4-layer test model), which doubled the decode time of a tiny model
  (0.57 vs 0.30 ms/token); the decode loop checks between tokens instead.
- One `Llama` context is not thread-safe: a lock serialises calls.

Architecture Invariant: nothing imported here imports torch.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import llama_cpp
import numpy as np

from engine.backends import BackendError, Generation, GenerationRequest, common_prefix_len
from engine.generate import Interrupted, generate, interruption, visible_bytes
from engine.gguf_io import ModelInfo, read_model_info

log = logging.getLogger(__name__)

DEFAULT_N_CTX = 8192
DEFAULT_N_BATCH = 512
_DECODE_ABORTED = "llama_decode returned 2"


class LlamaCppBackend:
    """Serve a GGUF model with llama.cpp, keeping its KV cache across calls."""

    name = "llama"
    device = "cpu"

    def __init__(self, model_path: str | Path, *, info: ModelInfo | None = None,
                 n_ctx: int = DEFAULT_N_CTX, n_batch: int = DEFAULT_N_BATCH,
                 n_ubatch: int | None = None, n_threads: int | None = None,
                 f32_kv_cache: bool = False, flash_attn: bool | None = None, swa_full: bool = True,
                 verbose: bool = False) -> None:
        self.model_path = Path(model_path)
        # The Python validator runs before llama.cpp sees the file (it can abort the process).
        self.info: ModelInfo = info if info is not None else read_model_info(self.model_path)
        kv_type = llama_cpp.GGML_TYPE_F32 if f32_kv_cache else None
        if flash_attn is None:
            # On by default: with the shipped Q4_0 model it processes prompts 1.4x faster on
            # 2 CPU cores (docs/BENCHMARKS.md). It casts K/V to F16, so an F32 KV cache
            # (exact parity checks) turns it off.
            flash_attn = not f32_kv_cache
        self.n_ctx = min(n_ctx, self.info.args.context_length)
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(self.model_path), n_ctx=self.n_ctx, n_batch=n_batch,
                n_ubatch=n_ubatch or n_batch, n_threads=n_threads, n_threads_batch=n_threads,
                logits_all=False, flash_attn=flash_attn, swa_full=swa_full,
                type_k=kv_type, type_v=kv_type, verbose=verbose,
            )
        except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
            raise BackendError(f"{self.model_path}: llama.cpp cannot load it ({e})") from e
        self._n_vocab = int(self._llm.n_vocab())
        if self._n_vocab != self.info.args.vocab_size:
            raise BackendError(f"{self.model_path}: expected {self.info.args.vocab_size} tokens "
                               f"in llama.cpp's vocabulary, got {self._n_vocab}")
        self.swa_full = swa_full
        self._n_swa = int(llama_cpp.llama_model_n_swa(self._llm.model))
        self._evaluated = 0
        self._lock = threading.Lock()
        self._request: GenerationRequest | None = None
        self._abort_reason: str | None = None
        # Keep the ctypes callback objects alive as long as the context may use them.
        self._abort_cb = llama_cpp.ggml_abort_callback(self._should_abort)
        self._no_abort_cb = ctypes.cast(None, llama_cpp.ggml_abort_callback)
        log.info("llama.cpp backend: %s, n_ctx %d, swa_full %s, f32 KV %s",
                 self.model_path.name, self.n_ctx, swa_full, f32_kv_cache)

    # -- Backend -------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> Generation:
        with self._lock:
            tok = self.info.tokenizer
            return generate(request, self, eog_ids=tok.eog_ids,
                            token_bytes=visible_bytes(tok.token_bytes, tok.special_ids.values()))

    def next_token_logits(self, tokens: Sequence[int]) -> np.ndarray:
        with self._lock:
            return self.prefill(tokens, None)

    @property
    def last_evaluated_tokens(self) -> int:
        return self._evaluated

    @property
    def cached_tokens(self) -> list[int]:
        """Tokens whose keys and values are in llama.cpp's cache, position order."""
        return self._llm.input_ids[: self._llm.n_tokens].tolist()

    def reset(self) -> None:
        with self._lock:
            self._llm.n_tokens = 0
            self._trim()

    def close(self) -> None:
        with self._lock:
            llm = getattr(self, "_llm", None)
            if llm is not None:
                llm.close()
                self._llm = None

    # -- Steps (engine/generate.py) ------------------------------------------------------
    def prefill(self, tokens: Sequence[int], request: GenerationRequest | None) -> np.ndarray:
        if not tokens:
            raise ValueError("Expected at least one token")
        if len(tokens) > self.n_ctx:
            raise ValueError(f"Expected at most {self.n_ctx} tokens, got {len(tokens)}")
        llm = self._llm
        tokens = list(tokens)
        cached = llm.input_ids[: llm.n_tokens]
        # Keep at least the last token to evaluate: its logits are the answer.
        keep = min(common_prefix_len(cached, tokens), len(tokens) - 1)
        keep = self._swa_guard(keep)
        llm.n_tokens = keep
        try:
            self._eval(tokens[keep:], request)
        finally:
            self._evaluated = llm.n_tokens - keep
        return self._last_logits()

    def decode_one_token(self, token: int, request: GenerationRequest) -> np.ndarray:
        self._eval([token], None)
        return self._last_logits()

    # -- internals -----------------------------------------------------------------------
    def _swa_guard(self, keep: int) -> int:
        """Largest reusable prefix <= keep: 0 if the SWA ring lost the window before `keep`.

        llama-server's check (notes §3): the next query at position `keep` needs the
        sliding-window layers to still hold positions from keep - n_swa on.
        """
        if self.swa_full or keep == 0 or self._n_swa == 0:
            return keep
        mem = llama_cpp.llama_get_memory(self._llm.ctx)
        pos_min = int(llama_cpp.llama_memory_seq_pos_min(mem, 0))
        if pos_min > max(0, keep - self._n_swa):
            log.info("SWA cache starts at %d; re-evaluating the prompt instead of reusing %d",
                     pos_min, keep)
            return 0
        return keep

    def _eval(self, tokens: list[int], request: GenerationRequest | None) -> None:
        """llm.eval, abortable when `request` is given; on abort, trim and raise Interrupted."""
        self._request, self._abort_reason = request, None
        ctx = self._llm.ctx
        armed = request is not None and (request.cancel is not None
                                         or request.deadline is not None)
        if armed:
            llama_cpp.llama_set_abort_callback(ctx, self._abort_cb, None)
        try:
            self._llm.eval(tokens)
        except RuntimeError as e:
            # Processed ubatches stay in the cache: drop everything after n_tokens.
            self._trim()
            if self._abort_reason is not None or str(e) == _DECODE_ABORTED:
                raise Interrupted(self._abort_reason or "cancelled") from None
            raise BackendError(f"llama.cpp failed: {e}") from e
        finally:
            if armed:
                llama_cpp.llama_set_abort_callback(ctx, self._no_abort_cb, None)
            self._request = None

    def _trim(self) -> None:
        mem = llama_cpp.llama_get_memory(self._llm.ctx)
        llama_cpp.llama_memory_seq_rm(mem, -1, self._llm.n_tokens, -1)

    def _should_abort(self, _data: ctypes.c_void_p) -> bool:
        # Called by ggml inside llama_decode; must be cheap and must not raise.
        request = self._request
        if request is None:
            return False
        reason = interruption(request)
        if reason is not None:
            self._abort_reason = reason
            return True
        return False

    def _last_logits(self) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self._llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

