"""Split-KV decode attention ("flash-decoding") in Triton for one or a few query tokens.

Algorithm: the visible key range of the query tokens is cut into `n_splits` chunks; one program
per (batch, KV head, chunk) runs the online softmax over its chunk for all the query heads that
share the KV head (GQA packing: GROUP x Tq rows in one tile, so each K/V byte is read once), and
writes an unnormalised partial output with its running max and sum. A second small kernel merges
the chunks (log-sum-exp rescaling), one program per output row. Enough chunks are made to put
about two programs on every multiprocessor, so a single sequence fills the GPU. With a window
(local layers) the range starts at the first query's window, so the work is bounded by the
window, not the cache.

Layout: as kernels/reference.py; queries at q_start .. q_start + Tq - 1 see keys causally (a few
query tokens: speculative or multi-token decode).

Provenance: after Tri Dao et al., "Flash-Decoding for long-context inference" (2023) and the
split-K decode kernels of gpt-fast / FlashInfer; written for this project.

Caution: meant for Tq * GROUP <= 128 rows; longer chunks go to the prefill kernel.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from kernels._utils import attn_smem_bytes, check_qkv, device_arch, interpreting, smem_cap
from kernels.local_attention import NO_WINDOW, _attn_fwd_inner
from kernels.reference import attention_ref

# Most rows (GROUP * Tq) a decode tile holds; beyond this the prefill kernel is used.
MAX_DECODE_ROWS = 128


@triton.jit
def _decode_split_kernel(
    Q, K, V, Work, Count, QPos,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    Hkv, Tq, Tk, q_start, k_start, window, qk_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr, COUNT: tl.constexpr, POS_PTR: tl.constexpr,
):
    """One program: all GROUP x Tq query rows of one KV head against one chunk of keys.

    The visible range and the chunk are computed here from q_start (an argument, or read from
    the device at QPos when POS_PTR), so a captured CUDA graph stays valid as the position moves.
    Chunks past the range write an empty partial (max -1e30, sum 0), which the merge ignores.
    """
    pid_s = tl.program_id(0)
    n_splits = tl.num_programs(0)
    pid_bh = tl.program_id(1)
    off_b = pid_bh // Hkv
    off_kh = pid_bh % Hkv
    offs_r = tl.arange(0, BLOCK_R)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    # Row r is query token r % Tq of query head off_kh * GROUP + r // Tq.
    r_ok = offs_r < GROUP * Tq
    head = off_kh * GROUP + offs_r // Tq
    t = offs_r % Tq
    q = tl.load(Q + off_b * stride_qb + head[:, None] * stride_qh + t[:, None] * stride_qm
                + offs_d[None, :], mask=r_ok[:, None], other=0.0)
    if POS_PTR:
        q_start = tl.load(QPos).to(tl.int32)
    q_pos = q_start + t
    # Visible key indices of all the queries: [j_lo, j_hi), cut into n_splits chunks.
    j_lo = tl.maximum(q_start - window + 1 - k_start, 0)
    j_hi = tl.maximum(tl.minimum(q_start + Tq - k_start, Tk), j_lo)
    n_blocks = tl.cdiv(j_hi - j_lo, BLOCK_N)
    chunk = tl.cdiv(n_blocks, n_splits) * BLOCK_N
    k_base = K + off_b * stride_kb + off_kh * stride_kh
    v_base = V + off_b * stride_vb + off_kh * stride_vh

    lo = j_lo + pid_s * chunk
    hi = tl.minimum(lo + chunk, j_hi)
    acc = tl.zeros([BLOCK_R, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_R], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_R], dtype=tl.float32)
    acc, m_i, l_i, n_vis = _attn_fwd_inner(
        acc, m_i, l_i, tl.zeros([], dtype=tl.int32), q, k_base, v_base, stride_kn, stride_vn,
        q_pos, offs_n, offs_d, lo, hi, k_start, Tk, window, qk_scale, True, BLOCK_N)

    # -- write the partial into one workspace: per (B*Hkv, split) BLOCK_R x (D + 2) floats,
    # the rows' unnormalised output, then their max, then their sum --
    base = pid_bh * n_splits + pid_s
    w = Work + base * BLOCK_R * (HEAD_DIM + 2)
    tl.store(w + offs_r[:, None] * HEAD_DIM + offs_d[None, :], acc)
    tl.store(w + BLOCK_R * HEAD_DIM + offs_r, m_i)
    tl.store(w + BLOCK_R * (HEAD_DIM + 1) + offs_r, l_i)
    if COUNT:
        tl.store(Count + base, n_vis)


@triton.jit
def _decode_merge_kernel(
    Work, Out, stride_ob, stride_oh, stride_om, Hkv, Tq, n_splits,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr, SPLITS: tl.constexpr,
):
    """Merge all chunks' partials of one output row at once (log-sum-exp rescaling)."""
    pid_bh = tl.program_id(0)
    r = tl.program_id(1)  # row: query token r % Tq of query head off_kh * GROUP + r // Tq
    off_b = pid_bh // Hkv
    off_kh = pid_bh % Hkv
    offs_s = tl.arange(0, SPLITS)
    offs_d = tl.arange(0, HEAD_DIM)
    s_ok = offs_s < n_splits
    w = Work + (pid_bh * n_splits + offs_s) * (BLOCK_R * (HEAD_DIM + 2))  # (SPLITS,) pointers
    m_s = tl.load(w + BLOCK_R * HEAD_DIM + r, mask=s_ok, other=-1.0e30)
    l_s = tl.load(w + BLOCK_R * (HEAD_DIM + 1) + r, mask=s_ok, other=0.0)
    o_s = tl.load(w[:, None] + r * HEAD_DIM + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    m = tl.max(m_s, 0)
    w = tl.math.exp2(m_s - m)
    den = tl.sum(l_s * w, 0)
    den = tl.where(den == 0.0, 1.0, den)
    out = tl.sum(o_s * w[:, None], 0) / den
    head = off_kh * GROUP + r // Tq
    t = r % Tq
    tl.store(Out + off_b * stride_ob + head * stride_oh + t * stride_om + offs_d,
             out.to(Out.dtype.element_ty))


def _num_sms(device: torch.device) -> int:
    if interpreting() or device.type != "cuda":
        return 4
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _sm_count(dev: int) -> int:
    return torch.cuda.get_device_properties(dev).multi_processor_count


@functools.cache
def _stages(block_r: int, block_n: int, head_dim: int, elem: int, cap: int, arch: int) -> int:
    """Deepest K/V pipeline that fits the shared-memory cap (4 at D=64, 2 at D=128 on 99 KB)."""
    return max(s for s in (2, 3, 4) if s == 2
               or attn_smem_bytes(block_r, block_n, head_dim, s, elem=elem, arch=arch) <= cap)


def decode_splits(n_blocks: int, bkv: int, device: torch.device) -> int:
    """Chunks for `n_blocks` key blocks: about two programs per multiprocessor, none empty."""
    n_blocks = max(1, n_blocks)
    n_splits = max(1, min(n_blocks, triton.cdiv(2 * _num_sms(device), bkv)))
    return triton.cdiv(n_blocks, triton.cdiv(n_blocks, n_splits))


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                     q_start: int | torch.Tensor, k_start: int = 0, window: int | None = None,
                     n_splits: int | None = None, block_n: int | None = None,
                     num_warps: int = 4,
                     count: bool = False, out: torch.Tensor | None = None,
                     ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Causal (window=None) or sliding-window attention of a few queries against a long cache.

    `q_start` is the first query's position: an int, or a one-element integer tensor on q's
    device, read by the kernel, so a CUDA graph captured once replays at every later position
    (the chunk count then covers the whole cache, or the window, instead of the visible range).
    The call does no host synchronisation and allocates only its workspace and `out`, so it can
    be captured. `n_splits`, `block_n` and `num_warps` override the launch settings (tests,
    `kernels.tune_decode`); with
    `count=True` the visited key blocks per (batch*KV head, split) come back too; `out` is
    written in place.
    """
    check_qkv(q, k, v)
    B, Hq, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    group = Hq // Hkv
    rows = group * Tq
    if rows > MAX_DECODE_ROWS:
        raise ValueError(f"Expected GROUP * Tq <= {MAX_DECODE_ROWS}, got {rows}")
    block_r = max(16, triton.next_power_of_2(rows))
    win = NO_WINDOW if window is None else min(window, NO_WINDOW)
    interp = interpreting()
    block_n = block_n or (16 if interp else 64)
    dev = q.device
    pos_ptr = isinstance(q_start, torch.Tensor)
    if pos_ptr:
        if q_start.numel() != 1 or q_start.device != dev or q_start.is_floating_point():
            raise ValueError("Expected q_start as a one-element integer tensor on q's device")
        qpos, q_start = q_start, 0
        span = Tk if window is None else min(Tk, win + Tq - 1)  # widest the range can be
    else:
        qpos = None
        j_lo = max(0, q_start - win + 1 - k_start)
        span = max(min(Tk, q_start + Tq - k_start) - j_lo, 0)
    if n_splits is None:
        n_splits = decode_splits(triton.cdiv(span, block_n), B * Hkv, dev)

    # One workspace for every partial: (B*Hkv, n_splits, BLOCK_R, D + 2) floats (see the kernel).
    work = torch.empty(B * Hkv * n_splits * block_r * (D + 2), dtype=torch.float32, device=dev)
    if out is None:
        out = torch.empty((B, Hq, Tq, D), dtype=q.dtype, device=dev)
    cnt = torch.full((B * Hkv, n_splits), -1, dtype=torch.int32, device=dev) if count else work
    stages = 1 if interp else _stages(block_r, block_n, D, q.element_size(), smem_cap(),
                                      device_arch())
    qk_scale = 1.0 / math.sqrt(D) * 1.4426950408889634  # 1/sqrt(D) * 1/ln(2) for exp2
    _decode_split_kernel[(n_splits, B * Hkv)](
        q, k, v, work, cnt, work if qpos is None else qpos,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        Hkv, Tq, Tk, q_start, k_start, win, qk_scale,
        GROUP=group, HEAD_DIM=D, BLOCK_R=block_r, BLOCK_N=block_n, COUNT=count,
        POS_PTR=pos_ptr, num_warps=num_warps, num_stages=stages,
    )
    # One program per output row: the first version looped over the splits in one program per
    # KV head, and its dependent loads cost about 0.13 ms at 128 splits on the H100 [2026-11-23].
    _decode_merge_kernel[(B * Hkv, rows)](
        work, out, out.stride(0), out.stride(1), out.stride(2), Hkv, Tq,
        n_splits, GROUP=group, HEAD_DIM=D, BLOCK_R=block_r,
        SPLITS=max(16, triton.next_power_of_2(n_splits)), num_warps=4,
    )
    return (out, cnt) if count else out


def decode_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_start: int,
                         k_start: int = 0, window: int | None = None,
                         upcast: bool = True) -> torch.Tensor:
    """Float32 reference: the same masked softmax as the prefill references."""
    return attention_ref(q, k, v, q_start=q_start, k_start=k_start, window=window,
                         upcast=upcast)


__all__ = ["decode_attention", "decode_attention_ref", "decode_splits", "MAX_DECODE_ROWS"]
