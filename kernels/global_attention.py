"""Dense causal attention forward (prefill) in Triton, against the contiguous KV cache.

The kernel is `kernels.local_attention`'s windowed forward with the window set past any position
(`NO_WINDOW`): its lower-edge loop is then empty, the interior loop runs unmasked over every key
block before the query block, and only the diagonal blocks are masked. Query blocks are launched
latest first, so the longest programs start early and the tail of the grid is short.

Layout and GQA: as kernels/reference.py. Caution: forward only; see local_attention.py.
"""

from __future__ import annotations

import torch

from kernels.local_attention import NO_WINDOW, attention_fwd
from kernels.reference import global_attention_ref


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_start: int,
                     k_start: int = 0) -> torch.Tensor:
    """Dense causal attention (key visible iff k_pos <= q_pos)."""
    return attention_fwd(q, k, v, window=NO_WINDOW, q_start=q_start, k_start=k_start)[0]


__all__ = ["global_attention", "global_attention_ref"]
