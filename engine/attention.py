"""The model's two attention kinds, one function each, so kernels drop in behind them.

`local_attention` and `global_attention` take the KV-cache layout documented in
docs/ARCHITECTURE.md (q: (B, Hq, Tq, D), k/v: (B, Hkv, Tk, D), absolute positions
q_start + i and k_start + j). On the CPU they run torch SDPA with an explicit boolean
mask, which matches `kernels.reference` to float32 rounding; on CUDA, for fp16/bf16 and head
dims 64/128, the Triton kernels of `kernels/` take over (a few query tokens: split-KV decode;
longer chunks: the prefill kernels). The kernels are imported on first CUDA use only, so the CPU
path never loads Triton.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.reference import attention_mask


def _sdpa(q, k, v, *, q_start: int, k_start: int, window: int | None) -> torch.Tensor:
    mask = attention_mask(q.shape[2], k.shape[2], q_start=q_start, k_start=k_start,
                          window=window, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                          enable_gqa=q.shape[1] != k.shape[1])


def _triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_start: int, k_start: int,
            window: int | None) -> torch.Tensor | None:
    """The Triton kernels' answer, or None when they do not take this shape or device."""
    if not q.is_cuda:
        return None
    from kernels._utils import supported

    if not supported(q, k, v):
        return None
    from kernels.decode_attention import MAX_DECODE_ROWS, decode_attention

    if q.shape[2] * (q.shape[1] // k.shape[1]) <= MAX_DECODE_ROWS and q.shape[2] <= 16:
        return decode_attention(q, k, v, q_start=q_start, k_start=k_start, window=window)
    from kernels.local_attention import NO_WINDOW, attention_fwd

    return attention_fwd(q, k, v, window=NO_WINDOW if window is None else window,
                         q_start=q_start, k_start=k_start)[0]


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int,
                    q_start: int, k_start: int = 0) -> torch.Tensor:
    """Sliding-window causal attention (key visible iff 0 <= q_pos - k_pos < window)."""
    out = _triton(q, k, v, q_start=q_start, k_start=k_start, window=window)
    if out is not None:
        return out
    # Keys older than the window of the first query are never visible: drop them first.
    first = max(0, q_start - window + 1 - k_start)
    if first:
        k, v, k_start = k[:, :, first:], v[:, :, first:], k_start + first
    return _sdpa(q, k, v, q_start=q_start, k_start=k_start, window=window)


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_start: int,
                     k_start: int = 0) -> torch.Tensor:
    """Dense causal attention (key visible iff k_pos <= q_pos)."""
    out = _triton(q, k, v, q_start=q_start, k_start=k_start, window=None)
    if out is not None:
        return out
    return _sdpa(q, k, v, q_start=q_start, k_start=k_start, window=None)
