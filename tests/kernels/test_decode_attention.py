"""Split-KV decode against the fp32 reference: global and windowed, a few query tokens, GQA."""

from __future__ import annotations

import pytest
import torch

from kernels.decode_attention import decode_attention, decode_splits
from kernels.reference import attention_mask, attention_ref
from tests.kernels.kernel_checks import DEVICE, TOL, poisoned, randn, rel_err

BLOCK_N = 16
# (B, Hkv, group, Tq, q_start, k_start, Tk, D, window, n_splits, dtype)
CASES = [
    (1, 2, 4, 1, 299, 0, 300, 64, None, None, torch.float16),
    (2, 1, 8, 1, 130, 0, 131, 128, None, 3, torch.float32),
    (1, 2, 2, 3, 197, 0, 200, 128, 50, None, torch.float16),
    (1, 1, 1, 4, 90, 40, 54, 64, None, 5, torch.float16),     # cache trimmed at k_start
    (1, 2, 4, 2, 250, 0, 260, 64, 16, 2, torch.float32),      # window = one block, extra keys
    (2, 2, 2, 1, 40, 0, 41, 64, 1, None, torch.float16),      # window 1: only itself
]


@pytest.mark.parametrize("i", range(len(CASES)))
def test_decode_matches_reference(i: int) -> None:
    b, hkv, group, tq, q_start, k_start, tk, d, window, n_splits, dtype = CASES[i]
    gen = torch.Generator().manual_seed(500 + i)
    q = randn(b, hkv * group, tq, d, dtype=dtype, device=DEVICE, gen=gen)
    k = randn(b, hkv, tk, d, dtype=dtype, device=DEVICE, gen=gen)
    v = randn(b, hkv, tk, d, dtype=dtype, device=DEVICE, gen=gen)
    out = poisoned(q.shape, dtype, DEVICE)
    got, cnt = decode_attention(q, k, v, q_start=q_start, k_start=k_start, window=window,
                                n_splits=n_splits, block_n=BLOCK_N, count=True, out=out)
    ref = attention_ref(q, k, v, q_start=q_start, k_start=k_start, window=window)
    assert rel_err(got, ref) < TOL[dtype]
    # Visited blocks: the span from the first to the last visible key, in BLOCK_N steps.
    cols = attention_mask(tq, tk, q_start=q_start, k_start=k_start, window=window).any(0)
    vis = cols.nonzero().flatten()
    expected = -(-(vis.max().item() + 1 - vis.min().item()) // BLOCK_N)
    assert cnt.sum(1).cpu().tolist() == [expected] * cnt.shape[0]


@pytest.mark.parametrize("window", [None, 24])
def test_decode_position_from_device_tensor(window: int | None) -> None:
    """q_start read by the kernel (CUDA-graph replay): one launch plan, moving positions."""
    b, hkv, group, tq, d, tk = 1, 2, 4, 2, 64, 150
    gen = torch.Generator().manual_seed(77)
    q = randn(b, hkv * group, tq, d, dtype=torch.float16, device=DEVICE, gen=gen)
    k = randn(b, hkv, tk, d, dtype=torch.float16, device=DEVICE, gen=gen)
    v = randn(b, hkv, tk, d, dtype=torch.float16, device=DEVICE, gen=gen)
    pos = torch.zeros(1, dtype=torch.int32, device=DEVICE)
    for q_start in (0, 37, 100, tk - tq):  # early positions leave most chunks empty
        pos.fill_(q_start)
        out = poisoned(q.shape, torch.float16, DEVICE)
        got, cnt = decode_attention(q, k, v, q_start=pos, window=window, block_n=BLOCK_N,
                                    count=True, out=out)
        ref = attention_ref(q, k, v, q_start=q_start, window=window)
        assert rel_err(got, ref) < TOL[torch.float16], q_start
        cols = attention_mask(tq, tk, q_start=q_start, window=window).any(0).nonzero().flatten()
        span = -(-(cols.max().item() + 1 - cols.min().item()) // BLOCK_N)
        assert cnt.sum(1).cpu().tolist() == [span] * cnt.shape[0], q_start
        # Same number of chunks whatever the position: the launch does not depend on it.
        widest = tk if window is None else window + tq - 1
        assert cnt.shape[1] == decode_splits(-(-widest // BLOCK_N), b * hkv, q.device)
