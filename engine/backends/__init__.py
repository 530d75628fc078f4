"""The inference interface: request and result types, the `Backend` protocol, and backend choice.

Two implementations serve the same GGUF file: `TorchBackend` (torch, GPU or CPU) and
`LlamaCppBackend` (llama-cpp-python, CPU). `select_backend` is the only place that chooses
between them: `auto` means torch when a CUDA GPU is present, llama.cpp otherwise.

Architecture Invariant: importing this package, or `llama_cpp_backend`, never imports
torch (it costs seconds on a laptop CPU); `torch_backend` is imported only when chosen,
and the CUDA probe asks the driver before it ever imports torch.

Protocol for callers: the engine tokenizes once with the GGUF's tokenizer and hands token
ids to a backend. A backend keeps its KV cache across calls and evaluates only the
prompt tokens after the longest common prefix with what it already holds; a backend
object serves one request at a time (calls are serialised by a lock).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from engine.gguf_io import ModelInfo

log = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "torch", "llama")

# Why generation stopped (Generation.stop_reason).
STOP_EOG = "eog"                # an end-of-generation token id was sampled
STOP_STRING = "stop_string"     # the text reached one of the stop strings
STOP_MAX_TOKENS = "max_tokens"  # max_tokens tokens were generated
STOP_DEADLINE = "deadline"      # the deadline passed
STOP_CANCELLED = "cancelled"    # the cancel event was set
STOP_CONTEXT = "context_full"   # the backend's context (n_ctx) is full
#: Stop reasons that mean "cut short": the result is what was there when time ran out.
TRUNCATING_REASONS = frozenset({STOP_DEADLINE, STOP_CANCELLED, STOP_CONTEXT})


class BackendError(RuntimeError):
    """A backend cannot be built or cannot serve a request."""


@dataclass(frozen=True, kw_only=True)
class SamplingSettings:
    """Greedy by default; temperature > 0 samples, optionally filtered by top-k and top-p."""

    temperature: float = 0.0
    top_k: int = 0          # 0 = no top-k filter
    top_p: float = 1.0      # 1.0 = no nucleus filter
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"Expected temperature >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"Expected top_k >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"Expected 0 < top_p <= 1, got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """One generation: prompt token ids plus sampling, stop conditions and a time limit.

    `stop_ids=None` means the model's end-of-generation ids (the tokenizer's `eog_ids`);
    an explicit set replaces them. `deadline` is a `time.monotonic()` value. A request
    whose `cancel` event is set, or whose deadline has passed, never starts.
    `text_prefix` (token healing, `engine.prompt.heal_prefix`): the generated text must
    start with it; the first tokens are restricted to those that agree with it, and it is
    part of the result's text.
    """

    tokens: Sequence[int]
    max_tokens: int = 64
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    stop_ids: frozenset[int] | None = None
    stop_strings: tuple[str, ...] = ()
    deadline: float | None = None
    cancel: threading.Event | None = None
    text_prefix: str = ""

    def __post_init__(self) -> None:
        if len(self.tokens) == 0:
            raise ValueError("Expected at least one prompt token, got none")
        if self.max_tokens < 0:
            raise ValueError(f"Expected max_tokens >= 0, got {self.max_tokens}")
        if any(s == "" for s in self.stop_strings):
            raise ValueError("Expected non-empty stop strings")


@dataclass(kw_only=True)
class Generation:
    """The result of one request.

    `tokens` are the generated ids (a stop token is not included; the token that completed
    a stop string is), `text` their decoded text (control tokens show no text) cut before
    any stop string.
    `evaluated_prompt_tokens` counts the prompt tokens the backend actually ran this call:
    `prompt_tokens - evaluated_prompt_tokens` of them came from its KV cache.
    `timings` holds seconds: `prefill_s`, `decode_s`, `total_s`.
    """

    tokens: list[int]
    text: str
    truncated: bool
    stop_reason: str
    prompt_tokens: int
    evaluated_prompt_tokens: int
    timings: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What the engine needs from an inference backend."""

    #: "torch" or "llama".
    name: str
    #: Config, tokenizer and metadata of the loaded model file.
    info: ModelInfo
    #: Positions the KV cache holds: prompt plus generated tokens must fit.
    n_ctx: int

    def generate(self, request: GenerationRequest) -> Generation:
        """Run one request, reusing the cached prefix; thread-safe (serialised)."""
        ...

    def next_token_logits(self, tokens: Sequence[int]) -> np.ndarray:
        """float32 logits (vocab,) after `tokens`, reusing the cached prefix like `generate`.

        The number of prompt tokens evaluated is available afterwards as
        `last_evaluated_tokens`.
        """
        ...

    @property
    def last_evaluated_tokens(self) -> int:
        """Prompt tokens evaluated by the latest `generate` / `next_token_logits` call."""
        ...

    def reset(self) -> None:
        """Forget the cached prefix (the next call evaluates its whole prompt)."""
        ...

    def close(self) -> None:
        """Release native resources; the backend is unusable afterwards."""
        ...


# -- choosing ----------------------------------------------------------------------------

def _driver_sees_gpu() -> bool:
    """Ask the CUDA driver (libcuda, through ctypes) for devices, without importing torch."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        count = ctypes.c_int(0)
        try:
            if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return False
        except AttributeError:
            return False
        return count.value > 0
    return False


def cuda_available() -> bool:
    """True when torch can use a CUDA GPU; imports torch only if the driver reports a GPU."""
    torch_mod = sys.modules.get("torch")
    if torch_mod is None:
        if not _driver_sees_gpu():
            return False
        try:
            import torch as torch_mod
        except ImportError:
            return False
    return bool(torch_mod.cuda.is_available())


def resolve_backend_name(name: str, *, cuda: bool | None = None) -> str:
    """Map `auto|torch|llama` to a concrete backend name (`cuda` overrides the probe)."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"Expected a backend in {BACKEND_NAMES}, got {name!r}")
    if name != "auto":
        return name
    if cuda is None:
        cuda = cuda_available()
    return "torch" if cuda else "llama"


def select_backend(name: str, model_path: str | Path, *, info: ModelInfo | None = None,
                   cuda: bool | None = None, **options: Any) -> Backend:
    """Build the backend `name` (`auto`, `torch` or `llama`) for the model at `model_path`.

    `info` skips re-reading the file's metadata; `options` go to the backend's
    constructor (for example `n_ctx`, `device`, `f32_kv_cache`).
    """
    from engine.gguf_io import read_model_info
    from engine.prompt import check_prompt_format

    if info is None:
        info = read_model_info(model_path)
    # Every backend is built here, so this is where a model whose prompt format this
    # engine cannot write is refused (UnsupportedPromptFormat, one line naming the file).
    check_prompt_format(info.prompt_format_version, str(model_path))
    concrete = resolve_backend_name(name, cuda=cuda)
    log.info("backend %s (asked for %s)", concrete, name)
    if concrete == "torch":
        from engine.backends.torch_backend import TorchBackend

        return TorchBackend(model_path, info=info, **options)
    from engine.backends.llama_cpp_backend import LlamaCppBackend

    return LlamaCppBackend(model_path, info=info, **options)


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


__all__ = [
    "BACKEND_NAMES", "Backend", "BackendError", "Generation", "GenerationRequest",
    "SamplingSettings", "STOP_CANCELLED", "STOP_CONTEXT", "STOP_DEADLINE", "STOP_EOG",
    "STOP_MAX_TOKENS", "STOP_STRING", "TRUNCATING_REASONS", "common_prefix_len",
    "cuda_available", "resolve_backend_name", "select_backend",
]
