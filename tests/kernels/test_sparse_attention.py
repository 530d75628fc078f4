"""Block-sparse global attention: selection vs torch, output vs the token-level masked reference."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from kernels.reference import attention_ref
from kernels.sparse_attention import (
    _exp2_poly,
    selection_to_block_mask,
    sparse_attention,
    sparse_attention_ref,
    sparse_block_mask_ref,
)
from tests.kernels.kernel_checks import DEVICE, TOL, poisoned, randn, rel_err

TILE = 16
# (B, Hkv, group, Tq, q_start, D, block, top_k, n_local, sink, dtype)
CASES = [
    (1, 2, 2, 100, 0, 64, 16, 2, 2, 1, torch.float16),
    (1, 1, 2, 40, 61, 64, 16, 1, 1, 1, torch.float16),     # chunked prefill, odd start
    (2, 2, 1, 70, 0, 128, 32, 100, 2, 1, torch.float32),   # top_k covers all: dense
    (1, 1, 4, 1, 150, 64, 16, 3, 2, 2, torch.float16),     # decode: one query
    (1, 1, 8, 90, 0, 64, 16, 0, 1, 0, torch.float16),      # own block only
]


@pytest.mark.parametrize("i", range(len(CASES)))
def test_sparse_matches_token_reference(i: int) -> None:
    b, hkv, group, tq, q_start, d, block, top_k, n_local, sink, dtype = CASES[i]
    hq = hkv * group
    tk = q_start + tq
    gen = torch.Generator().manual_seed(600 + i)
    q = randn(b, hq, tq, d, dtype=dtype, device=DEVICE, gen=gen)
    k = randn(b, hkv, tk, d, dtype=dtype, device=DEVICE, gen=gen)
    v = randn(b, hkv, tk, d, dtype=dtype, device=DEVICE, gen=gen)
    out = poisoned(q.shape, dtype, DEVICE)
    got, (idx, cnt), visited = sparse_attention(
        q, k, v, q_start=q_start, block=block, top_k=top_k, n_local=n_local, sink=sink,
        tile=(TILE, TILE), count=True, out=out)
    n_kb = -(-tk // block)
    mask = selection_to_block_mask(idx, cnt, q_start=q_start, tq=tq, n_kb=n_kb, block=block,
                                   n_local=n_local).view(b, hq, -1, n_kb)
    # Selection in Triton equals the pure-torch selection (pooling, scores, top-k).
    want = sparse_block_mask_ref(q, k, q_start=q_start, block=block, top_k=top_k,
                                 n_local=n_local, sink=sink)
    assert torch.equal(mask.cpu(), want.cpu())
    ref = sparse_attention_ref(q, k, v, q_start=q_start, block=block, block_mask=want)
    assert rel_err(got, ref) < TOL[dtype]
    if top_k * block >= tk:
        assert rel_err(got, attention_ref(q, k, v, q_start=q_start)) < TOL[dtype]
    # Visited blocks per tile: its selected blocks plus the local range up to its last query.
    qb0 = q_start // block
    sub = block // TILE
    for t in range(visited.shape[1]):
        m0 = (qb0 + t // sub) * block + (t % sub) * TILE - q_start
        if m0 + TILE <= 0 or m0 >= tq:
            assert (visited[:, t] == 0).all()
            continue
        qb = qb0 + t // sub
        q_hi = q_start + min(m0 + TILE, tq) - 1
        local = -(-(q_hi + 1 - max(qb - n_local + 1, 0) * block) // TILE)
        expected = cnt[:, t // sub] * sub + local
        assert torch.equal(visited[:, t].cpu(), expected.cpu())


def case_inputs(case: tuple, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Random q, k, v for a CASES-style tuple, and the selection keywords it names."""
    b, hkv, group, tq, q_start, d, block, top_k, n_local, sink, dtype = case
    gen = torch.Generator().manual_seed(seed)
    q = randn(b, hkv * group, tq, d, dtype=dtype, device=DEVICE, gen=gen)
    k = randn(b, hkv, q_start + tq, d, dtype=dtype, device=DEVICE, gen=gen)
    v = randn(b, hkv, q_start + tq, d, dtype=dtype, device=DEVICE, gen=gen)
    return q, k, v, dict(q_start=q_start, block=block, top_k=top_k, n_local=n_local, sink=sink)


@pytest.mark.parametrize("i", [0, 1, 3])
def test_tma_variant_gives_the_same_output(i: int) -> None:
    """The benchmark's descriptor variant of the selected-block loop computes the same
    output as the pointer loads (the interpreter runs descriptors too)."""
    dtype = CASES[i][-1]
    q, k, v, kw = case_inputs(CASES[i], 900 + i)
    kw["tile"] = (TILE, TILE)
    plain, sel, _ = sparse_attention(q, k, v, out=poisoned(q.shape, dtype, DEVICE), **kw)
    tma, _, _ = sparse_attention(q, k, v, selection=sel, tma=True,
                                 out=poisoned(q.shape, dtype, DEVICE), **kw)
    assert torch.equal(plain, tma)


@pytest.mark.parametrize("case", [
    (1, 2, 2, 150, 0, 64, 32, 2, 2, 1, torch.float16),
    (1, 1, 2, 70, 45, 64, 32, 1, 1, 1, torch.float32),     # chunked prefill
])
def test_polynomial_exp_variant_matches_the_reference(case: tuple) -> None:
    """Half of the selected tiles' exponentials by polynomial: the output still matches the
    token-level reference, and stays within 2e-3 of the exact-exp2 kernel."""
    dtype, top_k = case[-1], case[7]
    q, k, v, sel_kw = case_inputs(case, 77 + case[3])
    kw = {**sel_kw, "tile": (16, 32)}
    exact, sel, _ = sparse_attention(q, k, v, out=poisoned(q.shape, dtype, DEVICE), **kw)
    poly, _, _ = sparse_attention(q, k, v, selection=sel, poly_exp=True,
                                  out=poisoned(q.shape, dtype, DEVICE), **kw)
    want = sparse_block_mask_ref(q, k, **sel_kw)
    ref = sparse_attention_ref(q, k, v, q_start=sel_kw["q_start"], block=sel_kw["block"],
                               block_mask=want)
    assert rel_err(poly, ref) < TOL[dtype]
    assert rel_err(poly, exact) < 2e-3
    assert not torch.equal(poly, exact) or top_k == 0  # the polynomial path ran


@triton.jit
def _exp2_poly_kernel(X, Y, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N
    tl.store(Y + offs, _exp2_poly(tl.load(X + offs, mask=ok, other=0.0)), mask=ok)


def test_polynomial_exp2_is_close_and_exactly_zero_far_below() -> None:
    """`_exp2_poly` against torch.exp2 on [-130, 0] (interpreter)."""
    x = torch.cat([torch.linspace(-130.0, 0.0, 4001), torch.tensor([float("-inf"), -126.5])])
    x = x.to(DEVICE)
    y = torch.empty_like(x)
    _exp2_poly_kernel[(triton.cdiv(len(x), 256),)](x, y, len(x), BLOCK=256)
    x, y = x.cpu(), y.cpu()
    want = torch.exp2(x)
    live = x >= -126
    assert ((y[live] / want[live] - 1).abs().max() < 1e-4)
    assert (y[~live] == 0).all()
