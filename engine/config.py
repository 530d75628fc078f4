"""Model configuration: what the `cohere2` architecture can express, and nothing more.

The same dataclass describes the shipped hybrid model (sliding-window RoPE layers plus
NoPE global layers) and the torch-only comparison model (`all_global=True`: global
attention with RoPE in every layer), so both are built by one code path.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", float(x)))[0]


class ConfigError(ValueError):
    """A configuration the model or the GGUF architecture cannot express."""


@dataclass(frozen=True, kw_only=True)
class ModelArgs:
    """Shape and numerics of a hybrid local/global decoder.

    Layer `i` is global iff `i % global_every == global_every - 1` (llama.cpp's
    `set_swa_pattern`), so the last layer of each group is global. Local layers see
    keys with `0 <= q_pos - k_pos < window` and apply interleaved (GPT-J) RoPE; global
    layers see every earlier key and use no positional encoding.
    """

    vocab_size: int
    dim: int = 256
    n_layer: int = 8
    n_head: int = 4
    n_kv_head: int = 2
    ffn_dim: int = 768
    window: int = 256
    global_every: int = 4
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    logit_scale: float = 1.0
    context_length: int = 65536
    all_global: bool = False

    def __post_init__(self) -> None:
        # The model file stores these as float32; holding the rounded values makes a
        # config equal to its round trip and makes torch use exactly what llama.cpp uses.
        for name in ("rope_base", "norm_eps", "logit_scale"):
            object.__setattr__(self, name, _f32(getattr(self, name)))
        problems = []
        if self.vocab_size <= 0:
            problems.append(f"vocab_size must be > 0, got {self.vocab_size}")
        if self.n_head <= 0 or self.dim % self.n_head:
            problems.append(f"dim ({self.dim}) must be a multiple of n_head ({self.n_head})")
        if self.n_kv_head <= 0 or self.n_head % max(self.n_kv_head, 1):
            problems.append(f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head})")
        elif (self.dim // self.n_head) % 2:
            problems.append(f"head_dim ({self.dim // self.n_head}) must be even for RoPE")
        if self.window <= 0:
            problems.append(f"window must be > 0, got {self.window}")
        if self.global_every < 1:
            problems.append(f"global_every must be >= 1, got {self.global_every}")
        if self.n_layer <= 0 or self.ffn_dim <= 0 or self.context_length <= 0:
            problems.append("n_layer, ffn_dim and context_length must be > 0")
        if self.norm_eps <= 0:
            problems.append(f"norm_eps must be > 0, got {self.norm_eps}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    def is_local(self, layer: int) -> bool:
        """True when `layer` uses sliding-window attention with RoPE."""
        if self.all_global:
            return False
        p = self.global_every
        return layer % p < p - 1

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        return tuple("local" if self.is_local(i) else "global" for i in range(self.n_layer))

    def gguf_problems(self) -> list[str]:
        """Reasons llama.cpp's `cohere2` cannot run this configuration (empty if it can)."""
        problems = []
        if self.all_global:
            problems.append("all_global models have RoPE in global layers; "
                            "cohere2 cannot express it")
        elif self.global_every == 1:
            problems.append("global_every=1 makes every layer global; llama.cpp aborts on it")
        if self.n_layer % self.global_every and not self.all_global:
            # llama.cpp makes trailing layers of an incomplete group local, as we do;
            # still refuse it: the model would end without a global layer.
            problems.append(
                f"n_layer ({self.n_layer}) must be a multiple of global_every ({self.global_every})"
            )
        return problems

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelArgs:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def num_params(self) -> int:
        """Parameter count with tied embeddings."""
        hd = self.head_dim
        attn = self.dim * (self.n_head * hd) * 2 + self.dim * (self.n_kv_head * hd) * 2
        ffn = 3 * self.dim * self.ffn_dim
        return self.vocab_size * self.dim + self.n_layer * (attn + ffn + self.dim) + self.dim


#: Named configurations (gpt-fast's `from_name` idea); sizes are params with tied embeddings.
CONFIGS: dict[str, dict] = {
    # The CPU-trained demo model shipped as package data (about 3M parameters).
    "demo": dict(dim=192, n_layer=6, n_head=6, n_kv_head=2, ffn_dim=512, window=128,
                 global_every=3, context_length=65536),
    # The GPU model of the training issue (about 45M parameters with a 16K vocabulary).
    "base": dict(dim=512, n_layer=12, n_head=8, n_kv_head=2, ffn_dim=1536, window=1024,
                 global_every=4, context_length=65536),
}


def from_name(name: str, vocab_size: int, **overrides) -> ModelArgs:
    """Build a named configuration; unknown names raise ConfigError."""
    if name not in CONFIGS:
        raise ConfigError(f"Expected one of {sorted(CONFIGS)}, got {name!r}")
    return ModelArgs(vocab_size=vocab_size, **{**CONFIGS[name], **overrides})
