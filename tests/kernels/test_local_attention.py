"""Windowed and dense causal prefill kernels against the fp32 reference (interpreter on CPU)."""

from __future__ import annotations

import random

import pytest
import torch

from kernels.global_attention import global_attention
from kernels.local_attention import NO_WINDOW, attention_fwd
from kernels.reference import attention_mask, attention_ref
from tests.kernels.kernel_checks import DEVICE, TOL, blocks_touched, poisoned, randn, rel_err

BLOCK = 16  # the interpreter tile (BLOCK_M = BLOCK_N)


def _cases(seed: int, n: int, local: bool) -> list[dict]:
    """A seeded sample: odd lengths, cache offsets, GQA 1/2/4/8, both head dims, edge windows."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        hkv = rng.choice([1, 2])
        group = [1, 2, 4, 8][i % 4]
        tq = rng.choice([1, 7, 16, 23, 40])
        q_start = rng.choice([0, 0, 5, 16, 37])
        k_start = rng.choice([0, 0, q_start // 2, q_start])
        extra = rng.choice([0, 0, 3])  # cached keys after the last query (masked causally)
        span = q_start + tq
        window = rng.choice([1, BLOCK - 1, BLOCK, BLOCK + 1, 9, span]) if local else NO_WINDOW
        cases.append(dict(B=rng.choice([1, 2]), hkv=hkv, group=group, tq=tq, q_start=q_start,
                          k_start=k_start, tk=span - k_start + extra, D=[64, 128][i % 2],
                          window=window, dtype=[torch.float16, torch.float32][(i // 2) % 2]))
    return cases


LOCAL_CASES = _cases(6, 10, local=True)
GLOBAL_CASES = _cases(7, 5, local=False)


def _check(c: dict, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    hq = c["hkv"] * c["group"]
    q = randn(c["B"], hq, c["tq"], c["D"], dtype=c["dtype"], device=DEVICE, gen=gen)
    k = randn(c["B"], c["hkv"], c["tk"], c["D"], dtype=c["dtype"], device=DEVICE, gen=gen)
    v = randn(c["B"], c["hkv"], c["tk"], c["D"], dtype=c["dtype"], device=DEVICE, gen=gen)
    out = poisoned(q.shape, q.dtype, DEVICE)
    got, cnt = attention_fwd(q, k, v, window=c["window"], q_start=c["q_start"],
                             k_start=c["k_start"], block=(BLOCK, BLOCK), count=True, out=out)
    window = None if c["window"] >= NO_WINDOW else c["window"]
    ref = attention_ref(q, k, v, q_start=c["q_start"], k_start=c["k_start"], window=window)
    assert rel_err(got, ref) < TOL[c["dtype"]], c
    # Block skipping: each tile visits exactly the key blocks holding a visible key.
    mask = attention_mask(c["tq"], c["tk"], q_start=c["q_start"], k_start=c["k_start"],
                          window=window)
    expected = blocks_touched(mask, BLOCK, BLOCK)
    assert cnt.cpu().tolist() == [expected] * cnt.shape[0], c


@pytest.mark.parametrize("i", range(len(LOCAL_CASES)))
def test_local_matches_reference(i: int) -> None:
    _check(LOCAL_CASES[i], seed=100 + i)


@pytest.mark.parametrize("i", range(len(GLOBAL_CASES)))
def test_global_matches_reference(i: int) -> None:
    _check(GLOBAL_CASES[i], seed=200 + i)


def test_local_skips_blocks_outside_window() -> None:
    """A long cache with a small window: the visited count is bounded by the window."""
    c = dict(B=1, hkv=1, group=2, tq=32, q_start=200, k_start=0, tk=232, D=64, window=20,
             dtype=torch.float16)
    _check(c, seed=300)
    gen = torch.Generator().manual_seed(301)
    q = randn(1, 2, 32, 64, dtype=torch.float16, device=DEVICE, gen=gen)
    k = randn(1, 1, 232, 64, dtype=torch.float16, device=DEVICE, gen=gen)
    _, cnt = attention_fwd(q, k, k, window=20, q_start=200, block=(BLOCK, BLOCK), count=True)
    # 232 keys would be 15 blocks; each 16-query tile needs keys [q_lo - 19, q_hi]: 3 blocks.
    assert cnt.max().item() <= 3


def test_global_public_entry_strided_views() -> None:
    """The model passes transposed projections and cache slices: non-contiguous strides."""
    gen = torch.Generator().manual_seed(400)
    x = randn(1, 21, 4, 64, dtype=torch.float16, device=DEVICE, gen=gen)  # (B, T, H, D)
    q = x.transpose(1, 2)  # (B, Hq, T, D), strided
    cache = randn(1, 2, 64, 64, dtype=torch.float16, device=DEVICE, gen=gen)
    k = cache[:, :, :30]
    v = cache.flip(2)[:, :, :30]
    got = global_attention(q, k, v, q_start=9)
    ref = attention_ref(q, k, v, q_start=9)
    assert rel_err(got, ref) < TOL[torch.float16]
