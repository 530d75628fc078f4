"""engine/generate.py: sampling, incremental text with stop strings, and the decode loop.

The loop runs here on a scripted `Steps` (no model), so every stop condition is exact.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.backends import (
    STOP_CANCELLED,
    STOP_CONTEXT,
    STOP_DEADLINE,
    STOP_EOG,
    STOP_MAX_TOKENS,
    STOP_STRING,
    BackendError,
    GenerationRequest,
    SamplingSettings,
    common_prefix_len,
    resolve_backend_name,
)
from engine.generate import (
    Interrupted,
    TextStream,
    generate,
    logits_to_probs,
    sample,
    visible_bytes,
)

VOCAB = 8
# Token id -> bytes: ids 0..5 are letters, 6 and 7 are the two halves of "é" (C3 A9).
TOKEN_BYTES = {0: b"a", 1: b"b", 2: b"c", 3: b"\n", 4: b"}", 5: b"x", 6: b"\xc3", 7: b"\xa9"}
EOG = frozenset({5})


def one_hot(i: int) -> np.ndarray:
    v = np.zeros(VOCAB, dtype=np.float32)
    v[i] = 10.0
    return v


class ScriptedSteps:
    """Greedy follows `script`: the logits after step k point at script[k]."""

    def __init__(self, script: list[int], n_ctx: int = 1000, interrupt_at: int | None = None):
        self.script = script
        self.n_ctx = n_ctx
        self.interrupt_at = interrupt_at
        self.prefilled: list[list[int]] = []
        self.decoded: list[int] = []
        self.last_evaluated_tokens = 0

    def prefill(self, tokens, request):
        self.prefilled.append(list(tokens))
        self.last_evaluated_tokens = len(tokens)
        return one_hot(self.script[0])

    def decode_one_token(self, token, request):
        if self.interrupt_at is not None and len(self.decoded) == self.interrupt_at:
            raise Interrupted(STOP_DEADLINE)
        self.decoded.append(token)
        return one_hot(self.script[len(self.decoded)])


def run(script, **kw):
    steps_kw = {k: kw.pop(k) for k in ("n_ctx", "interrupt_at") if k in kw}
    steps = ScriptedSteps(script, **steps_kw)
    req = GenerationRequest(tokens=kw.pop("tokens", [0, 1, 2]), **kw)
    return generate(req, steps, token_bytes=TOKEN_BYTES.__getitem__, eog_ids=EOG), steps


# -- sample ------------------------------------------------------------------------------

def test_greedy_is_argmax_and_default():
    logits = np.array([0.1, 3.0, -1.0, 2.9], dtype=np.float32)
    assert SamplingSettings().greedy
    assert sample(logits, SamplingSettings()) == 1
    assert sample(logits, SamplingSettings(temperature=0.7, top_k=1)) == 1


def test_seeded_sampling_is_reproducible_and_varies():
    logits = np.zeros(50, dtype=np.float32)
    s = SamplingSettings(temperature=1.0, seed=3)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    a = [sample(logits, s, rng_a) for _ in range(20)]
    b = [sample(logits, s, rng_b) for _ in range(20)]
    assert a == b and len(set(a)) > 5


def test_top_k_and_top_p_filter():
    logits = np.array([5.0, 4.0, 3.0, 0.0, -1.0], dtype=np.float32)
    p = logits_to_probs(logits, SamplingSettings(temperature=1.0, top_k=2))
    assert np.count_nonzero(p) == 2 and p[0] > p[1] > 0 and p.sum() == pytest.approx(1.0)
    p = logits_to_probs(logits, SamplingSettings(temperature=1.0, top_p=0.5))
    assert np.flatnonzero(p).tolist() == [0]  # the top token alone holds > 50%
    p = logits_to_probs(logits, SamplingSettings(temperature=1.0, top_p=0.95))
    assert np.flatnonzero(p).tolist() == [0, 1, 2]
    rng = np.random.default_rng(0)
    draws = {sample(logits, SamplingSettings(temperature=2.0, top_k=2), rng) for _ in range(200)}
    assert draws == {0, 1}


def test_sampling_settings_are_checked():
    with pytest.raises(ValueError):
        SamplingSettings(temperature=-1)
    with pytest.raises(ValueError):
        SamplingSettings(top_p=0.0)
    with pytest.raises(ValueError):
        GenerationRequest(tokens=[])


# -- TextStream --------------------------------------------------------------------------

def test_text_stream_holds_back_split_characters():
    s = TextStream(TOKEN_BYTES.__getitem__)
    s.add(0)
    s.add(6)
    assert s.text == "a"  # half of "é" is held back
    s.add(7)
    assert s.text == "aé"


def test_stop_string_across_tokens_cuts_text():
    s = TextStream(TOKEN_BYTES.__getitem__, ["\n}"])
    assert not s.add(0) and not s.add(3)
    assert s.add(4)
    assert s.text == "a" and s.stopped


def test_control_tokens_show_no_text():
    s = TextStream(visible_bytes(TOKEN_BYTES.__getitem__, [5]))
    for t in (0, 5, 1):
        s.add(t)
    assert s.text == "ab"


# -- the loop ----------------------------------------------------------------------------

def test_stops_at_max_tokens():
    g, steps = run([0, 1, 2, 0, 1, 2], max_tokens=4)
    assert g.tokens == [0, 1, 2, 0] and g.text == "abca"
    assert g.stop_reason == STOP_MAX_TOKENS and not g.truncated
    assert len(steps.decoded) == 3  # the last token is never evaluated
    assert g.prompt_tokens == 3 and g.evaluated_prompt_tokens == 3


def test_max_tokens_zero_generates_nothing():
    g, _ = run([0], max_tokens=0)
    assert g.tokens == [] and g.stop_reason == STOP_MAX_TOKENS


def test_eog_stops_and_is_not_kept():
    g, _ = run([0, 1, 5, 2], max_tokens=10)
    assert g.tokens == [0, 1] and g.stop_reason == STOP_EOG and not g.truncated


def test_explicit_stop_ids_replace_eog():
    g, _ = run([0, 5, 1, 2], max_tokens=10, stop_ids=frozenset({2}))
    assert g.tokens == [0, 5, 1] and g.text == "axb" and g.stop_reason == STOP_EOG


def test_stop_string():
    g, _ = run([0, 3, 4, 1, 1], max_tokens=10, stop_strings=("\n}",))
    assert g.text == "a" and g.tokens == [0, 3, 4] and g.stop_reason == STOP_STRING


def test_context_full_truncates():
    g, _ = run([0] * 20, max_tokens=50, n_ctx=8, tokens=[1, 2, 3])
    assert g.stop_reason == STOP_CONTEXT and g.truncated
    assert len(g.tokens) == 6  # positions 3..7 evaluated, then the 6th sampled token


def test_prompt_longer_than_context_raises():
    with pytest.raises(BackendError):
        run([0], n_ctx=3, tokens=[1, 2, 3])


def test_past_deadline_never_starts():
    g, steps = run([0, 1], max_tokens=5, deadline=time.monotonic() - 1)
    assert g.truncated and g.stop_reason == STOP_DEADLINE and g.tokens == []
    assert steps.prefilled == [] and g.evaluated_prompt_tokens == 0


def test_cancelled_request_never_starts():
    ev = threading.Event()
    ev.set()
    g, steps = run([0, 1], max_tokens=5, cancel=ev)
    assert g.stop_reason == STOP_CANCELLED and g.truncated and steps.prefilled == []


def test_interrupted_decode_returns_what_it_has():
    g, _ = run([0, 1, 2, 0, 1], max_tokens=10, interrupt_at=2)
    assert g.tokens == [0, 1, 2] and g.truncated and g.stop_reason == STOP_DEADLINE


def test_deadline_during_decode():
    class SlowSteps(ScriptedSteps):
        def decode_one_token(self, token, request):
            time.sleep(0.01)
            return super().decode_one_token(token, request)

    steps = SlowSteps([0] * 1000)
    req = GenerationRequest(tokens=[1], max_tokens=900, deadline=time.monotonic() + 0.1)
    t0 = time.monotonic()
    g = generate(req, steps, token_bytes=TOKEN_BYTES.__getitem__, eog_ids=EOG)
    assert g.truncated and g.stop_reason == STOP_DEADLINE
    assert 0 < len(g.tokens) < 900 and time.monotonic() - t0 < 0.5


# -- helpers of engine.backends ------------------------------------------------------------

def test_common_prefix_len():
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len([1, 2, 3], [1, 2, 3]) == 3
    assert common_prefix_len([1, 2, 3], [1, 2]) == 2
    assert common_prefix_len(np.array([1, 2, 9], dtype=np.intc), [1, 2, 3, 4]) == 2


def test_backend_choice():
    assert resolve_backend_name("auto", cuda=True) == "torch"
    assert resolve_backend_name("auto", cuda=False) == "llama"
    assert resolve_backend_name("llama", cuda=True) == "llama"
    assert resolve_backend_name("torch", cuda=False) == "torch"
    with pytest.raises(ValueError):
        resolve_backend_name("onnx")


# -- token healing: text_prefix -----------------------------------------------------------

class ScoredSteps(ScriptedSteps):
    """Fixed logits at every step: prefers `order[0]`, then `order[1]`, ..."""

    def __init__(self, order: list[int]):
        super().__init__([0] * 100)
        self.scores = np.zeros(VOCAB, dtype=np.float32)
        for rank, tid in enumerate(order):
            self.scores[tid] = 10.0 - rank

    def prefill(self, tokens, request):
        super().prefill(tokens, request)
        return self.scores.copy()

    def decode_one_token(self, token, request):
        self.decoded.append(token)
        return self.scores.copy()


HEAL_BYTES = {0: b"a", 1: b"ab", 2: b"b", 3: b"abc", 4: b"", 5: b"x", 6: b"c", 7: b"q"}


def heal_run(order, text_prefix, max_tokens=3):
    steps = ScoredSteps(order)
    req = GenerationRequest(tokens=[7], max_tokens=max_tokens, text_prefix=text_prefix,
                            stop_ids=frozenset({4}))
    return generate(req, steps, token_bytes=HEAL_BYTES.__getitem__, eog_ids=frozenset({4}))


def test_text_prefix_restricts_the_first_tokens():
    # The model prefers "x", then the end of generation; the text must start with "ab".
    gen = heal_run([5, 4, 1, 0, 2, 3], "ab")
    assert gen.text.startswith("ab")
    assert gen.tokens[0] == 1  # "ab": the best-scored token that agrees with "ab"
    assert gen.text == "abxx"  # after the constraint, the model's own choice again


def test_text_prefix_spanning_tokens_and_longer_tokens():
    # "a" agrees (then "b" must follow); "abc" agrees too (it starts with "ab").
    gen = heal_run([0, 2, 5], "ab")
    assert gen.tokens[:2] == [0, 2] and gen.text.startswith("ab")
    gen = heal_run([3, 5], "ab")
    assert gen.tokens[0] == 3 and gen.text.startswith("abc")


def test_no_text_prefix_changes_nothing():
    gen = heal_run([5, 4], "")
    assert gen.tokens == [5, 5, 5]


def test_stop_strings_ignore_the_healed_text():
    # The healed text "a\n" holds the stop string "\n": it belongs to the prompt, so only a
    # newline the model writes after it stops the generation.
    steps = ScoredSteps([3, 0])  # "\n" is token 3 in TOKEN_BYTES
    req = GenerationRequest(tokens=[7], max_tokens=4, text_prefix="a\n",
                            stop_strings=("\n",), stop_ids=frozenset({5}))
    gen = generate(req, steps, token_bytes=TOKEN_BYTES.__getitem__, eog_ids=frozenset({5}))
    assert gen.tokens[:2] == [0, 3] and gen.text == "a\n" and gen.stop_reason == STOP_STRING
