"""Train the hybrid model on the Rust corpus, evaluate it in bits per byte, export a GGUF file.

    python -m engine.train --key=value ...     # every key is a TrainConfig field

One run: load (or train) the tokenizer, stream packed training sequences from the train
split (FIM examples at `fim_rate`, otherwise plain documents, all in the prompt format of
`engine.prompt`), AdamW with warm-up + cosine, gradient clipping, periodic validation
(loss and bits/byte), checkpoints in `out_dir/ckpt.pt` (resumed automatically), and at the
end an optional bits/byte evaluation of whole test-split files next to `xz -9e`, and an
optional GGUF export. Follows nanoGPT's train.py (defaults in one block, typed
`--key=value` overrides, checkpoints carry the config, step and data position).
"""

from __future__ import annotations

import json
import lzma
import math
import random
import sys
import time
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.config import ModelArgs, from_name
from engine.model import Transformer
from engine.prompt import document_example, fim_training_example
from engine.tokenizer import Tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class TrainConfig:
    """All settings of a run; `python -m engine.train --key=value` overrides any of them.

    The defaults are the CPU demo run that produced engine/models/demo.gguf (docs/MODEL.md).
    """

    # -- data ------------------------------------------------------------------------------
    corpus_dir: str = ".cache/corpus"  # output of `python -m engine.data.corpus all`
    tokenizer: str = ""                # HF json; "" = <corpus_dir>/tokenizer-<vocab_size>.json
    vocab_size: int = 4096             # only used to find or train the tokenizer
    seq_len: int = 512                 # training context (tokens per sequence)
    fim_rate: float = 0.5              # share of files turned into FIM examples
    spm_rate: float = 0.5              # share of FIM examples in suffix-prefix-middle order
    fim_span_tokens: int = 0           # FIM on a random line-aligned span of about this many
    #                                    tokens (3 bytes each) of long files; 0 = seq_len
    # -- model -----------------------------------------------------------------------------
    model: str = "demo"                # a name in engine.config.CONFIGS
    init_std: float = 0.02
    # -- optimisation ----------------------------------------------------------------------
    batch_size: int = 4                # sequences per micro-batch
    grad_accum: int = 1                # micro-batches per optimizer step
    max_steps: int = 100_000           # length of the schedule
    stop_step: int = 0                 # stop early (checkpoint kept) after this step; 0 = off
    max_minutes: float = 15.0          # training-time budget: the schedule ends at max_steps
    #                                    or after this many minutes, whichever comes first
    lr: float = 2e-3
    min_lr: float = 2e-4               # cosine floor
    warmup_steps: int = 20
    weight_decay: float = 0.1          # on 2-D parameters only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0             # 0 = off
    # -- evaluation, checkpoints, logging --------------------------------------------------
    eval_interval: int = 100           # steps between validations (and at the end)
    eval_tokens: int = 16384           # validation tokens (whole val documents, no FIM)
    test_eval: bool = True             # at the end: bits/byte on whole test-split files + xz
    test_max_bytes: int = 120_000      # score a seeded sample of test files up to this many
    #                                    bytes (every crate represented); 0 = all of them
    ckpt_interval: int = 50            # steps between checkpoints (and at the end / stop)
    log_interval: int = 5
    out_dir: str = "runs/demo"
    resume: bool = True                # continue from out_dir/ckpt.pt when it exists
    # -- export ----------------------------------------------------------------------------
    export: str = ""                   # GGUF path written at the end; "" = no export
    export_dtype: str = "q8_0"
    export_name: str = "hybrid-lsp-demo"
    demo: bool = True                  # label the exported model a demo in its metadata
    # -- system ----------------------------------------------------------------------------
    seed: int = 1337
    device: str = "auto"               # auto | cpu | cuda
    threads: int = 2                   # torch CPU threads
    bf16: bool = True                  # autocast matmuls to bfloat16 (CPU: avx512_bf16/AMX)


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
    """A TrainConfig from `--key=value` arguments (dashes in keys read as underscores)."""
    cfg = base or TrainConfig()
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


# -- data ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Document:
    """One source file: its crate (the repository name), path in the crate, and text."""

    repo: str
    path: str
    text: str


def load_split(corpus_dir: Path, split: str) -> list[Document]:
    """Documents of one split of `engine.data.corpus` (`<crate>/<version>/<path>`).

    Text is read with Python's universal newlines, so CRLF files train and score as LF.
    """
    from engine.data.corpus import split_files

    docs = []
    base = corpus_dir / "filtered" / "files"
    for f in split_files(split, corpus_dir):
        crate, _version, rel = f.relative_to(base).as_posix().split("/", 2)
        docs.append(Document(crate, rel, f.read_text(encoding="utf-8")))
    return docs


def _span(text: str, max_chars: int, rng: random.Random) -> str:
    """A random run of whole lines of about `max_chars` characters (all of a short text)."""
    if len(text) <= max_chars:
        return text
    start = rng.randrange(len(text) - max_chars)
    start = text.rfind("\n", 0, start) + 1
    end = text.find("\n", start + max_chars)
    return text[start:] if end < 0 else text[start:end + 1]


def example_tokens(tok: Tokenizer, doc: Document, rng: random.Random,
                   cfg: TrainConfig) -> list[int]:
    """One training example: FIM (with probability fim_rate) or the whole document."""
    if rng.random() < cfg.fim_rate:
        span = _span(doc.text, 3 * (cfg.fim_span_tokens or cfg.seq_len), rng)
        return fim_training_example(tok, doc.path, span, rng, spm_rate=cfg.spm_rate,
                                    repo_name=doc.repo)
    return document_example(tok, doc.path, doc.text, repo_name=doc.repo)


class PackedStream:
    """Packed (seq_len + 1)-token rows from shuffled documents, deterministic and resumable.

    Epoch e visits the documents in a permutation seeded by (seed, e); document i of that
    epoch draws its FIM choices from a generator seeded by (seed, e, i). The state is the
    epoch, the position in it, and the unconsumed tokens, so a checkpoint restores it
    exactly.
    """

    def __init__(self, tok: Tokenizer, docs: Sequence[Document], cfg: TrainConfig) -> None:
        if not docs:
            raise ValueError("Expected at least one training document")
        self.tok, self.docs, self.cfg = tok, docs, cfg
        self.epoch, self.index, self.buffer = 0, 0, []
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.docs)))
        random.Random(f"{self.cfg.seed}:order:{epoch}").shuffle(order)
        return order

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index,
                "buffer": torch.tensor(self.buffer, dtype=torch.int64)}

    def load_state(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self.buffer = state["buffer"].tolist()
        self._order = self._permutation(self.epoch)

    def _fill(self, n: int) -> None:
        while len(self.buffer) < n:
            if self.index == len(self.docs):
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            doc = self.docs[self._order[self.index]]
            rng = random.Random(f"{self.cfg.seed}:doc:{self.epoch}:{self.index}")
            self.buffer += example_tokens(self.tok, doc, rng, self.cfg)
            self.index += 1

    def next_batch(self, batch_size: int) -> torch.Tensor:
        """(batch_size, seq_len + 1) token ids; consecutive rows overlap by one token."""
        t = self.cfg.seq_len
        self._fill(batch_size * t + 1)
        rows = [self.buffer[i * t:(i + 1) * t + 1] for i in range(batch_size)]
        self.buffer = self.buffer[batch_size * t:]
        return torch.tensor(rows, dtype=torch.int64)


def byte_lengths(tok: Tokenizer) -> torch.Tensor:
    """UTF-8 bytes per token id, 0 for special tokens (they carry no source text)."""
    special = set(tok.special_ids.values())
    return torch.tensor([0 if i in special else len(tok.token_bytes(i))
                         for i in range(tok.vocab_size)], dtype=torch.float64)


def validation_rows(tok: Tokenizer, docs: Sequence[Document], seq_len: int,
                    n_tokens: int) -> torch.Tensor:
    """(n, seq_len + 1) rows of whole validation documents (no FIM), packed in order."""
    ids: list[int] = []
    for d in docs:
        ids += document_example(tok, d.path, d.text, repo_name=d.repo)
        if len(ids) >= n_tokens + 1:
            break
    n = max(1, min(len(ids) - 1, n_tokens) // seq_len)
    ids = ids[:n * seq_len + 1]
    if len(ids) < seq_len + 1:
        raise ValueError(f"Expected at least {seq_len + 1} validation tokens, got {len(ids)}")
    return torch.stack([torch.tensor(ids[i * seq_len:(i + 1) * seq_len + 1]) for i in range(n)])


# -- model and optimisation ----------------------------------------------------------------

def lr_at(step: int, cfg: TrainConfig, train_seconds: float = 0.0) -> float:
    """Linear warm-up to lr over warmup_steps, then cosine to min_lr at the end of the run.

    The end is max_steps, or the max_minutes budget of training time when that comes
    first (then the schedule depends on the machine's speed and a rerun is not bitwise
    identical).
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    if cfg.max_minutes > 0:
        progress = max(progress, train_seconds / (60 * cfg.max_minutes))
    progress = min(1.0, progress)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


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


def token_nats(model: Transformer, rows: torch.Tensor) -> torch.Tensor:
    """Per-target negative log-likelihood (B, T) of rows (B, T + 1)."""
    logits = model(rows[:, :-1])
    return F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten(),
                           reduction="none").view(rows.shape[0], -1)


@torch.no_grad()
def evaluate(model: Transformer, rows: torch.Tensor, nbytes: torch.Tensor, cfg: TrainConfig,
             device: torch.device, batch_size: int = 16) -> dict[str, float]:
    """Mean loss over all targets, and bits/byte over the non-special targets."""
    model.eval()
    nats = total = bits_nats = bytes_ = 0.0
    for i in range(0, len(rows), batch_size):
        r = rows[i:i + batch_size].to(device)
        with _autocast(device, cfg):
            nll = token_nats(model, r).double()
        b = nbytes.to(device)[r[:, 1:]]
        nats += nll.sum().item()
        total += nll.numel()
        bits_nats += (nll * (b > 0)).sum().item()
        bytes_ += b.sum().item()
    model.train()
    return {"loss": nats / total, "bpb": bits_nats / max(bytes_, 1.0) / math.log(2)}


@torch.no_grad()
def score_documents(model: Transformer, tok: Tokenizer, docs: Sequence[Document], ctx: int,
                    device: torch.device, cfg: TrainConfig) -> dict[str, float]:
    """Bits/byte of whole documents: each file as `<|file_sep|>path\\n` + text, the text's
    tokens scored with a sliding context of at most `ctx` tokens (stride ctx/2), divided
    by the text's UTF-8 bytes. The header is conditioned on, never scored."""
    from engine.prompt import file_header_tokens

    model.eval()
    nats = 0.0
    nbytes = ntok = 0
    stride = max(1, ctx // 2)
    for d in docs:
        head = file_header_tokens(tok, d.path)
        body = tok.encode(d.text)
        ids = torch.tensor(head + body, dtype=torch.int64)
        first = len(head)  # index of the first scored token
        scored_to = first
        while scored_to < len(ids):
            end = min(len(ids), scored_to + stride)
            start = max(0, end - ctx - 1)
            window = ids[start:end].to(device)[None]
            with _autocast(device, cfg):
                nll = token_nats(model, window)[0].double()
            # nll[j] predicts window[j + 1], i.e. ids[start + j + 1]
            lo = scored_to - start - 1
            nats += nll[lo:].sum().item()
            scored_to = end
        nbytes += len(d.text.encode("utf-8"))
        ntok += len(body)
    model.train()
    return {"bpb": nats / nbytes / math.log(2), "tokens": ntok, "bytes": nbytes,
            "bytes_per_token": nbytes / max(ntok, 1)}


def sample_documents(docs: Sequence[Document], max_bytes: int, seed: int) -> list[Document]:
    """A seeded sample of whole documents of at most `max_bytes` bytes, taken round-robin
    over repositories so that each is represented; all of them when max_bytes is 0."""
    if max_bytes <= 0:
        return list(docs)
    by_repo: dict[str, list[Document]] = {}
    for d in sorted(docs, key=lambda d: (d.repo, d.path)):
        by_repo.setdefault(d.repo, []).append(d)
    rng = random.Random(seed)
    for v in by_repo.values():
        rng.shuffle(v)
    out, total = [], 0
    while any(by_repo.values()):
        for repo in sorted(by_repo):
            if by_repo[repo]:
                d = by_repo[repo].pop()
                n = len(d.text.encode())
                if total + n <= max_bytes:
                    out.append(d)
                    total += n
    return sorted(out, key=lambda d: (d.repo, d.path))


def xz_bits_per_byte(docs: Sequence[Document]) -> dict[str, float]:
    """`xz -9e` bits/byte of the documents, file by file and concatenated per repository."""
    preset = 9 | lzma.PRESET_EXTREME
    total = sum(len(d.text.encode()) for d in docs)
    per_file = sum(len(lzma.compress(d.text.encode(), preset=preset)) for d in docs)
    by_repo: dict[str, list[bytes]] = {}
    for d in docs:
        by_repo.setdefault(d.repo, []).append(d.text.encode())
    per_repo = sum(len(lzma.compress(b"".join(v), preset=preset)) for v in by_repo.values())
    return {"xz_file_bpb": 8 * per_file / total, "xz_crate_bpb": 8 * per_repo / total}


# -- the run -------------------------------------------------------------------------------

def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
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


def _log(record: dict, out_dir: Path) -> None:
    parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()]
    print(" | ".join(parts), file=sys.stderr, flush=True)
    with (out_dir / "log.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


def save_checkpoint(path: Path, **content) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(content, tmp)
    tmp.replace(path)


def train(cfg: TrainConfig, *, tokenizer: Tokenizer | None = None,
          train_docs: Sequence[Document] | None = None,
          val_docs: Sequence[Document] | None = None,
          test_docs: Sequence[Document] | None = None) -> dict:
    """Run (or resume) training as configured; returns a summary with the per-step losses.

    Documents default to the corpus splits under `cfg.corpus_dir`; tests pass their own.
    """
    out_dir = _path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    corpus = _path(cfg.corpus_dir)
    tok = tokenizer or load_tokenizer(cfg)
    train_docs = train_docs if train_docs is not None else load_split(corpus, "train")
    val_docs = val_docs if val_docs is not None else load_split(corpus, "val")

    args = from_name(cfg.model, tok.vocab_size)
    torch.manual_seed(cfg.seed)
    model = Transformer(args)
    model.init_weights(seed=cfg.seed, std=cfg.init_std)
    model.to(device)
    opt = make_optimizer(model, cfg, fused=device.type == "cuda")
    stream = PackedStream(tok, train_docs, cfg)
    val_rows = validation_rows(tok, val_docs, cfg.seq_len, cfg.eval_tokens)
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
        stream.load_state(ck["data"])
        step, tokens_seen = ck["step"], ck["tokens_seen"]
        train_seconds, best_val = ck["train_seconds"], ck["best_val"]
        finished = ck["finished"]
        print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)
    (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    n_params = model.num_params()
    print(f"model {cfg.model}: {n_params:,} parameters, vocab {tok.vocab_size}, "
          f"{len(train_docs)} train / {len(val_docs)} val documents, device {device}",
          file=sys.stderr)

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=opt.state_dict(),
                        model_args=args.to_dict(), config=asdict(cfg), data=stream.state(),
                        step=step, tokens_seen=tokens_seen, train_seconds=train_seconds,
                        best_val=best_val, finished=finished)

    losses: dict[int, float] = {}
    val: dict[str, float] = {}
    model.train()
    t_log, tok_log = time.perf_counter(), 0
    while step < cfg.max_steps and not finished:
        t0 = time.perf_counter()
        lr = lr_at(step, cfg, train_seconds)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = 0.0
        for _ in range(cfg.grad_accum):
            rows = stream.next_batch(cfg.batch_size).to(device)
            with _autocast(device, cfg):
                loss = token_nats(model, rows).mean()
            (loss / cfg.grad_accum).backward()
            loss_sum += loss.item() / cfg.grad_accum
        gnorm = (torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
                 if cfg.grad_clip > 0 else float("nan"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        n_tok = cfg.grad_accum * cfg.batch_size * cfg.seq_len
        tokens_seen += n_tok
        tok_log += n_tok
        train_seconds += time.perf_counter() - t0
        losses[step] = loss_sum
        if step % cfg.log_interval == 0 or step == cfg.max_steps:
            now = time.perf_counter()
            _log({"step": step, "loss": loss_sum, "lr": lr, "gnorm": gnorm,
                  "tok_per_s": tok_log / (now - t_log), "tokens": tokens_seen,
                  "minutes": train_seconds / 60}, out_dir)
            t_log, tok_log = now, 0
        out_of_time = cfg.max_minutes > 0 and train_seconds >= 60 * cfg.max_minutes
        stopping = bool(cfg.stop_step and step >= cfg.stop_step) or out_of_time
        if step % cfg.eval_interval == 0 or step == cfg.max_steps or stopping:
            val = evaluate(model, val_rows, nbytes, cfg, device)
            best_val = min(best_val, val["loss"])
            _log({"step": step, "val_loss": val["loss"], "val_bpb": val["bpb"]}, out_dir)
            t_log = time.perf_counter()
        finished = step >= cfg.max_steps or out_of_time
        if step % cfg.ckpt_interval == 0 or finished or stopping:
            checkpoint()
        if stopping:
            break

    summary = {"params": n_params, "steps": step, "tokens_seen": tokens_seen,
               "train_minutes": train_seconds / 60, "losses": losses,
               "vocab_size": tok.vocab_size, "model_args": args.to_dict()}
    if not val:
        val = evaluate(model, val_rows, nbytes, cfg, device)
    summary.update(val_loss=val["loss"], val_bpb=val["bpb"])
    if cfg.test_eval:
        test_docs = test_docs if test_docs is not None else load_split(corpus, "test")
        test_docs = sample_documents(test_docs, cfg.test_max_bytes, cfg.seed)
        t0 = time.perf_counter()
        summary["test"] = score_documents(model, tok, test_docs, cfg.seq_len, device, cfg)
        summary["test"].update(xz_bits_per_byte(test_docs), files=len(test_docs),
                               crates=len({d.repo for d in test_docs}),
                               seconds=time.perf_counter() - t0)
        _log({"step": step, **{f"test_{k}": v for k, v in summary["test"].items()}}, out_dir)
    if cfg.export:
        from engine.gguf_io import save_gguf

        meta = {"train_steps": str(step), "train_tokens": str(tokens_seen),
                "train_corpus": "Debian bookworm librust-*-dev (engine/data/debian_crates.txt)",
                "val_bpb": f"{val['bpb']:.4f}"}
        if "test" in summary:
            meta["test_bpb"] = f"{summary['test']['bpb']:.4f}"
        cpu_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        path = save_gguf(_path(cfg.export), args, cpu_state, tok, dtype=cfg.export_dtype,
                         name=cfg.export_name, demo=cfg.demo, extra_metadata=meta)
        summary["export"] = {"path": str(path), "bytes": path.stat().st_size}
        print(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    (out_dir / "summary.json").write_text(
        json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=1) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__, file=sys.stderr)
        for f in fields(TrainConfig):
            print(f"  --{f.name}={f.default!r}", file=sys.stderr)
        return 0
    try:
        cfg = parse_overrides(argv)
    except ConfigOverrideError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
