"""Block-sparse global attention in Triton: sink + local + top-k key blocks per query block.

Algorithm (the selection idea of Quest / MoBA / NSA's selection branch), for block size S:
key block c holds key positions [c*S, (c+1)*S); query block b holds query positions [b*S, (b+1)*S).
Query block b of query head h attends to
  - the sink blocks 0 .. sink-1,
  - its local blocks b - n_local + 1 .. b (causal inside block b),
  - the top_k other earlier blocks by score <mean_q(b, h), mean_k(c, h // GROUP)>, where the
    means run over the block's queries in this call and over its keys in the cache.
With top_k at least the number of candidate blocks every earlier block is taken: dense causal.

Three launches: `_pool_keys_kernel` (mean of each key block, fp32), `_select_kernel` (pooled query,
scores against every candidate block through an L2-resident scratch row, top-k by repeated
argmax, index list out) and `_sparse_fwd_kernel` (one program per BLOCK_M queries: unmasked
selected blocks from the index list, then the contiguous local range through the local kernel's
masked and unmasked loops). The index list is the product's block table: the benchmark turns the
same list into a FlexAttention BlockMask for the peer measurement.

Layout: as kernels/reference.py, with k_start a multiple of S (the model's cache starts at 0).
Caution: forward only; selection ties resolve to the lowest block index (torch.topk may differ on
exact ties, which random inputs do not produce).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels._utils import check_qkv, interpreting, next_pow2
from kernels.local_attention import NO_WINDOW, _attn_fwd_inner
from kernels.reference import attention_mask

# Jitted code reads module globals only as constexpr.
_NO_WINDOW = tl.constexpr(NO_WINDOW)


@triton.jit
def _pool_keys_kernel(K, Pk, stride_kb, stride_kh, stride_kn, Hkv, Tk, k_start, n_kb,
                      S: tl.constexpr, HEAD_DIM: tl.constexpr, ROWS: tl.constexpr):
    """Pk[b, h, c] = mean of the cached keys of block c (fp32), 0 for an empty block."""
    c = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = pid_bh // Hkv
    off_h = pid_bh % Hkv
    offs_d = tl.arange(0, HEAD_DIM)
    total = tl.zeros([HEAD_DIM], dtype=tl.float32)
    n = 0.0
    for r0 in tl.static_range(0, S, ROWS):
        offs = c * S - k_start + r0 + tl.arange(0, ROWS)
        ok = (offs >= 0) & (offs < Tk)
        k = tl.load(K + off_b * stride_kb + off_h * stride_kh + offs[:, None] * stride_kn
                    + offs_d[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        total += tl.sum(k, 0)
        n += tl.sum(ok.to(tl.float32), 0)
    tl.store(Pk + (pid_bh * n_kb + c) * HEAD_DIM + offs_d, total / tl.maximum(n, 1.0))


@triton.jit
def _select_kernel(Q, Pk, Scratch, Idx, Cnt,
                   stride_qb, stride_qh, stride_qm,
                   Hq, Hkv, Tq, q_start, qb0, n_qb, n_kb,
                   GROUP: tl.constexpr, S: tl.constexpr, HEAD_DIM: tl.constexpr,
                   TOP_K: tl.constexpr, N_LOCAL: tl.constexpr, SINK: tl.constexpr,
                   MAX_SEL: tl.constexpr, CHUNK: tl.constexpr, NKB_PAD: tl.constexpr,
                   ROWS: tl.constexpr):
    """Index list (sink blocks, then top-k blocks, ascending within each) of one query block."""
    i_qb = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = pid_bh // Hq
    off_h = pid_bh % Hq
    off_kh = off_h // GROUP
    qb = qb0 + i_qb
    offs_d = tl.arange(0, HEAD_DIM)
    # -- pooled query: mean over the block's queries present in this call --
    total = tl.zeros([HEAD_DIM], dtype=tl.float32)
    n = 0.0
    for r0 in tl.static_range(0, S, ROWS):
        rows = qb * S - q_start + r0 + tl.arange(0, ROWS)
        ok = (rows >= 0) & (rows < Tq)
        q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + rows[:, None] * stride_qm
                    + offs_d[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        total += tl.sum(q, 0)
        n += tl.sum(ok.to(tl.float32), 0)
    pq = total / tl.maximum(n, 1.0)
    # Candidates: after the sink, before the local blocks, inside the cache.
    cand_hi = tl.minimum(qb - N_LOCAL + 1, n_kb)
    n_sink = tl.maximum(tl.minimum(SINK, cand_hi), 0)
    # -- scores into this program's scratch row (stays in L2) --
    row = pid_bh * n_qb + i_qb
    for c0 in range(0, NKB_PAD, CHUNK):
        offs_c = c0 + tl.arange(0, CHUNK)
        c_ok = (offs_c >= SINK) & (offs_c < cand_hi)
        pk = tl.load(Pk + (off_b * Hkv + off_kh) * n_kb * HEAD_DIM + offs_c[:, None] * HEAD_DIM
                     + offs_d[None, :], mask=c_ok[:, None], other=0.0)
        s = tl.sum(pk * pq[None, :], 1)
        s = tl.where(c_ok, s, float("-inf"))
        tl.store(Scratch + row * NKB_PAD + offs_c, s)
    tl.debug_barrier()
    offs_all = tl.arange(0, NKB_PAD)
    scores = tl.load(Scratch + row * NKB_PAD + offs_all)
    # -- top-k by repeated argmax; a selected block is marked in a bitmap, then written in order --
    chosen = tl.zeros([NKB_PAD], dtype=tl.int32)
    for _ in tl.static_range(TOP_K):
        best = tl.max(scores, 0)
        pos = tl.min(tl.where(scores == best, offs_all, NKB_PAD), 0)
        hit = (offs_all == pos) & (scores > float("-inf"))
        chosen = tl.where(hit, 1, chosen)
        scores = tl.where(offs_all == pos, float("-inf"), scores)
    chosen = tl.where(offs_all < n_sink, 1, chosen)
    # Compact the bitmap: slot of a chosen block = number of chosen blocks before it.
    slot = tl.cumsum(chosen, 0) - chosen
    sel = chosen == 1
    tl.store(Idx + row * MAX_SEL + slot, offs_all, mask=sel)
    tl.store(Cnt + row, tl.sum(chosen, 0))


# 2^f on [0, 1), degree 3, fitted for relative error (max 7.5e-5; bf16 probabilities keep 8
# bits): FlashAttention-4's way of moving part of the exponentials onto the FMA units.
_EXP2_C0 = tl.constexpr(0.99992522)
_EXP2_C1 = tl.constexpr(0.69583354)
_EXP2_C2 = tl.constexpr(0.22606716)
_EXP2_C3 = tl.constexpr(0.07802452)


@triton.jit
def _exp2_poly(x):
    """2^x for x <= 0 without the special-function unit: a polynomial for the fraction, the
    integer part added to the exponent bits; exactly 0 below -126 (and for -inf)."""
    xc = tl.maximum(x, -126.0)
    j = tl.floor(xc)
    f = xc - j
    p = ((_EXP2_C3 * f + _EXP2_C2) * f + _EXP2_C1) * f + _EXP2_C0
    bits = p.to(tl.int32, bitcast=True) + (j.to(tl.int32) << 23)
    return tl.where(x < -126.0, 0.0, bits.to(tl.float32, bitcast=True))


@triton.jit
def _sparse_fwd_kernel(
    Q, K, V, Out, Idx, Cnt, Count,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    Hq, Tq, Tk, q_start, k_start, qb0, n_qb, qk_scale,
    GROUP: tl.constexpr, S: tl.constexpr, HEAD_DIM: tl.constexpr, N_LOCAL: tl.constexpr,
    MAX_SEL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, COUNT: tl.constexpr,
    TMA: tl.constexpr, WS: tl.constexpr, POLY: tl.constexpr,
):
    """BLOCK_M queries of one head: selected blocks (unmasked), then the local range.

    TMA: the selected blocks' K/V come through on-device tensor descriptors (sm_90+); WS:
    that loop is warp-specialised (Triton's Hopper/Blackwell pass). Both are experiments for
    the benchmark (docs/KERNELS.md), off by default. POLY: the second half of each selected
    key tile takes its exponentials from `_exp2_poly` (pointer loads only)."""
    SUB_M: tl.constexpr = S // BLOCK_M
    SUB_N: tl.constexpr = S // BLOCK_N
    n_tiles = tl.num_programs(0)
    tile = n_tiles - 1 - tl.program_id(0)  # latest query blocks first
    pid_bh = tl.program_id(1)
    off_b = pid_bh // Hq
    off_h = pid_bh % Hq
    off_kh = off_h // GROUP
    i_qb = tile // SUB_M
    qb = qb0 + i_qb
    m0 = qb * S + (tile % SUB_M) * BLOCK_M - q_start  # query index of the tile's first row
    has_rows = (m0 + BLOCK_M > 0) & (m0 < Tq)
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    m_ok = (offs_m >= 0) & (offs_m < Tq)
    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm
                + offs_d[None, :], mask=m_ok[:, None], other=0.0)
    q_pos = q_start + offs_m
    k_base = K + off_b * stride_kb + off_kh * stride_kh
    v_base = V + off_b * stride_vb + off_kh * stride_vh

    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    n_vis = tl.zeros([], dtype=tl.int32)
    # -- stage 1: selected blocks (sink and top-k), every key visible to every query --
    row = pid_bh * n_qb + i_qb
    n_sel = tl.where(has_rows, tl.load(Cnt + row), 0)
    if TMA:
        k_desc = tl.make_tensor_descriptor(k_base, shape=[Tk, HEAD_DIM], strides=[stride_kn, 1],
                                           block_shape=[BLOCK_N, HEAD_DIM])
        v_desc = tl.make_tensor_descriptor(v_base, shape=[Tk, HEAD_DIM], strides=[stride_vn, 1],
                                           block_shape=[BLOCK_N, HEAD_DIM])
    for it in tl.range(0, n_sel * SUB_N, warp_specialize=WS):
        c = tl.load(Idx + row * MAX_SEL + it // SUB_N)
        start_n = c * S - k_start + (it % SUB_N) * BLOCK_N
        if POLY:
            HALF: tl.constexpr = BLOCK_N // 2
            o1 = start_n + tl.arange(0, HALF)
            o2 = o1 + HALF
            k1 = tl.load(k_base + o1[:, None] * stride_kn + offs_d[None, :])
            k2 = tl.load(k_base + o2[:, None] * stride_kn + offs_d[None, :])
            v1 = tl.load(v_base + o1[:, None] * stride_vn + offs_d[None, :])
            v2 = tl.load(v_base + o2[:, None] * stride_vn + offs_d[None, :])
            s1 = tl.dot(q, tl.trans(k1)) * qk_scale
            s2 = tl.dot(q, tl.trans(k2)) * qk_scale
            m_new = tl.maximum(m_i, tl.maximum(tl.max(s1, 1), tl.max(s2, 1)))
            p1 = tl.math.exp2(s1 - m_new[:, None])
            p2 = _exp2_poly(s2 - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p1, 1) + tl.sum(p2, 1)
            acc = acc * alpha[:, None] + tl.dot(p1.to(v1.dtype), v1) \
                + tl.dot(p2.to(v2.dtype), v2)
        else:
            if TMA:
                k = k_desc.load([start_n, 0])
                v = v_desc.load([start_n, 0])
            else:
                offs = start_n + offs_n
                k = tl.load(k_base + offs[:, None] * stride_kn + offs_d[None, :])
                v = tl.load(v_base + offs[:, None] * stride_vn + offs_d[None, :])
            qk = tl.dot(q, tl.trans(k)) * qk_scale
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            p = tl.math.exp2(qk - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
        n_vis += 1
    # -- stage 2: local blocks, contiguous: unmasked interior, then the causal diagonal --
    j_lo = tl.maximum((qb - N_LOCAL + 1) * S - k_start, 0)
    q_lo = q_start + tl.maximum(m0, 0)
    q_hi = q_start + tl.minimum(m0 + BLOCK_M, Tq) - 1
    j_hi = tl.where(has_rows, tl.minimum(q_hi - k_start + 1, Tk), j_lo)
    fe = (tl.maximum(q_lo - k_start + 1, 0) // BLOCK_N) * BLOCK_N
    fe = tl.maximum(tl.minimum(fe, (Tk // BLOCK_N) * BLOCK_N), j_lo)
    acc, m_i, l_i, n_vis = _attn_fwd_inner(
        acc, m_i, l_i, n_vis, q, k_base, v_base, stride_kn, stride_vn, q_pos, offs_n, offs_d,
        j_lo, tl.minimum(fe, j_hi), k_start, Tk, _NO_WINDOW, qk_scale, False, BLOCK_N)
    acc, m_i, l_i, n_vis = _attn_fwd_inner(
        acc, m_i, l_i, n_vis, q, k_base, v_base, stride_kn, stride_vn, q_pos, offs_n, offs_d,
        fe, j_hi, k_start, Tk, _NO_WINDOW, qk_scale, True, BLOCK_N)
    # -- epilogue --
    l_i = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_i[:, None]
    tl.store(Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om
             + offs_d[None, :], out.to(Out.dtype.element_ty), mask=m_ok[:, None])
    if COUNT:
        tl.store(Count + pid_bh * n_tiles + tile, n_vis)


def _blocks(q_start: int, tq: int, block: int) -> tuple[int, int]:
    """First query block and number of query blocks touched by positions q_start .. +tq-1."""
    qb0 = q_start // block
    return qb0, (q_start + tq - 1) // block - qb0 + 1


def select_blocks(q: torch.Tensor, k: torch.Tensor, *, q_start: int, k_start: int = 0,
                  block: int = 128, top_k: int = 8, n_local: int = 2, sink: int = 1,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Selected non-local blocks per (B*Hq, query block): (idx (.., MAX_SEL) int32, count)."""
    B, Hq, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    if k_start % block:
        raise ValueError(f"Expected k_start a multiple of block {block}, got {k_start}")
    n_kb = triton.cdiv(k_start + Tk, block)
    qb0, n_qb = _blocks(q_start, Tq, block)
    dev = q.device
    pk = torch.empty((B, Hkv, n_kb, D), dtype=torch.float32, device=dev)
    _pool_keys_kernel[(n_kb, B * Hkv)](
        k, pk, k.stride(0), k.stride(1), k.stride(2), Hkv, Tk, k_start, n_kb,
        S=block, HEAD_DIM=D, ROWS=min(block, 32), num_warps=4)
    # At most n_kb - sink candidates exist: a larger k selects the same blocks, and the argmax
    # loop below is unrolled TOP_K times (k = 1000 took 169 s to compile on the H100 [2026-11-24]).
    top_k = min(top_k, max(0, n_kb - sink))
    max_sel = sink + top_k
    nkb_pad = max(16, next_pow2(n_kb))
    chunk = min(nkb_pad, 64)
    scratch = torch.empty((B * Hq * n_qb, nkb_pad), dtype=torch.float32, device=dev)
    idx = torch.zeros((B * Hq, n_qb, max_sel), dtype=torch.int32, device=dev)
    cnt = torch.empty((B * Hq, n_qb), dtype=torch.int32, device=dev)
    _select_kernel[(n_qb, B * Hq)](
        q, pk, scratch, idx, cnt, q.stride(0), q.stride(1), q.stride(2),
        Hq, Hkv, Tq, q_start, qb0, n_qb, n_kb,
        GROUP=Hq // Hkv, S=block, HEAD_DIM=D, TOP_K=top_k, N_LOCAL=n_local, SINK=sink,
        MAX_SEL=max_sel, CHUNK=chunk, NKB_PAD=nkb_pad, ROWS=min(block, 32), num_warps=4)
    return idx, cnt


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_start: int,
                     k_start: int = 0, block: int = 128, top_k: int = 8, n_local: int = 2,
                     sink: int = 1, selection: tuple[torch.Tensor, torch.Tensor] | None = None,
                     tile: tuple[int, int] | None = None, count: bool = False,
                     out: torch.Tensor | None = None, tma: bool = False,
                     warp_specialize: bool = False, poly_exp: bool = False) -> tuple[
                         torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
    """Block-sparse causal attention; returns (out, (idx, cnt) selection, visited-block counter).

    `selection` reuses an index list from `select_blocks`; `tile=(BLOCK_M, BLOCK_N)` fixes the
    attention tile (both must divide `block`); `out` is written in place (tests poison it).
    `tma` / `warp_specialize`: benchmark variants of the selected-block loop (sm_90+; K and V
    rows 16-byte aligned), same results. `poly_exp`: half of that loop's exponentials by
    polynomial (results within 1e-4 relative of the exact exp2; not with `tma`).
    """
    check_qkv(q, k, v)
    if n_local < 1 or sink < 0 or top_k < 0:
        raise ValueError(f"Expected n_local >= 1, sink >= 0, top_k >= 0, got {n_local}, {sink}, "
                         f"{top_k}")
    B, Hq, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    if selection is None:
        selection = select_blocks(q, k, q_start=q_start, k_start=k_start, block=block,
                                  top_k=top_k, n_local=n_local, sink=sink)
    idx, cnt = selection
    qb0, n_qb = _blocks(q_start, Tq, block)
    if tile is None:
        # (64, 64) measured fastest of (128|64) x (128|64) at 64K on the H100 [2026-11-23]:
        # 0.545 ms against 0.643-0.779 ms for the others (attention only, top-8 of 128-blocks).
        tile = (16, 16) if interpreting() else (min(64, block), min(64, block))
    bm, bn = tile
    if block % bm or block % bn:
        raise ValueError(f"Expected tile {tile} to divide block {block}")
    if out is None:
        out = torch.empty((B, Hq, Tq, D), dtype=q.dtype, device=q.device)
    n_tiles = n_qb * (block // bm)
    counter = torch.full((B * Hq, n_tiles), -1, dtype=torch.int32, device=q.device) \
        if count else cnt
    qk_scale = 1.0 / math.sqrt(D) * 1.4426950408889634  # 1/sqrt(D) * 1/ln(2) for exp2
    if tma and poly_exp:
        raise ValueError("Expected at most one of tma and poly_exp")
    if poly_exp and bn < 32:
        raise ValueError(f"Expected a key tile of at least 32 with poly_exp, got {bn}")
    if tma and not interpreting():
        _tma_scratch()
    _sparse_fwd_kernel[(n_tiles, B * Hq)](
        q, k, v, out, idx, cnt, counter,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        Hq, Tq, Tk, q_start, k_start, qb0, n_qb, qk_scale,
        GROUP=Hq // Hkv, S=block, HEAD_DIM=D, N_LOCAL=n_local, MAX_SEL=idx.shape[-1],
        BLOCK_M=bm, BLOCK_N=bn, COUNT=count, TMA=tma, WS=warp_specialize, POLY=poly_exp,
        num_warps=1 if interpreting() else (8 if bm >= 128 else 4),  # (64, 64) ran with 4
        num_stages=1 if interpreting() else 3,
    )
    return out, selection, (counter if count else None)


def _tma_scratch() -> None:
    """On-device tensor descriptors need a global scratch allocator (set once per process)."""
    if getattr(_tma_scratch, "done", False):
        return

    def alloc(size: int, alignment: int, stream) -> torch.Tensor:
        return torch.empty(size, dtype=torch.int8, device="cuda")

    triton.set_allocator(alloc)
    _tma_scratch.done = True


def sparse_block_mask_ref(q: torch.Tensor, k: torch.Tensor, *, q_start: int, k_start: int = 0,
                          block: int = 128, top_k: int = 8, n_local: int = 2, sink: int = 1,
                          ) -> torch.Tensor:
    """Pure-torch selection: bool (B, Hq, n_qb, n_kb), True for every attended key block."""
    B, Hq, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    n_kb = -(-(k_start + Tk) // block)
    qb0, n_qb = _blocks(q_start, Tq, block)
    kf = torch.zeros((B, Hkv, n_kb * block, D), dtype=torch.float32, device=q.device)
    kf[:, :, k_start:k_start + Tk] = k.float()
    kn = torch.zeros(n_kb * block, device=q.device)
    kn[k_start:k_start + Tk] = 1
    pk = kf.view(B, Hkv, n_kb, block, D).sum(3) / kn.view(n_kb, block).sum(1).clamp(min=1)[:, None]
    qf = torch.zeros((B, Hq, (qb0 + n_qb) * block, D), dtype=torch.float32, device=q.device)
    qf[:, :, q_start:q_start + Tq] = q.float()
    qn = torch.zeros((qb0 + n_qb) * block, device=q.device)
    qn[q_start:q_start + Tq] = 1
    pq = qf.view(B, Hq, qb0 + n_qb, block, D).sum(3)[:, :, qb0:]
    pq = pq / qn.view(-1, block).sum(1)[qb0:].clamp(min=1)[:, None]
    pk = pk.repeat_interleave(Hq // Hkv, dim=1)  # (B, Hq, n_kb, D)
    scores = pq @ pk.transpose(-1, -2)  # (B, Hq, n_qb, n_kb)
    qb = torch.arange(qb0, qb0 + n_qb, device=q.device)[:, None]
    c = torch.arange(n_kb, device=q.device)[None, :]
    cand = (c >= sink) & (c < qb - n_local + 1)
    scores = scores.masked_fill(~cand, float("-inf"))
    mask = (c < sink) & (c < qb - n_local + 1) | (c >= qb - n_local + 1) & (c <= qb)
    mask = mask.expand(B, Hq, n_qb, n_kb).clone()
    if top_k > 0 and n_kb > 0:
        kk = min(top_k, n_kb)
        val, ind = scores.topk(kk, dim=-1)
        mask.scatter_(-1, ind, val > float("-inf"))
        mask |= (c < sink) & (c < qb - n_local + 1) | (c >= qb - n_local + 1) & (c <= qb)
    return mask


def selection_to_block_mask(idx: torch.Tensor, cnt: torch.Tensor, *, q_start: int, tq: int,
                            n_kb: int, block: int, n_local: int) -> torch.Tensor:
    """The kernel's index lists as bool (B*Hq, n_qb, n_kb), local blocks included."""
    qb0, n_qb = _blocks(q_start, tq, block)
    bh = idx.shape[0]
    # Unused slots scatter into a spare last column, dropped afterwards.
    mask = torch.zeros((bh, n_qb, n_kb + 1), dtype=torch.bool, device=idx.device)
    slots = torch.arange(idx.shape[-1], device=idx.device)
    valid = slots[None, None, :] < cnt[..., None]
    mask.scatter_(-1, torch.where(valid, idx, n_kb).long(), True)
    mask = mask[..., :n_kb]
    qb = torch.arange(qb0, qb0 + n_qb, device=idx.device)[:, None]
    c = torch.arange(n_kb, device=idx.device)[None, :]
    return mask | ((c >= qb - n_local + 1) & (c <= qb))


def sparse_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_start: int,
                         k_start: int = 0, block: int = 128,
                         block_mask: torch.Tensor, upcast: bool = True) -> torch.Tensor:
    """Token-level masked reference: causal mask AND the selected key blocks (B, Hq, n_qb, n_kb)."""
    B, Hq, Tq, D = q.shape
    Tk = k.shape[2]
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    qb0, _ = _blocks(q_start, Tq, block)
    q_blk = (torch.arange(q_start, q_start + Tq, device=q.device) // block) - qb0
    k_blk = torch.arange(k_start, k_start + Tk, device=q.device) // block
    tok = block_mask[:, :, q_blk][:, :, :, k_blk]  # (B, Hq, Tq, Tk)
    tok = tok & attention_mask(Tq, Tk, q_start=q_start, k_start=k_start, device=q.device)
    group = Hq // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D))
    out = torch.softmax(scores.masked_fill(~tok, float("-inf")), dim=-1) @ v
    return out.to(dtype)


__all__ = ["sparse_attention", "select_blocks", "sparse_block_mask_ref", "sparse_attention_ref",
           "selection_to_block_mask"]
