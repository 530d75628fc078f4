"""Backend-neutral generation: sampling, stop conditions and the decode loop.

gpt-fast's generate.py shape, as small top-level functions: `sample` picks a token from a
logits vector, `interruption` checks the deadline and the cancel event, `TextStream`
decodes tokens incrementally and finds stop strings, and `generate` runs
prefill -> decode_one_token -> ... until a stop condition, on any `Steps` a backend provides.
Both backends run this one loop, so they stop, sample and truncate identically.

Logits are float32 numpy vectors: this module never imports torch (the llama.cpp path
runs without it); the torch backend hands over `logits.float().cpu().numpy()`.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from engine.backends import (
    STOP_CANCELLED,
    STOP_CONTEXT,
    STOP_DEADLINE,
    STOP_EOG,
    STOP_MAX_TOKENS,
    STOP_STRING,
    TRUNCATING_REASONS,
    BackendError,
    Generation,
    GenerationRequest,
    SamplingSettings,
)


class Interrupted(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised by a backend's evaluation when the request's deadline passed or it was cancelled."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Steps(Protocol):
    """The two evaluation steps a backend provides to `generate`."""

    #: Positions the backend's KV cache holds (prompt plus generated tokens).
    n_ctx: int

    def prefill(self, tokens: Sequence[int], request: GenerationRequest) -> np.ndarray:
        """Evaluate `tokens` (reusing the cached prefix); logits after the last one.

        Raises Interrupted at the deadline or on cancel, keeping what was evaluated.
        """
        ...

    def decode_one_token(self, token: int, request: GenerationRequest) -> np.ndarray:
        """Append one token to the context; logits after it. May raise Interrupted."""
        ...

    @property
    def last_evaluated_tokens(self) -> int:
        """Prompt tokens the latest prefill actually evaluated."""
        ...


def interruption(request: GenerationRequest) -> str | None:
    """`cancelled` if the request's event is set, `deadline` if its deadline passed, else None."""
    if request.cancel is not None and request.cancel.is_set():
        return STOP_CANCELLED
    if request.deadline is not None and time.monotonic() >= request.deadline:
        return STOP_DEADLINE
    return None


def make_rng(settings: SamplingSettings) -> np.random.Generator:
    """The random generator of one request (seeded when settings.seed is set)."""
    return np.random.default_rng(settings.seed)


def logits_to_probs(logits: np.ndarray, settings: SamplingSettings) -> np.ndarray:
    """Probabilities after temperature, top-k and top-p (float64, sums to 1)."""
    x = np.asarray(logits, dtype=np.float64) / settings.temperature
    if 0 < settings.top_k < x.shape[-1]:
        kth = np.partition(x, -settings.top_k)[-settings.top_k]
        x = np.where(x < kth, -np.inf, x)
    x = x - np.max(x)
    probs = np.exp(x)
    probs /= probs.sum()
    if settings.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        sorted_probs = probs[order]
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        before = np.cumsum(sorted_probs) - sorted_probs
        drop = order[before >= settings.top_p]
        probs[drop] = 0.0
        probs /= probs.sum()
    return probs


def sample(logits: np.ndarray, settings: SamplingSettings,
           rng: np.random.Generator | None = None) -> int:
    """Next token id from logits (vocab,): argmax when greedy, else a draw from `rng`."""
    if settings.greedy:
        return int(np.argmax(logits))
    probs = logits_to_probs(logits, settings)
    rng = rng if rng is not None else make_rng(settings)
    return int(rng.choice(probs.shape[-1], p=probs))


class TextStream:
    """Incremental UTF-8 decoding of generated tokens, with stop-string detection.

    Tokens may end inside a character; the pending bytes are held back, so `text` never
    ends in a half character. When a stop string appears, `text` is cut before it.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], stop_strings: Sequence[str] = (),
                 skip: int = 0):
        """`skip`: stop strings are looked for only after this many characters (the
        request's `text_prefix`, which the prompt already had)."""
        self._skip = skip
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(stop_strings)
        self._longest = max((len(s) for s in self._stops), default=0)
        self.text = ""
        self.stopped = False

    def add(self, token: int) -> bool:
        """Append a token; True when the text now contains a stop string (then cut there)."""
        start = max(self._skip, len(self.text) - self._longest + 1)
        self.text += self._decoder.decode(self._token_bytes(token))
        if not self._stops:
            return False
        hits = [i for i in (self.text.find(s, start) for s in self._stops) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
        return self.stopped


def agreeing_tokens(vocab: Sequence[bytes], pending: bytes) -> np.ndarray:
    """Mask of the tokens that may come next when the text must go on with `pending`:
    those that start with it, or that it starts with (then more of it follows). Tokens
    without text (control tokens, end of generation) never agree."""
    return np.fromiter((bool(b) and (b.startswith(pending) or pending.startswith(b))
                        for b in vocab), dtype=bool, count=len(vocab))


def visible_bytes(token_bytes: Callable[[int], bytes],
                  special_ids: Iterable[int]) -> Callable[[int], bytes]:
    """`token_bytes` where special (control) tokens render as nothing, as llama.cpp does."""
    hidden = frozenset(special_ids)
    return lambda i: b"" if i in hidden else token_bytes(i)


def generate(request: GenerationRequest, steps: Steps, *, token_bytes: Callable[[int], bytes],
             eog_ids: frozenset[int]) -> Generation:
    """Prefill the prompt and decode until a stop condition; never raises at the deadline.

    Stop conditions, in the order checked before each token: max_tokens, cancel/deadline,
    a stop id (not kept), a stop string (text cut before it), a full context. A request
    that is already cancelled or past its deadline evaluates nothing.
    """
    t0 = time.monotonic()
    n_prompt = len(request.tokens)
    stop_ids = eog_ids if request.stop_ids is None else request.stop_ids
    out: list[int] = []
    stream = TextStream(token_bytes, request.stop_strings, skip=len(request.text_prefix))
    timings = {"prefill_s": 0.0, "decode_s": 0.0}

    def result(reason: str, evaluated: int) -> Generation:
        timings["total_s"] = time.monotonic() - t0
        return Generation(tokens=out, text=stream.text, truncated=reason in TRUNCATING_REASONS,
                          stop_reason=reason, prompt_tokens=n_prompt,
                          evaluated_prompt_tokens=evaluated, timings=timings)

    reason = interruption(request)
    if reason is not None:
        return result(reason, 0)
    if n_prompt >= steps.n_ctx:
        raise BackendError(f"Expected a prompt shorter than the context ({steps.n_ctx} tokens), "
                           f"got {n_prompt} tokens")
    try:
        logits = steps.prefill(request.tokens, request)
    except Interrupted as e:
        timings["prefill_s"] = time.monotonic() - t0
        return result(e.reason, steps.last_evaluated_tokens)
    evaluated = steps.last_evaluated_tokens
    t1 = time.monotonic()
    timings["prefill_s"] = t1 - t0
    rng = make_rng(request.sampling)
    pos = n_prompt
    pending = request.text_prefix.encode("utf-8")
    vocab: list[bytes] | None = None
    while True:
        if len(out) >= request.max_tokens:
            reason = STOP_MAX_TOKENS
            break
        reason = interruption(request)
        if reason is not None:
            break
        if pending:
            if vocab is None:
                vocab = [token_bytes(i) for i in range(len(logits))]
            logits = np.where(agreeing_tokens(vocab, pending), logits, -np.inf)
        token = sample(logits, request.sampling, rng)
        if pending:
            got = token_bytes(token)
            pending = pending[len(got):] if pending.startswith(got) else b""
        if token in stop_ids:
            reason = STOP_EOG
            break
        out.append(token)
        if stream.add(token):
            reason = STOP_STRING
            break
        if len(out) >= request.max_tokens:
            reason = STOP_MAX_TOKENS
            break
        if pos >= steps.n_ctx:
            reason = STOP_CONTEXT
            break
        try:
            logits = steps.decode_one_token(token, request)
        except Interrupted as e:
            reason = e.reason
            break
        pos += 1
    timings["decode_s"] = time.monotonic() - t1
    return result(reason, evaluated)
