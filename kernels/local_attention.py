"""Sliding-window causal attention forward (prefill) in Triton, against the contiguous KV cache.

Algorithm: FlashAttention-2's forward (online softmax over key blocks, one program per query
block and query head), restricted to the key blocks a query block can see. With queries at
positions [q_lo, q_hi] and window W, visible keys lie in [q_lo - W + 1, q_hi]; the kernel walks
that range in three loops: the lower window edge (masked), the interior that every query sees
(no mask), and the causal diagonal (masked). Every other key block is skipped, so the cost is
O(Tq * (W + BLOCK_M)) whatever the cache length. With W at least the whole span the same kernel is
the dense causal one (`kernels.global_attention`).

Layout (kernels/reference.py): q (B, Hq, Tq, D), query i at q_start + i; k, v (B, Hkv, Tk, D),
key j at k_start + j; query head h reads KV head h // (Hq // Hkv); any strides with a unit
stride on D (the model passes transposed projections and slices of its cache).

Provenance: written for this project after Triton's tutorial 06 (fused attention) and
FlashAttention-2 (Dao, 2023); the three-range loop replaces the tutorial's two causal stages.

Caution: forward only (training uses FlexAttention, see docs/KERNELS.md). A query with no
visible key (its own position missing from the cache) gets a zero row, where the reference
gives NaN. bf16 runs on GPUs only in tests: the CPU interpreter's bf16 `tl.dot` is not trusted.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels._utils import check_qkv, interpreting, prune_attn_configs
from kernels.reference import local_attention_ref

# Sentinel window for dense causal attention: larger than any position the kernels index.
NO_WINDOW = 1 << 30


@triton.jit
def _attn_fwd_inner(acc, m_i, l_i, n_vis, q, k_base, v_base, stride_kn, stride_vn,
                    q_pos, offs_n, offs_d, lo, hi, k_start, Tk, window, qk_scale,
                    MASK: tl.constexpr, BLOCK_N: tl.constexpr):
    """Online-softmax update of (acc, m_i, l_i) over key blocks [lo, hi) (key indices)."""
    for start_n in tl.range(lo, hi, BLOCK_N, num_stages=3):
        offs = start_n + offs_n
        # -- load K, V: (BLOCK_N, D) --
        if MASK:
            k = tl.load(k_base + offs[:, None] * stride_kn + offs_d[None, :],
                        mask=offs[:, None] < Tk, other=0.0)
            v = tl.load(v_base + offs[:, None] * stride_vn + offs_d[None, :],
                        mask=offs[:, None] < Tk, other=0.0)
        else:
            k = tl.load(k_base + offs[:, None] * stride_kn + offs_d[None, :])
            v = tl.load(v_base + offs[:, None] * stride_vn + offs_d[None, :])
        # -- compute qk in the log2 domain --
        qk = tl.dot(q, tl.trans(k)) * qk_scale
        if MASK:
            delta = q_pos[:, None] - (k_start + offs)[None, :]
            vis = (delta >= 0) & (delta < window) & (offs[None, :] < Tk)
            qk = tl.where(vis, qk, float("-inf"))
        # -- update m_i and l_i; m_i starts finite so fully masked rows give p = 0, not NaN --
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
        n_vis += 1
    return acc, m_i, l_i, n_vis


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, Out, Count,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    Hq, Tq, Tk, q_start, k_start, window, qk_scale,
    GROUP, TQ_KEY, LOCAL,  # TQ_KEY, LOCAL: autotune keys only
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, COUNT: tl.constexpr,
):
    """One program: BLOCK_M queries of one head against the key blocks in their window."""
    # Longest (latest) query blocks first: under causal masking they carry the most work.
    n_m_blocks = tl.num_programs(0)
    pid_m = n_m_blocks - 1 - tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = pid_bh // Hq
    off_h = pid_bh % Hq
    off_kh = off_h // GROUP
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)

    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm \
        + offs_d[None, :]
    q = tl.load(q_ptrs, mask=offs_m[:, None] < Tq, other=0.0)
    k_base = K + off_b * stride_kb + off_kh * stride_kh
    v_base = V + off_b * stride_vb + off_kh * stride_vh
    q_pos = q_start + offs_m

    # -- key ranges (key indices j, position k_start + j) --
    q_lo = q_start + m0
    q_hi = q_start + tl.minimum(m0 + BLOCK_M, Tq) - 1
    j_lo = tl.maximum(q_lo - window + 1 - k_start, 0)
    j_hi = tl.minimum(q_hi - k_start + 1, Tk)
    # No visible key (queries past the cache end): every loop below is empty.
    b_lo = tl.where(j_hi > j_lo, (j_lo // BLOCK_N) * BLOCK_N, j_hi)
    # Interior: keys every query of the block sees, whole blocks only, all inside the cache.
    full_lo = tl.maximum(q_hi - window + 1 - k_start, 0)
    fs = tl.maximum(tl.cdiv(full_lo, BLOCK_N) * BLOCK_N, b_lo)
    fe = (tl.maximum(q_lo - k_start + 1, 0) // BLOCK_N) * BLOCK_N
    fe = tl.maximum(tl.minimum(fe, (Tk // BLOCK_N) * BLOCK_N), fs)

    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    n_vis = tl.zeros([], dtype=tl.int32)
    # Stage 1: lower window edge (masked).
    acc, m_i, l_i, n_vis = _attn_fwd_inner(
        acc, m_i, l_i, n_vis, q, k_base, v_base, stride_kn, stride_vn, q_pos, offs_n, offs_d,
        b_lo, tl.minimum(fs, j_hi), k_start, Tk, window, qk_scale, True, BLOCK_N)
    # Stage 2: interior (no mask).
    acc, m_i, l_i, n_vis = _attn_fwd_inner(
        acc, m_i, l_i, n_vis, q, k_base, v_base, stride_kn, stride_vn, q_pos, offs_n, offs_d,
        fs, fe, k_start, Tk, window, qk_scale, False, BLOCK_N)
    # Stage 3: causal diagonal and the cache end (masked).
    acc, m_i, l_i, n_vis = _attn_fwd_inner(
        acc, m_i, l_i, n_vis, q, k_base, v_base, stride_kn, stride_vn, q_pos, offs_n, offs_d,
        fe, j_hi, k_start, Tk, window, qk_scale, True, BLOCK_N)

    # -- epilogue --
    l_i = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_i[:, None]
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om \
        + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < Tq)
    if COUNT:
        tl.store(Count + pid_bh * n_m_blocks + pid_m, n_vis)


# The sweep is kept in code, trimmed to the configs that won on an H100 and fit 99 KB at
# head_dim 128 (prune_attn_configs drops the rest on smaller GPUs); widen it to re-tune.
_FWD_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
    for bm, bn, w, s in [
        (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2), (128, 128, 8, 3),
        (64, 64, 4, 3), (64, 32, 4, 4), (128, 32, 4, 4), (64, 128, 4, 2),
    ]
]

_attn_fwd_tuned = triton.autotune(
    configs=_FWD_CONFIGS, key=["TQ_KEY", "LOCAL", "HEAD_DIM"],
    prune_configs_by={"early_config_prune": prune_attn_configs},
)(_attn_fwd_kernel)

# Interpreter launches use one small config: autotuning there would run every config on the CPU.
INTERPRET_BLOCK = 16


def attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int,
                  q_start: int, k_start: int = 0, block: tuple[int, int] | None = None,
                  count: bool = False, out: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the windowed causal forward; return (out, visited key blocks per program or None).

    `block=(BLOCK_M, BLOCK_N)` fixes the tile (tests); otherwise the autotuned list is used,
    or INTERPRET_BLOCK under the interpreter. The counter has shape (B*Hq, cdiv(Tq, BLOCK_M)).
    `out` (B, Hq, Tq, D) is written in place when given (tests poison it first).
    """
    check_qkv(q, k, v)
    if window < 1:
        raise ValueError(f"Expected window >= 1, got {window}")
    B, Hq, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    if out is None:
        out = torch.empty((B, Hq, Tq, D), dtype=q.dtype, device=q.device)
    qk_scale = 1.0 / math.sqrt(D) * 1.4426950408889634  # 1/sqrt(D) * 1/ln(2) for exp2
    window = min(window, NO_WINDOW)
    common = (
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        Hq, Tq, Tk, q_start, k_start, window, qk_scale, Hq // Hkv,
    )
    keys = (triton.next_power_of_2(Tq), int(window < NO_WINDOW))
    if block is None and interpreting():
        block = (INTERPRET_BLOCK, INTERPRET_BLOCK)
    if block is None:
        def grid(meta: dict) -> tuple[int, int]:
            return (triton.cdiv(Tq, meta["BLOCK_M"]), B * Hq)
        _attn_fwd_tuned[grid](q, k, v, out, out, *common, *keys,
                              HEAD_DIM=D, COUNT=False)
        return out, None
    bm, bn = block
    n_m = triton.cdiv(Tq, bm)
    cnt = torch.full((B * Hq, n_m), -1, dtype=torch.int32, device=q.device) if count else out
    _attn_fwd_kernel[(n_m, B * Hq)](
        q, k, v, out, cnt, *common, *keys,
        HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, COUNT=count,
        num_warps=4, num_stages=2 if not interpreting() else 1,
    )
    return out, (cnt if count else None)


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int,
                    q_start: int, k_start: int = 0) -> torch.Tensor:
    """Sliding-window causal attention (key visible iff 0 <= q_pos - k_pos < window)."""
    return attention_fwd(q, k, v, window=window, q_start=q_start, k_start=k_start)[0]


__all__ = ["local_attention", "local_attention_ref", "attention_fwd", "NO_WINDOW"]
