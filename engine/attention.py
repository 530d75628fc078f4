"""The model's two attention kinds, one function each, so kernels drop in behind them.

`local_attention` and `global_attention` take the KV-cache layout documented in
docs/ARCHITECTURE.md (q: (B, Hq, Tq, D), k/v: (B, Hkv, Tk, D), absolute positions
q_start + i and k_start + j). On the CPU they run torch SDPA with an explicit boolean
mask, which matches `kernels.reference` to float32 rounding; on CUDA the Triton kernels
of `kernels/` take over once they exist for the shape.
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


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int,
                    q_start: int, k_start: int = 0) -> torch.Tensor:
    """Sliding-window causal attention (key visible iff 0 <= q_pos - k_pos < window)."""
    # Keys older than the window of the first query are never visible: drop them first.
    first = max(0, q_start - window + 1 - k_start)
    if first:
        k, v, k_start = k[:, :, first:], v[:, :, first:], k_start + first
    return _sdpa(q, k, v, q_start=q_start, k_start=k_start, window=window)


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_start: int,
                     k_start: int = 0) -> torch.Tensor:
    """Dense causal attention (key visible iff k_pos <= q_pos)."""
    return _sdpa(q, k, v, q_start=q_start, k_start=k_start, window=None)
