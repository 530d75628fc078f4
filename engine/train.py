"""Train the hybrid model on the Rust corpus, evaluate it in bits per byte, export a GGUF file.

    python -m engine.train [PRESET] --key=value ...      # keys: TrainConfig fields
    torchrun --nproc-per-node N -m engine.train gpu ...  # DistributedDataParallel

PRESET is a name in `PRESETS` ("demo", the default; "gpu" the hybrid GPU run; "gpu-global"
the all-global comparison model; "tiny" for tests). Data come from the token files of
`engine.data.tokenize` (`tokens_dir`), or are built in memory from the corpus splits
(`corpus_dir`) or from documents passed by tests. Training reads chunks of `chunk_len + 1`
tokens in a seeded order; each optimizer step takes `batch_tokens` tokens over all ranks,
`micro_batch_tokens` per rank and micro-step, cut into rows of the current sequence length
(`seq_schedule` raises it during the run). AdamW, warm-up then cosine or warmup-stable-decay,
gradient clipping, bf16 autocast, torch.compile and FlexAttention on the GPU, periodic
validation (loss, bits/byte, bits/byte by position bucket), checkpoints in `out_dir/ckpt.pt`
(resumed automatically, also by a new invocation after `stop_minutes`), tokens/s and MFU in
the log; at the end bits/byte of whole test crates at several context lengths next to
`xz -9e`, and a GGUF export (optionally cut into parts for transfer).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import os
import random
import sys
import time
import typing
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import ModelArgs, from_name
from engine.model import Attention, Transformer
from engine.tokenizer import Tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Position buckets (tokens into the document / row) of the bits/byte breakdown.
BUCKETS = (0, 1024, 4096, 16384)


@dataclass
class TrainConfig:
    """All settings of a run; `python -m engine.train [PRESET] --key=value` overrides them.

    The defaults are the CPU demo run that produced the first embedded model (demo.gguf, now
    retired; docs/MODEL.md), moved to the repository-level documents of issue 7; the `gpu`
    preset made the shipped engine/models/hybrid-lsp.gguf.
    """

    # -- data ------------------------------------------------------------------------------
    corpus_dir: str = ".cache/corpus"  # output of `python -m engine.data.corpus all`
    tokens_dir: str = ""               # output of `python -m engine.data.tokenize`; "" = build
    #                                    the training tokens in memory from corpus_dir
    tokenizer: str = ""                # HF json; "" = <corpus_dir>/tokenizer-<vocab_size>.json
    vocab_size: int = 4096             # only used to find or train the tokenizer
    seq_len: int = 512                 # training length (the last one with a schedule)
    seq_schedule: str = ""             # "LEN:FRACTION,..." e.g. "4096:0.4,8192:0.35,16384:0.25"
    fim_rate: float = 0.5              # in-memory data: share of files turned into FIM
    spm_rate: float = 0.5              # share of FIM examples in suffix-prefix-middle order
    context_share: float = 0.0         # in-memory data: share of served-context examples
    # -- model -----------------------------------------------------------------------------
    model: str = "demo"                # a name in engine.config.CONFIGS
    model_overrides: str = ""          # ModelArgs changes, e.g. "dim=384,ffn_dim=1152,n_head=6"
    all_global: bool = False           # the comparison model: global attention + RoPE everywhere
    init_gguf: str = ""                # start from the weights of this GGUF file
    eval_only: bool = False            # no training: validation + test evaluation (+ export)
    init_std: float = 0.02
    # -- optimisation ----------------------------------------------------------------------
    batch_tokens: int = 2048           # tokens per optimizer step over all ranks
    micro_batch_tokens: int = 2048     # tokens per rank and micro-step (memory knob)
    max_steps: int = 100_000           # length of the schedule
    stop_step: int = 0                 # stop early (checkpoint kept) after this step; 0 = off
    max_minutes: float = 15.0          # training-time budget: the schedule ends at max_steps
    #                                    or after this many minutes, whichever comes first
    stop_minutes: float = 0.0          # end this invocation (checkpointed) after this much
    #                                    wall time; the next invocation resumes; 0 = off
    lr: float = 2e-3
    min_lr: float = 2e-4
    schedule: str = "cosine"           # cosine | wsd (warmup-stable-decay)
    decay_frac: float = 0.2            # wsd: final share of training spent decaying
    warmup_steps: int = 20
    weight_decay: float = 0.1          # on 2-D parameters only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0             # 0 = off
    # -- evaluation, checkpoints, logging --------------------------------------------------
    eval_interval: int = 100           # steps between validations (and at the end)
    eval_tokens: int = 16384           # validation tokens (whole val crates, no FIM)
    test_eval: bool = True             # at the end: bits/byte of whole test crates + xz
    test_contexts: str = "512"         # sliding contexts C of the test evaluation
    test_max_tokens: int = 60_000      # score a seeded sample of test crates up to this many
    #                                    tokens (every crate represented); 0 = all of them
    ckpt_interval: int = 50            # steps between checkpoints (and at the end / stop)
    log_interval: int = 5
    out_dir: str = "runs/demo"
    resume: bool = True                # continue from out_dir/ckpt.pt when it exists
    # -- export ----------------------------------------------------------------------------
    export: str = ""                   # GGUF path written at the end; "" = no export
    export_dtype: str = "q8_0"
    export_name: str = "hybrid-lsp-demo"
    export_part_mib: int = 0           # also cut the GGUF into parts of this size; 0 = no
    demo: bool = True                  # label the exported model a demo in its metadata
    # -- system ----------------------------------------------------------------------------
    seed: int = 1337
    device: str = "auto"               # auto | cpu | cuda
    threads: int = 2                   # torch CPU threads
    bf16: bool = True                  # autocast matmuls to bfloat16
    compile: str = "auto"              # auto (on CUDA) | on | off
    attention: str = "auto"            # auto (flex on CUDA, sdpa on the CPU) | flex | sdpa
    causal_sdpa: bool = False          # with flex: causal (global) layers through SDPA's
    #                                    fused kernels instead (same function, no mask)
    peak_tflops: float = 0.0           # for MFU; 0 = known GPUs' dense bf16 peak


#: Named starting points; `--key=value` overrides apply on top.
PRESETS: dict[str, dict] = {
    "demo": {},
    # The hybrid GPU run of issue 7 (docs/MODEL.md "GPU run plan"): 16 min of training on
    # one H100, so that start-up, tokenization, compilation, evaluation and export fit the
    # 30 minutes a device machine is held.
    "gpu": dict(
        model="base", vocab_size=16384, tokens_dir=".cache/tokens", seq_len=16384,
        seq_schedule="4096:0.4,8192:0.35,16384:0.25", batch_tokens=524288,
        micro_batch_tokens=65536, max_steps=100_000, max_minutes=16.0, lr=2e-3, min_lr=2e-4,
        schedule="wsd", decay_frac=0.2, warmup_steps=100, eval_interval=250,
        eval_tokens=262144, test_contexts="1024,4096,16384,65536", test_max_tokens=0,
        ckpt_interval=250, log_interval=20, out_dir="runs/gpu-hybrid",
        export="runs/gpu-hybrid/hybrid-lsp.gguf", export_name="hybrid-lsp", demo=False,
        export_part_mib=16, threads=16),
    # The comparison model: same shapes, data, budget, schedule and seed; torch only.
    "gpu-global": dict(
        model="base", vocab_size=16384, tokens_dir=".cache/tokens", seq_len=16384,
        seq_schedule="4096:0.4,8192:0.35,16384:0.25", batch_tokens=524288,
        micro_batch_tokens=65536, max_steps=100_000, max_minutes=16.0, lr=2e-3, min_lr=2e-4,
        schedule="wsd", decay_frac=0.2, warmup_steps=100, eval_interval=250,
        eval_tokens=262144, test_contexts="1024,4096,16384,65536", test_max_tokens=0,
        ckpt_interval=250, log_interval=20, out_dir="runs/gpu-global", all_global=True,
        export="", demo=False, threads=16),
    # A model of seconds for tests (the "test-tiny" shape is registered by the tests).
    "tiny": dict(seq_len=32, batch_tokens=128, micro_batch_tokens=128, max_steps=20,
                 warmup_steps=2, eval_interval=1000, eval_tokens=256, ckpt_interval=1000,
                 log_interval=1000, threads=1, device="cpu", bf16=False, max_minutes=0.0,
                 test_eval=False),
}


class ConfigOverrideError(ValueError):
    """A `--key=value` override with an unknown key or a value of the wrong type."""


def _convert(key: str, value: str, typ: type) -> object:
    if typ is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigOverrideError(f"--{key}: expected a bool (true/false), got {value!r}")
    try:
        return typ(value)
    except ValueError:
        raise ConfigOverrideError(
            f"--{key}: expected {typ.__name__}, got {value!r}") from None


def parse_overrides(argv: Sequence[str], base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig from an optional leading preset name and `--key=value` arguments."""
    argv = list(argv)
    cfg = base or TrainConfig()
    if argv and not argv[0].startswith("--"):
        name = argv.pop(0)
        if name not in PRESETS:
            raise ConfigOverrideError(f"Unknown preset {name!r}; known: {sorted(PRESETS)}")
        cfg = TrainConfig(**{**asdict(cfg), **PRESETS[name]})
    hints = typing.get_type_hints(TrainConfig)
    updates: dict[str, object] = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigOverrideError(f"Expected --key=value, got {arg!r}")
        key, value = arg[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in hints:
            raise ConfigOverrideError(f"Unknown config key {key!r}; known: {sorted(hints)}")
        updates[key] = _convert(key, value, hints[key])
    return TrainConfig(**{**asdict(cfg), **updates})


def seq_schedule(cfg: TrainConfig) -> list[tuple[int, float]]:
    """[(length, end of its phase as a fraction of training)], the last phase ending at 1."""
    if not cfg.seq_schedule:
        return [(cfg.seq_len, 1.0)]
    phases, end = [], 0.0
    for part in cfg.seq_schedule.split(","):
        length, frac = part.split(":")
        end += float(frac)
        phases.append((int(length), end))
    phases[-1] = (phases[-1][0], 1.0)
    return phases


def chunk_len(cfg: TrainConfig) -> int:
    """Tokens per data chunk: the longest sequence length of the schedule."""
    return max(n for n, _ in seq_schedule(cfg))


def seq_len_at(progress: float, cfg: TrainConfig) -> int:
    for length, end in seq_schedule(cfg):
        if progress < end:
            return length
    return seq_schedule(cfg)[-1][0]


# -- data ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Document:
    """One source file: its crate (the repository name), path in the crate, and text."""

    repo: str
    path: str
    text: str


def load_split(corpus_dir: Path, split: str) -> list[Document]:
    """Documents of one split of `engine.data.corpus` (`<crate>/<version>/<path>`)."""
    from engine.data.corpus import split_files

    docs = []
    base = corpus_dir / "filtered" / "files"
    for f in split_files(split, corpus_dir):
        crate, version, rel = f.relative_to(base).as_posix().split("/", 2)
        docs.append(Document(f"{crate}/{version}", rel, f.read_text(encoding="utf-8")))
    return docs


def repos_of(docs: Sequence[Document]):
    """Documents grouped into `engine.data.documents.Repo`s (files in dependency order)."""
    from engine.data.documents import ordered_repo

    groups: dict[str, list[tuple[str, str]]] = {}
    for d in docs:
        groups.setdefault(d.repo, []).append((d.path, d.text))
    out = []
    for key in sorted(groups):
        name, _, version = key.partition("/")
        out.append(ordered_repo(name, version, groups[key]))
    return out


def train_tokens_in_memory(tok: Tokenizer, docs: Sequence[Document], cfg: TrainConfig,
                           epochs: int = 1) -> np.ndarray:
    """Training tokens built like the tokenization stage does, in this process."""
    from engine.data.tokenize import TokenizeConfig, repo_epochs

    tcfg = TokenizeConfig(epochs=epochs, fim_rate=cfg.fim_rate, spm_rate=cfg.spm_rate,
                          context_share=cfg.context_share, budget_min=min(256, cfg.seq_len),
                          budget_max=max(256, cfg.seq_len), seed=cfg.seed)
    repos = repos_of(docs)
    per_repo = [repo_epochs(tok, r, tcfg)[0] for r in repos]
    out: list[int] = []
    for e in range(epochs):
        perm = list(range(len(repos)))
        random.Random(f"{cfg.seed}:epoch:{e}").shuffle(perm)
        for i in perm:
            out += per_repo[i][e]
    return np.asarray(out, dtype=np.int64)


def eval_tokens_in_memory(tok: Tokenizer, docs: Sequence[Document]
                          ) -> tuple[np.ndarray, list[dict]]:
    """Whole-crate evaluation documents (no FIM): tokens and per-document records."""
    from engine.data.documents import eval_document

    out: list[int] = []
    recs = []
    for r in repos_of(docs):
        ids = eval_document(tok, r)
        recs.append({"crate": r.name, "version": r.version, "start": len(out),
                     "tokens": len(ids), "bytes": r.nbytes})
        out += ids
    return np.asarray(out, dtype=np.int64), recs


def load_token_file(tokens_dir: Path, split: str) -> tuple[np.ndarray, list[dict]]:
    """A split's token file (memory-mapped) and, for val/test, its document records."""
    meta = json.loads((tokens_dir / "meta.json").read_text())
    arr = np.memmap(tokens_dir / f"{split}.bin", dtype=np.dtype(meta["dtype"]), mode="r")
    docs_path = tokens_dir / f"{split}.docs.json"
    docs = json.loads(docs_path.read_text()) if docs_path.exists() else []
    return arr, docs


class ChunkStream:
    """Chunks of `chunk + 1` tokens of a token array, in a seeded order, by global index.

    Chunk i of pass p is chunk `perm_p[i % n]` of the array (consecutive chunks overlap by
    one token), perm_p a permutation seeded by (seed, p). A training step takes a range of
    global indices, so the data position is one integer and DDP ranks take disjoint ranges.
    """

    def __init__(self, tokens: np.ndarray, chunk: int, seed: int) -> None:
        self.tokens, self.chunk, self.seed = tokens, chunk, seed
        self.n = (len(tokens) - 1) // chunk
        if self.n < 1:
            raise ValueError(f"Expected at least {chunk + 1} training tokens, got {len(tokens)}")
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, p: int) -> np.ndarray:
        if p not in self._perms:
            self._perms = {p: np.random.default_rng([self.seed, p]).permutation(self.n)}
        return self._perms[p]

    def rows(self, first: int, n_chunks: int, seq_len: int) -> torch.Tensor:
        """(n_chunks * chunk / seq_len, seq_len + 1) rows from chunks first .. first+n-1."""
        if self.chunk % seq_len:
            raise ValueError(f"seq_len {seq_len} must divide the chunk length {self.chunk}")
        out = []
        for g in range(first, first + n_chunks):
            c = int(self._perm(g // self.n)[g % self.n])
            a = np.asarray(self.tokens[c * self.chunk:(c + 1) * self.chunk + 1], dtype=np.int64)
            for j in range(0, self.chunk, seq_len):
                out.append(a[j:j + seq_len + 1])
        return torch.from_numpy(np.stack(out))


def byte_lengths(tok: Tokenizer) -> torch.Tensor:
    """UTF-8 bytes per token id, 0 for special tokens (they carry no source text)."""
    special = set(tok.special_ids.values())
    return torch.tensor([0 if i in special else len(tok.token_bytes(i))
                         for i in range(tok.vocab_size)], dtype=torch.float64)


def validation_rows(tokens: np.ndarray, seq_len: int, n_tokens: int) -> torch.Tensor:
    """(n, seq_len + 1) consecutive rows from the start of the validation tokens."""
    n = max(1, min(len(tokens) - 1, n_tokens) // seq_len)
    if n * seq_len + 1 > len(tokens):
        raise ValueError(f"Expected at least {seq_len + 1} validation tokens, got {len(tokens)}")
    a = np.asarray(tokens[:n * seq_len + 1], dtype=np.int64)
    return torch.from_numpy(np.stack([a[i * seq_len:(i + 1) * seq_len + 1] for i in range(n)]))


def bucket_of(positions: torch.Tensor) -> torch.Tensor:
    """Bucket index (0..len(BUCKETS)-1) of token positions."""
    edges = torch.tensor(BUCKETS[1:], device=positions.device)
    return torch.bucketize(positions, edges, right=True)


def bucket_names() -> list[str]:
    def k(n: int) -> str:
        return f"{n // 1024}K"
    return [f"{k(a)}-{k(b)}" for a, b in zip(BUCKETS, BUCKETS[1:], strict=False)] + \
        [f"{k(BUCKETS[-1])}+"]


# -- model, attention for training, optimisation -------------------------------------------

_FLEX = None
_MASKS: dict[tuple, object] = {}


def _flex_fn():
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def flex_block_mask(t: int, window: int | None, device: torch.device):
    """Causal (and sliding-window when `window`) block mask for length t, cached."""
    key = (t, window, str(device))
    if key not in _MASKS:
        from torch.nn.attention.flex_attention import create_block_mask

        if window is None:
            def mask(b, h, q, k):
                return q >= k
        else:
            def mask(b, h, q, k):
                return (q >= k) & (q - k < window)
        _MASKS[key] = create_block_mask(mask, None, None, t, t, device=device)
    return _MASKS[key]


class FlexTrainAttention(Attention):
    """`Attention` for training: the same projections and RoPE, FlexAttention for the
    local (window) and global (causal) masks, differentiable; no KV cache. With
    `causal_sdpa`, causal layers use SDPA's fused causal kernels (flash/cuDNN) instead."""

    causal_sdpa: bool = False

    def forward(self, x: torch.Tensor, start: int, cos: torch.Tensor, sin: torch.Tensor):
        from engine.model import apply_rope

        b, t, _ = x.shape
        hd = self.args.head_dim
        q = self.wq(x).view(b, t, -1, hd).transpose(1, 2)
        k = self.wk(x).view(b, t, -1, hd).transpose(1, 2)
        v = self.wv(x).view(b, t, -1, hd).transpose(1, 2)
        if self.rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = (z.to(torch.bfloat16) if torch.is_autocast_enabled() else z
                   for z in (q, k, v))
        if self.causal_sdpa and not self.local:
            y = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])
            return self.wo(y.to(x.dtype).transpose(1, 2).reshape(b, t, -1))
        mask = flex_block_mask(t, self.args.window if self.local else None, x.device)
        if torch.compiler.is_compiling():  # inside the compiled model: trace flex itself
            from torch.nn.attention.flex_attention import flex_attention as fn
        else:
            fn = _flex_fn()
        y = fn(q, k, v, block_mask=mask, enable_gqa=q.shape[1] != k.shape[1])
        return self.wo(y.to(x.dtype).transpose(1, 2).reshape(b, t, -1))


def resolve(cfg: TrainConfig, device: torch.device) -> tuple[str, bool]:
    """(attention implementation, whether to torch.compile) for this device."""
    attn = cfg.attention if cfg.attention != "auto" else (
        "flex" if device.type == "cuda" else "sdpa")
    comp = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
    return attn, comp


def build_model(cfg: TrainConfig, vocab_size: int, device: torch.device
                ) -> tuple[Transformer, ModelArgs]:
    """The configured model, initialised, on `device`, with the training attention."""
    args = from_name(cfg.model, vocab_size, all_global=cfg.all_global,
                     **model_overrides(cfg.model_overrides))
    torch.manual_seed(cfg.seed)
    model = Transformer(args)
    model.init_weights(seed=cfg.seed, std=cfg.init_std)
    if cfg.init_gguf:
        from engine.gguf_io import load_gguf

        loaded = load_gguf(_path(cfg.init_gguf))
        if loaded.info.args != args:
            raise ValueError(f"{cfg.init_gguf}: model {loaded.info.args} != configured {args}")
        model.load_state_dict(loaded.state_dict)
    if resolve(cfg, device)[0] == "flex":
        for blk in model.layers:
            blk.attention.__class__ = FlexTrainAttention
            blk.attention.causal_sdpa = cfg.causal_sdpa
    return model.to(device), args


def model_overrides(text: str) -> dict[str, int | float]:
    """`"dim=384,n_head=6"` -> {"dim": 384, "n_head": 6} (ints where they parse)."""
    out: dict[str, int | float] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        key, value = part.split("=", 1)
        try:
            out[key.strip()] = int(value)
        except ValueError:
            out[key.strip()] = float(value)
    return out


def flops_per_token(args: ModelArgs, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward): matmuls with the tied
    output projection, plus attention over the keys each query sees on average."""
    hd, dim = args.head_dim, args.dim
    layer = dim * (args.n_head * hd) * 2 + dim * (args.n_kv_head * hd) * 2 \
        + 3 * dim * args.ffn_dim
    dense = args.n_layer * layer + args.vocab_size * dim
    attn = 0.0
    for i in range(args.n_layer):
        w = min(args.window, seq_len) if args.is_local(i) else seq_len
        seen = w - w * w / (2 * seq_len) if args.is_local(i) else (seq_len + 1) / 2
        attn += 4 * args.n_head * hd * seen
    return 6 * dense + 3 * attn


def peak_flops(device: torch.device, cfg: TrainConfig) -> float:
    """Dense bf16 peak FLOP/s of the device (0 when unknown, e.g. the CPU)."""
    if cfg.peak_tflops > 0:
        return cfg.peak_tflops * 1e12
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    for key, tf in (("H100", 989.0), ("H200", 989.0), ("H800", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("4090", 165.0)):
        if key in name:
            return tf * 1e12
    return 0.0


def lr_at(step: int, cfg: TrainConfig, progress: float | None = None) -> float:
    """Linear warm-up over warmup_steps, then cosine to min_lr, or (wsd) constant until the
    last `decay_frac` of training and a linear decay to min_lr. `progress` (0..1) is the
    share of training done: by steps, or the max_minutes budget when that comes first."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if progress is None:
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, max(0.0, progress))
    if cfg.schedule == "wsd":
        start = 1.0 - cfg.decay_frac
        if progress <= start:
            return cfg.lr
        return cfg.lr + (progress - start) / cfg.decay_frac * (cfg.min_lr - cfg.lr)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def progress_at(step: int, cfg: TrainConfig, train_seconds: float) -> float:
    """Share of training done: steps over max_steps, or time over max_minutes if larger."""
    p = step / max(1, cfg.max_steps)
    if cfg.max_minutes > 0:
        p = max(p, train_seconds / (60 * cfg.max_minutes))
    return min(1.0, p)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D parameters (matrices, embeddings) only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def _autocast(device: torch.device, cfg: TrainConfig):
    enabled = cfg.bf16 and device.type in ("cuda", "cpu")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def token_nats(model: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """Per-target negative log-likelihood (B, T) of rows (B, T + 1)."""
    logits = model(rows[:, :-1])
    return F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten(),
                           reduction="none").view(rows.shape[0], -1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, rows: torch.Tensor, nbytes: torch.Tensor,
             cfg: TrainConfig, device: torch.device, batch_size: int = 8) -> dict[str, float]:
    """Mean loss over all targets, bits/byte over the non-special targets, and bits/byte
    by position in the row (the context each prediction had), `bpb_<bucket>`."""
    was_training = model.training
    model.eval()
    nb = nbytes.to(device)
    nats = total = 0.0
    nb_buckets = len(BUCKETS)
    b_nats = torch.zeros(nb_buckets, dtype=torch.float64, device=device)
    b_bytes = torch.zeros(nb_buckets, dtype=torch.float64, device=device)
    for i in range(0, len(rows), batch_size):
        r = rows[i:i + batch_size].to(device)
        with _autocast(device, cfg):
            nll = token_nats(model, r).double()
        b = nb[r[:, 1:]]
        nats += nll.sum().item()
        total += nll.numel()
        bucket = bucket_of(torch.arange(r.shape[1] - 1, device=device)).expand_as(nll)
        b_nats.index_add_(0, bucket.flatten(), (nll * (b > 0)).flatten())
        b_bytes.index_add_(0, bucket.flatten(), b.flatten())
    model.train(was_training)
    out = {"loss": nats / total,
           "bpb": b_nats.sum().item() / max(b_bytes.sum().item(), 1.0) / math.log(2)}
    for name, n, by in zip(bucket_names(), b_nats.tolist(), b_bytes.tolist(), strict=True):
        if by > 0:
            out[f"bpb_{name}"] = n / by / math.log(2)
    return out


@torch.no_grad()
def score_documents(model: torch.nn.Module, tokens: np.ndarray, docs: Sequence[dict],
                    ctx: int, nbytes: torch.Tensor, device: torch.device,
                    cfg: TrainConfig, batch_tokens: int = 65536,
                    pad: bool | None = None) -> dict[str, float]:
    """Bits/byte of whole documents scored with a sliding context of at most `ctx` tokens
    (stride ctx/2): -log2 p summed over the non-special tokens after the first, divided by
    their UTF-8 bytes; also by position bucket (tokens into the document). Windows of equal
    (padded, on CUDA) length run in batches of about `batch_tokens` tokens."""
    was_training = model.training
    model.eval()
    nb = nbytes.to(device)
    k = len(BUCKETS)
    b_nats = torch.zeros(k, dtype=torch.float64, device=device)
    b_bytes = torch.zeros(k, dtype=torch.float64, device=device)
    stride = max(1, ctx // 2)
    pad = device.type == "cuda" if pad is None else pad
    # (first token of the document, window start, window end, first scored position)
    groups: dict[int, list[tuple[int, int, int, int]]] = {}
    ntok = 0
    for d in docs:
        scored_to = 1  # position 0 (<|repo_name|>) has nothing to condition on
        while scored_to < d["tokens"]:
            end = min(d["tokens"], scored_to + stride)
            start = max(0, end - ctx - 1)
            length = padded_len(end - start - 1, ctx) if pad else end - start - 1
            groups.setdefault(length, []).append((d["start"], start, end, scored_to))
            scored_to = end
        ntok += d["tokens"]
    for length in sorted(groups):
        items = groups[length]
        per_batch = max(1, batch_tokens // length)
        for i in range(0, len(items), per_batch):
            batch = items[i:i + per_batch]
            rows = torch.zeros((len(batch), length + 1), dtype=torch.int64)
            for r, (base, start, end, _) in enumerate(batch):
                w = np.asarray(tokens[base + start:base + end], dtype=np.int64)
                rows[r, :len(w)] = torch.from_numpy(w)
            rows = rows.to(device)
            with _autocast(device, cfg):
                nll = token_nats(model, rows).double()
            for r, (_base, start, end, scored_to) in enumerate(batch):
                lo = scored_to - start - 1  # nll[j] predicts token start + j + 1
                n = end - scored_to
                pos = torch.arange(scored_to, end, device=device)
                b = nb[rows[r, lo + 1:lo + 1 + n]]
                bucket = bucket_of(pos)
                b_nats.index_add_(0, bucket, nll[r, lo:lo + n] * (b > 0))
                b_bytes.index_add_(0, bucket, b)
    model.train(was_training)
    total_bytes = b_bytes.sum().item()
    out = {"bpb": b_nats.sum().item() / max(total_bytes, 1.0) / math.log(2),
           "tokens": ntok, "bytes": total_bytes, "bytes_per_token": total_bytes / max(ntok, 1)}
    for name, n, by in zip(bucket_names(), b_nats.tolist(), b_bytes.tolist(), strict=True):
        if by > 0:
            out[f"bpb_{name}"] = n / by / math.log(2)
    return out


def padded_len(n: int, ctx: int) -> int:
    """The smallest power of two >= n (at least 128), capped at ctx."""
    return min(ctx, max(128, 1 << (n - 1).bit_length()))


def sample_docs(docs: Sequence[dict], max_tokens: int, seed: int) -> list[dict]:
    """A seeded sample of whole documents of at most `max_tokens` tokens, taken round-robin
    over crates so that each is represented (largest-first within a crate is not used:
    documents are whole crate versions); all of them when max_tokens is 0."""
    if max_tokens <= 0:
        return list(docs)
    by_crate: dict[str, list[dict]] = {}
    for d in sorted(docs, key=lambda d: (d["crate"], d["version"])):
        by_crate.setdefault(d["crate"], []).append(d)
    rng = random.Random(seed)
    crates = sorted(by_crate)
    rng.shuffle(crates)
    out, total = [], 0
    for c in crates:
        d = by_crate[c][-1]
        if total + d["tokens"] <= max_tokens:
            out.append(d)
            total += d["tokens"]
    return sorted(out, key=lambda d: d["start"])


def xz_bits_per_byte(tok: Tokenizer, tokens: np.ndarray, docs: Sequence[dict]) -> float:
    """`xz -9e` bits/byte of the same documents' text (special tokens dropped), one
    compressed stream per document (a whole crate)."""
    preset = 9 | lzma.PRESET_EXTREME
    raw = comp = 0
    for d in docs:
        text = tok.decode(np.asarray(tokens[d["start"]:d["start"] + d["tokens"]]).tolist(),
                          skip_special=True).encode()
        raw += len(text)
        comp += len(lzma.compress(text, preset=preset))
    return 8 * comp / max(raw, 1)


# -- distributed ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    # NVLink multicast stays off (docs/TRAINING.md), also for processes we start.
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local)


def _all_reduce(x: float, dist_info: Dist, device: torch.device, op: str = "avg") -> float:
    if dist_info.world == 1:
        return x
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64, device=device)
    if op == "max":
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.item()
    dist.all_reduce(t)
    return t.item() / dist_info.world


def _all_gather(x: float, dist_info: Dist, device: torch.device) -> list[float]:
    """`x` of every rank, in rank order (a collective: every rank must call it)."""
    if dist_info.world == 1:
        return [x]
    import torch.distributed as dist

    parts = [torch.zeros(1, dtype=torch.float64, device=device) for _ in range(dist_info.world)]
    dist.all_gather(parts, torch.tensor([x], dtype=torch.float64, device=device))
    return [p.item() for p in parts]


# -- the run -------------------------------------------------------------------------------

def pick_device(name: str, dist_info: Dist | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist_info is not None and dist_info.world > 1:
        return torch.device("cuda", dist_info.local_rank)
    return torch.device(name)


def load_tokenizer(cfg: TrainConfig) -> Tokenizer:
    """The configured tokenizer; trained on the train split (and cached) when missing."""
    if cfg.tokenizer:
        return Tokenizer.load(_path(cfg.tokenizer))
    from engine.data.corpus import train_corpus_tokenizer

    return Tokenizer.load(train_corpus_tokenizer(cfg.vocab_size, _path(cfg.corpus_dir)))


def _path(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else REPO_ROOT / path


def _log(record: dict, out_dir: Path, main: bool = True) -> None:
    if not main:
        return
    parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()]
    print(" | ".join(parts), file=sys.stderr, flush=True)
    with (out_dir / "log.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


def save_checkpoint(path: Path, **content) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(content, tmp)
    tmp.replace(path)


def split_parts(path: Path, part_mib: int) -> list[Path]:
    """Cut a file into `<name>.partNN` of at most part_mib MiB plus `<name>.sha256`
    (rejoin with `cat <name>.part* > <name>`); returns the parts."""
    size = part_mib * 2**20
    data = path.read_bytes()
    parts = []
    for i in range(0, max(1, len(data)), size):
        p = path.with_name(f"{path.name}.part{i // size:02d}")
        p.write_bytes(data[i:i + size])
        parts.append(p)
    path.with_name(path.name + ".sha256").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    return parts


def train(cfg: TrainConfig, *, tokenizer: Tokenizer | None = None,
          train_docs: Sequence[Document] | None = None,
          val_docs: Sequence[Document] | None = None,
          test_docs: Sequence[Document] | None = None) -> dict:
    """Run (or resume) training as configured; returns a summary with the per-step losses.

    Data: token files under `cfg.tokens_dir`, else documents (tests pass their own, else
    the corpus splits under `cfg.corpus_dir`) tokenized in memory.
    """
    dist_info = setup_distributed(cfg.device)
    device = pick_device(cfg.device, dist_info)
    out_dir = _path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
    t_start = time.perf_counter()
    tok = tokenizer or load_tokenizer(cfg)
    corpus = _path(cfg.corpus_dir)
    if cfg.tokens_dir:
        tdir = _path(cfg.tokens_dir)
        train_tokens, _ = load_token_file(tdir, "train")
        val_tokens, _ = load_token_file(tdir, "val")
    else:
        train_docs = train_docs if train_docs is not None else load_split(corpus, "train")
        val_docs = val_docs if val_docs is not None else load_split(corpus, "val")
        train_tokens = train_tokens_in_memory(tok, train_docs, cfg)
        val_tokens, _ = eval_tokens_in_memory(tok, val_docs)

    chunk = chunk_len(cfg)
    per_step_chunks = cfg.batch_tokens // chunk
    micro_chunks = cfg.micro_batch_tokens // chunk
    if cfg.batch_tokens % chunk or cfg.micro_batch_tokens % chunk or micro_chunks < 1:
        raise ValueError(f"batch_tokens and micro_batch_tokens must be multiples of the "
                         f"longest sequence length {chunk}")
    if per_step_chunks % (micro_chunks * dist_info.world):
        raise ValueError(f"batch_tokens ({cfg.batch_tokens}) must be a multiple of "
                         f"micro_batch_tokens x ranks ({cfg.micro_batch_tokens} x "
                         f"{dist_info.world})")
    grad_accum = per_step_chunks // (micro_chunks * dist_info.world)
    stream = ChunkStream(train_tokens, chunk, cfg.seed)

    model, args = build_model(cfg, tok.vocab_size, device)
    attn_impl, use_compile = resolve(cfg, device)
    opt = make_optimizer(model, cfg, fused=device.type == "cuda")
    nbytes = byte_lengths(tok)

    step, tokens_seen, train_seconds, finished = 0, 0, 0.0, False
    best_val = float("inf")
    ckpt_path = out_dir / "ckpt.pt"
    if cfg.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=True)
        if ModelArgs.from_dict(ck["model_args"]) != args:
            raise ValueError(f"{ckpt_path}: checkpoint model {ck['model_args']} != {args}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, tokens_seen = ck["step"], ck["tokens_seen"]
        train_seconds, best_val = ck["train_seconds"], ck["best_val"]
        finished = ck["finished"]
        _log({"resumed": str(ckpt_path), "step": step}, out_dir, dist_info.main)
    if dist_info.main:
        (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    n_params = model.num_params()
    _log({"model": cfg.model, "all_global": cfg.all_global, "params": n_params,
          "vocab": tok.vocab_size, "train_tokens": len(train_tokens), "device": str(device),
          "ranks": dist_info.world, "grad_accum": grad_accum, "attention": attn_impl,
          "compile": use_compile}, out_dir, dist_info.main)

    fwd: torch.nn.Module = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if use_compile:
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
        fwd = torch.compile(fwd)
    peak = peak_flops(device, cfg)

    def checkpoint() -> None:
        if dist_info.main:
            save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=opt.state_dict(),
                            model_args=args.to_dict(), config=asdict(cfg), step=step,
                            tokens_seen=tokens_seen, train_seconds=train_seconds,
                            best_val=best_val, finished=finished)

    def validate(seq: int) -> dict[str, float]:
        rows = validation_rows(val_tokens, seq, cfg.eval_tokens)
        return evaluate(model, rows, nbytes, cfg, device)

    losses: dict[int, float] = {}
    val: dict[str, float] = {}
    model.train()
    t_log, tok_log, flops_log = time.perf_counter(), 0, 0.0
    stopped_by_wall = False
    if cfg.eval_only:
        finished = True
    while step < cfg.max_steps and not finished:
        t0 = time.perf_counter()
        progress = _all_reduce(progress_at(step, cfg, train_seconds), dist_info, device, "max")
        seq = seq_len_at(progress, cfg)
        lr = lr_at(step, cfg, progress if cfg.max_minutes > 0 else None)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for m in range(grad_accum):
            first = step * per_step_chunks + (m * dist_info.world + dist_info.rank) * micro_chunks
            rows = stream.rows(first, micro_chunks, seq).to(device, non_blocking=True)
            if attn_impl == "flex":  # build masks outside the compiled graph
                for w in {args.window if args.is_local(i) else None
                          for i in range(args.n_layer)}:
                    flex_block_mask(seq, w, device)
            sync = nullcontext() if (dist_info.world == 1 or m == grad_accum - 1) \
                else fwd.no_sync()
            with sync, _autocast(device, cfg):
                loss = token_nats(fwd, rows).mean()
                (loss / grad_accum).backward()
            loss_sum += loss.detach() / grad_accum
        gnorm = (torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                 if cfg.grad_clip > 0 else torch.tensor(float("nan")))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        loss_val = _all_reduce(loss_sum.item(), dist_info, device)
        n_tok = cfg.batch_tokens
        tokens_seen += n_tok
        tok_log += n_tok
        flops_log += n_tok * flops_per_token(args, seq)
        train_seconds += time.perf_counter() - t0
        losses[step] = loss_val
        if step % cfg.log_interval == 0 or step == cfg.max_steps:
            now = time.perf_counter()
            rec = {"step": step, "loss": loss_val, "lr": lr, "gnorm": float(gnorm),
                   "seq_len": seq, "tok_per_s": tok_log / (now - t_log), "tokens": tokens_seen,
                   "minutes": train_seconds / 60}
            if peak:
                rec["mfu"] = flops_log / (now - t_log) / (peak * dist_info.world)
            if device.type == "cuda":
                mem = torch.cuda.max_memory_allocated(device) / 2**30
                rec["mem_gib"] = mem
                if dist_info.world > 1:  # peak memory of every rank, in rank order
                    rec["mem_gib_ranks"] = _all_gather(mem, dist_info, device)
            _log(rec, out_dir, dist_info.main)
            t_log, tok_log, flops_log = now, 0, 0.0
        progress = _all_reduce(progress_at(step, cfg, train_seconds), dist_info, device, "max")
        out_of_time = cfg.max_minutes > 0 and progress >= 1.0
        wall = _all_reduce(time.perf_counter() - t_start, dist_info, device, "max")
        stopped_by_wall = cfg.stop_minutes > 0 and wall >= 60 * cfg.stop_minutes
        stopping = bool(cfg.stop_step and step >= cfg.stop_step) or out_of_time \
            or stopped_by_wall
        if step % cfg.eval_interval == 0 or step == cfg.max_steps or stopping:
            val = validate(seq)
            best_val = min(best_val, val["loss"])
            _log({"step": step, **{f"val_{k}": v for k, v in val.items()}}, out_dir,
                 dist_info.main)
            t_log = time.perf_counter()
        finished = step >= cfg.max_steps or out_of_time
        if step % cfg.ckpt_interval == 0 or finished or stopping:
            checkpoint()
        if stopping:
            break

    summary = {"params": n_params, "steps": step, "tokens_seen": tokens_seen,
               "train_minutes": train_seconds / 60, "losses": losses, "finished": finished,
               "vocab_size": tok.vocab_size, "model_args": args.to_dict(),
               "ranks": dist_info.world}
    if stopped_by_wall and not finished:
        _log({"stopped": "stop_minutes reached; run the same command again to resume",
              "step": step}, out_dir, dist_info.main)
        return summary
    if not val:
        val = validate(seq_len_at(1.0, cfg))
    summary.update(val_loss=val["loss"], val_bpb=val["bpb"], val=val)
    if cfg.test_eval and dist_info.main:
        summary["test"] = run_test_eval(model, tok, cfg, nbytes, device, test_docs)
        _log({"step": step, "test": summary["test"]}, out_dir)
    if cfg.export and dist_info.main:
        summary["export"] = export(model, args, tok, cfg, val, summary, step, tokens_seen)
    if dist_info.main:
        (out_dir / "summary.json").write_text(
            json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=1) + "\n")
    return summary


def run_test_eval(model: Transformer, tok: Tokenizer, cfg: TrainConfig, nbytes: torch.Tensor,
                  device: torch.device, test_docs: Sequence[Document] | None = None) -> dict:
    """Bits/byte of whole test crates at each context of `test_contexts`, and xz -9e."""
    if cfg.tokens_dir:
        tokens, docs = load_token_file(_path(cfg.tokens_dir), "test")
    else:
        test_docs = test_docs if test_docs is not None else load_split(
            _path(cfg.corpus_dir), "test")
        tokens, docs = eval_tokens_in_memory(tok, test_docs)
    docs = sample_docs(docs, cfg.test_max_tokens, cfg.seed)
    out: dict = {"crates": len({d["crate"] for d in docs}), "documents": len(docs)}
    t0 = time.perf_counter()
    for c in (int(x) for x in cfg.test_contexts.split(",")):
        out[f"C{c}"] = score_documents(model, tokens, docs, c, nbytes, device, cfg)
    out["xz_crate_bpb"] = xz_bits_per_byte(tok, tokens, docs)
    out["seconds"] = time.perf_counter() - t0
    return out


def export(model: Transformer, args: ModelArgs, tok: Tokenizer, cfg: TrainConfig,
           val: dict, summary: dict, step: int, tokens_seen: int) -> dict:
    """Write the GGUF (and its parts when export_part_mib > 0)."""
    from engine.gguf_io import save_gguf

    meta = {"train_steps": str(step), "train_tokens": str(tokens_seen),
            "train_corpus": "Debian bookworm librust-*-dev (engine/data/debian_crates.txt)",
            "val_bpb": f"{val['bpb']:.4f}"}
    if "test" in summary:
        best = min((v["bpb"], k) for k, v in summary["test"].items()
                   if isinstance(v, dict) and "bpb" in v)
        meta["test_bpb"] = f"{best[0]:.4f}"
        meta["test_bpb_context"] = best[1]
    cpu_state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    path = save_gguf(_path(cfg.export), args, cpu_state, tok, dtype=cfg.export_dtype,
                     name=cfg.export_name, demo=cfg.demo, extra_metadata=meta)
    out = {"path": str(path), "bytes": path.stat().st_size}
    if cfg.export_part_mib:
        out["parts"] = [str(p) for p in split_parts(path, cfg.export_part_mib)]
    print(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__, file=sys.stderr)
        print(f"presets: {', '.join(PRESETS)}", file=sys.stderr)
        for f in fields(TrainConfig):
            print(f"  --{f.name}={f.default!r}", file=sys.stderr)
        return 0
    try:
        cfg = parse_overrides(argv)
    except ConfigOverrideError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = train(cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # torchrun turns any rank's non-zero exit into a failure of the whole job (and kills
        # the other ranks), so a stopped run exits 0 here; `finished` in out_dir/summary.json
        # (written only when the run is done) tells a stopped run from a finished one.
        end_distributed(0)
    return 0 if summary.get("finished") else 3


def end_distributed(code: int = 0) -> None:
    """Leave a torchrun rank: barrier, destroy the process group, exit without finalization.

    Gloo's worker threads can still hold work objects when the interpreter tears down, and
    destroying them then aborts the process ("terminate called without an active exception",
    SIGABRT), which torchrun reports as a failed job although every rank finished. Exiting
    with `os._exit` after flushing skips that teardown; nothing is left to write by then.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
