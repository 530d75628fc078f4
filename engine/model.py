"""The hybrid local/global decoder, written to compute exactly what llama.cpp's `cohere2` does.

Follows gpt-fast's model.py layout. Per block (parallel attention + FFN, one norm):

    x = LayerNorm(h)            # no bias, biased variance
    h = h + Attention(x) + SwiGLU(x)

Local layers: sliding-window attention, interleaved (GPT-J / ggml "NORM") RoPE on q and k.
Global layers: dense causal attention, no positional encoding (NoPE).
Output: logits = LayerNorm(h) @ tok_embeddings.T * logit_scale (tied embeddings).
With `ModelArgs.all_global` the same code builds the comparison model: global attention
with RoPE in every layer (torch only).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.attention import global_attention, local_attention
from engine.config import ModelArgs


def rope_tables(n_pos: int, rot_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (n_pos, rot_dim/2), built the way ggml's CPU RoPE builds them.

    ggml starts from theta = float(p) and multiplies by powf(base, -2/rot_dim) once per
    pair, in float32; reproducing that order keeps the tables within float32 rounding of
    llama.cpp's at positions near 64K, where a different formula drifts by ~1e-3 rad.
    """
    scale = np.float32(base) ** np.float32(-2.0 / rot_dim)
    theta = np.arange(n_pos, dtype=np.float32)
    out = np.empty((n_pos, rot_dim // 2), dtype=np.float32)
    for i in range(rot_dim // 2):
        out[:, i] = theta
        theta = theta * scale
    t = torch.from_numpy(out)
    return torch.cos(t), torch.sin(t)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x[2i], x[2i+1]) of x (B, H, T, D) by the angles (T, D/2)."""
    xf = x.float().unflatten(-1, (-1, 2))  # (B, H, T, D/2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


class KVCache(nn.Module):
    """Contiguous per-layer cache: k, v of shape (B, Hkv, max_seq, D), position = index."""

    def __init__(self, batch: int, n_kv_head: int, max_seq: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str | None = None):
        super().__init__()
        shape = (batch, n_kv_head, max_seq, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor):
        # k, v: (B, Hkv, T, D) for positions start .. start+T-1
        end = start + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} positions, asked for {end}")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__()
        self.args = args
        self.local = args.is_local(layer)
        self.rope = self.local or args.all_global
        hd = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_head * hd, bias=False)
        self.wk = nn.Linear(args.dim, args.n_kv_head * hd, bias=False)
        self.wv = nn.Linear(args.dim, args.n_kv_head * hd, bias=False)
        self.wo = nn.Linear(args.n_head * hd, args.dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, start: int, cos: torch.Tensor, sin: torch.Tensor):
        b, t, _ = x.shape
        hd = self.args.head_dim
        q = self.wq(x).view(b, t, -1, hd).transpose(1, 2)  # (B, Hq, T, D)
        k = self.wk(x).view(b, t, -1, hd).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.wv(x).view(b, t, -1, hd).transpose(1, 2)
        if self.rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k_start = start  # without a cache, this chunk's keys are the only ones
        if self.kv_cache is not None:
            k, v = self.kv_cache.update(start, k, v)
            k_start = 0
        if self.local:
            y = local_attention(q, k, v, window=self.args.window, q_start=start, k_start=k_start)
        else:
            y = global_attention(q, k, v, q_start=start, k_start=k_start)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate x) * up x)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.up = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.down = nn.Linear(args.ffn_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(args.dim, eps=args.norm_eps, bias=False)
        self.attention = Attention(args, layer)
        self.feed_forward = FeedForward(args)

    def forward(self, h, start, cos, sin):
        x = self.attn_norm(h)
        return h + self.attention(x, start, cos, sin) + self.feed_forward(x)


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args, i) for i in range(args.n_layer))
        self.norm = nn.LayerNorm(args.dim, eps=args.norm_eps, bias=False)
        # RoPE tables grow on demand; plain attributes (not buffers) so a model built on
        # `meta` and loaded with assign=True needs no fix-up.
        self._rope_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.max_seq = 0

    # -- set-up -------------------------------------------------------------------------
    def init_weights(self, seed: int | None = None, std: float = 0.02) -> None:
        """nanoGPT initialisation; residual output projections scaled by 1/sqrt(2 n_layer)."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
                continue
            residual = name.endswith(("wo.weight", "down.weight"))
            s = std / math.sqrt(2 * self.args.n_layer) if residual else std
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * s)

    def setup_caches(self, max_batch: int, max_seq: int, dtype: torch.dtype | None = None) -> None:
        """Allocate the KV caches (idempotent for the same or a smaller size)."""
        if max_seq <= self.max_seq and self.layers[0].attention.kv_cache is not None \
                and self.layers[0].attention.kv_cache.k.shape[0] >= max_batch:
            return
        dtype = dtype or self.tok_embeddings.weight.dtype
        dev = self.tok_embeddings.weight.device
        a = self.args
        for blk in self.layers:
            blk.attention.kv_cache = KVCache(max_batch, a.n_kv_head, max_seq, a.head_dim,
                                             dtype, dev)
        self.max_seq = max_seq

    def drop_caches(self) -> None:
        for blk in self.layers:
            blk.attention.kv_cache = None
        self.max_seq = 0

    def _rope(self, start: int, t: int):
        end = start + t
        dev = self.tok_embeddings.weight.device
        cache = self._rope_cache
        if cache is None or cache[0].shape[0] < end or cache[0].device != dev:
            have = 0 if cache is None else cache[0].shape[0]
            n = max(end, min(2 * max(have, 1024), self.args.context_length))
            cos, sin = rope_tables(n, self.args.head_dim, self.args.rope_base)
            cache = self._rope_cache = (cos.to(dev), sin.to(dev))
        return cache[0][start:end], cache[1][start:end]

    # -- forward ------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor, start: int = 0, *,
                last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, vocab) for tokens idx (B, T) at positions start .. start+T-1.

        With last_only=True only the last position's logits are computed, (B, 1, vocab):
        prefill needs no others, and the output projection is a large share of its cost.

        With caches set up, keys and values are appended at `start` and earlier cached
        positions are visible; without caches, the chunk attends only to itself (its
        first token sits at position `start`, which tests use to probe RoPE far out).
        """
        b, t = idx.shape
        if start + t > self.args.context_length:
            raise ValueError(f"Cannot forward to position {start + t}: context_length is "
                             f"{self.args.context_length}")
        cos, sin = self._rope(start, t)
        h = self.tok_embeddings(idx)
        for blk in self.layers:
            h = blk(h, start, cos, sin)
        if last_only:
            h = h[:, -1:]
        h = self.norm(h)
        return F.linear(h, self.tok_embeddings.weight) * self.args.logit_scale

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
