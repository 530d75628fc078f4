"""Pure-torch float32 references for the model's attention kinds (local and global).

These are the ground truth the Triton kernels are tested against and the exact CPU path
of the model. Layout (the model's KV-cache layout, see docs/ARCHITECTURE.md):

    q: (B, Hq, Tq, D)    query i sits at absolute position q_start + i
    k, v: (B, Hkv, Tk, D) key j sits at absolute position k_start + j

Grouped-query attention maps query head h to KV head h // (Hq // Hkv) (llama.cpp's
broadcast, torch's repeat_interleave). A key is visible when k_pos <= q_pos and, for
local attention, q_pos - k_pos < window. Scale is 1/sqrt(D).
"""

from __future__ import annotations

import math

import torch


def attention_mask(
    tq: int, tk: int, *, q_start: int, k_start: int = 0, window: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean (Tq, Tk) mask, True where a query may attend to a key."""
    q_pos = torch.arange(q_start, q_start + tq, device=device)[:, None]
    k_pos = torch.arange(k_start, k_start + tk, device=device)[None, :]
    delta = q_pos - k_pos
    mask = delta >= 0
    if window is not None:
        mask &= delta < window
    return mask


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError(f"Expected q (B,Hq,T,D), k=v (B,Hkv,S,D), got {q.shape}, {k.shape}, "
                         f"{v.shape}")
    if q.shape[1] % k.shape[1] or q.shape[-1] != k.shape[-1] or q.shape[0] != k.shape[0]:
        raise ValueError(f"Incompatible q {tuple(q.shape)} and k {tuple(k.shape)}")


def attention_ref(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_start: int, k_start: int = 0,
    window: int | None = None, upcast: bool = True,
) -> torch.Tensor:
    """Masked softmax attention in float32 (or the input dtype when upcast=False)."""
    _check(q, k, v)
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # (B, Hq, S, D)
    v = v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, Hq, T, S)
    mask = attention_mask(q.shape[2], k.shape[2], q_start=q_start, k_start=k_start,
                          window=window, device=q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return out.to(dtype)


def local_attention_ref(q, k, v, *, window: int, q_start: int, k_start: int = 0,
                        upcast: bool = True) -> torch.Tensor:
    """Sliding-window causal attention: key visible iff 0 <= q_pos - k_pos < window."""
    return attention_ref(q, k, v, q_start=q_start, k_start=k_start, window=window, upcast=upcast)


def global_attention_ref(q, k, v, *, q_start: int, k_start: int = 0,
                         upcast: bool = True) -> torch.Tensor:
    """Dense causal attention: key visible iff k_pos <= q_pos."""
    return attention_ref(q, k, v, q_start=q_start, k_start=k_start, window=None, upcast=upcast)
