"""Tokenization stage: training and evaluation token files from the filtered corpus, on many cores.

    python -m engine.data.tokenize --tokenizer T.json --out DIR [--epochs 8] [--workers 16]

Reads the filtered corpus of `engine.data.corpus` (manifest with each file's split), groups
files into repositories (one per crate version, files in dependency order) and writes:

- `train.bin`: `epochs` passes over the training repositories, each pass in its own seeded
  order with its own FIM and cursor draws (`engine.data.documents`): whole-crate documents
  plus served-context examples making up about `context_share` of the tokens;
- `val.bin`, `test.bin`: whole-crate documents without FIM, with `<split>.docs.json`
  (crate name, version, first token, token count per document);
- `meta.json`: dtype, vocabulary, tokens per epoch and by kind, settings, seconds.

Token ids are stored as little-endian uint16 (uint32 when the vocabulary needs it).
Repositories are tokenized by a `multiprocessing` pool, largest first, one task per
repository (all epochs together, so the in-memory index is built once).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from engine.data.documents import (
    ExampleTimeout,
    Repo,
    crate_document,
    eval_document,
    ordered_repo,
    time_limit,
)
from engine.tokenizer import Tokenizer


@dataclass(frozen=True)
class TokenizeConfig:
    """Settings of the tokenization stage (stored in meta.json)."""

    epochs: int = 8
    fim_rate: float = 0.5
    spm_rate: float = 0.5
    context_share: float = 0.3     # share of training tokens from served-context examples
    budget_min: int = 1024         # served-context budget range (tokens)
    budget_max: int = 8192
    max_context_examples: int = 64  # per repository and epoch
    context_file_budget: int = 4000  # and at most this / number of files (an example's
    #                                  cost grows with the repository's size)
    example_seconds: float = 5.0   # a slower example ends the repository's served-context
    #                                examples (the indexer's resolver can blow up on some
    #                                glob re-export graphs); counted as context_timeouts
    seed: int = 1337


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def group_repos(corpus_dir: Path, split: str) -> list[tuple[str, str, list[str]]]:
    """(crate, version, file paths relative to filtered/files) per repository of a split."""
    from engine.data.corpus import read_manifest, split_of

    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in read_manifest(corpus_dir):
        if (r.split or split_of(r.crate)) == split:
            groups[(r.crate, r.version)].append(r.path)
    return [(c, v, sorted(ps)) for (c, v), ps in sorted(groups.items())]


_TOK: Tokenizer | None = None
_CONTEXT_FACTORY: ContextFactory | None = None


def _init_worker(tokenizer_path: str, context_factory: ContextFactory | None = None) -> None:
    """Per-process state of a tokenize worker (the factory travels by reference)."""
    global _TOK, _CONTEXT_FACTORY
    _TOK = Tokenizer.load(tokenizer_path)
    _CONTEXT_FACTORY = context_factory


def _load(base: str, crate: str, version: str, paths: Sequence[str]):
    files = []
    for p in paths:
        rel = p.split("/", 2)[2]
        files.append((rel, (Path(base) / p).read_text(encoding="utf-8")))
    return ordered_repo(crate, version, files)


#: Builds the served-context example maker of one repository: `factory(tok, repo)` returns
#: an object with `example(rng, budget, *, spm_rate) -> list[int]`. `engine` does not import
#: `indexer`; the caller passes `hybrid_lsp.train_data.RepoContext` (the server's assembler).
ContextFactory = Callable[[Tokenizer, Repo], Any]


def repo_epochs(tok: Tokenizer, repo: Repo, cfg: TokenizeConfig,
                context_factory: ContextFactory | None = None
                ) -> tuple[list[list[int]], dict[str, int]]:
    """Training token ids of one repository for each epoch, and counts by kind.

    Without `context_factory` no served-context examples are made (whole crates only).
    """
    out: list[list[int]] = []
    counts = {"crate_tokens": 0, "context_tokens": 0, "context_examples": 0,
              "context_timeouts": 0}
    ctx = None
    gave_up = context_factory is None
    for epoch in range(cfg.epochs):
        rng = random.Random(f"{cfg.seed}:{repo.name}:{repo.version}:{epoch}")
        ids = crate_document(tok, repo, rng, fim_rate=cfg.fim_rate, spm_rate=cfg.spm_rate)
        counts["crate_tokens"] += len(ids)
        share = cfg.context_share
        want = share / max(1e-9, 1 - share) * len(ids) / ((cfg.budget_min + cfg.budget_max) / 2)
        cap = min(cfg.max_context_examples, max(1, cfg.context_file_budget // len(repo.files)))
        n_ctx = min(cap, int(want) + (rng.random() < want - int(want)))
        if n_ctx and not gave_up:
            try:
                ctx = ctx or context_factory(tok, repo)
                for _ in range(n_ctx):
                    budget = rng.randint(cfg.budget_min, cfg.budget_max)
                    with time_limit(cfg.example_seconds):
                        ex = ctx.example(rng, budget, spm_rate=cfg.spm_rate)
                    ids += ex
                    counts["context_tokens"] += len(ex)
                    counts["context_examples"] += 1
            except ExampleTimeout:
                gave_up = True
                counts["context_timeouts"] += 1
                print(f"tokenize: served context of {repo.name} {repo.version} took over "
                      f"{cfg.example_seconds} s; no more for this crate", file=sys.stderr)
            except Exception as e:  # one odd crate must not stop the stage
                print(f"tokenize: context examples of {repo.name} {repo.version} failed: "
                      f"{e!r}", file=sys.stderr)
        out.append(ids)
    return out, counts


def train_task(args: tuple) -> tuple[int, list[np.ndarray], dict[str, int]]:
    """All epochs of one training repository: (task id, token array per epoch, counts)."""
    task_id, base, crate, version, paths, cfg_dict, vocab = args
    assert _TOK is not None
    repo = _load(base, crate, version, paths)
    per_epoch, counts = repo_epochs(_TOK, repo, TokenizeConfig(**cfg_dict), _CONTEXT_FACTORY)
    dt = dtype_for(vocab)
    return task_id, [np.asarray(ids, dtype=dt) for ids in per_epoch], counts


def eval_task(args: tuple) -> tuple[int, np.ndarray]:
    task_id, base, crate, version, paths, vocab = args
    assert _TOK is not None
    repo = _load(base, crate, version, paths)
    return task_id, np.asarray(eval_document(_TOK, repo), dtype=dtype_for(vocab))


def _pool_map(fn, tasks: list[tuple], workers: int, tokenizer: Path, desc: str,
              context_factory: ContextFactory | None = None) -> list:
    results = []
    if workers <= 1:
        _init_worker(str(tokenizer), context_factory)
        for t in tqdm(tasks, desc=desc, unit="repo", file=sys.stderr):
            results.append(fn(t))
        return results
    with Pool(workers, initializer=_init_worker,
              initargs=(str(tokenizer), context_factory)) as pool:
        for r in tqdm(pool.imap_unordered(fn, tasks), total=len(tasks), desc=desc,
                      unit="repo", file=sys.stderr):
            results.append(r)
    return results


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tokenize_corpus(corpus_dir: Path, tokenizer: Path, out: Path, cfg: TokenizeConfig,
                    workers: int = 0, splits: Sequence[str] = ("train", "val", "test"),
                    force: bool = False, context_factory: ContextFactory | None = None) -> dict:
    """Write the token files of `splits` under `out`; returns meta.json's content.

    `context_factory` makes the served-context examples (see `ContextFactory`); without
    it the training split holds whole-crate documents only, and a warning says so.
    """
    if context_factory is None and cfg.context_share > 0:
        print("tokenize: no context factory: whole crates only (run "
              "`python -m hybrid_lsp.train_data` for served-context examples)", file=sys.stderr)
    workers = workers or os.cpu_count() or 1
    meta_path = out / "meta.json"
    tok_sha = sha256_of(tokenizer)
    if meta_path.exists() and not force:
        meta = json.loads(meta_path.read_text())
        if meta.get("tokenizer_sha256") == tok_sha and meta.get("config") == asdict(cfg) \
                and all(s in meta.get("splits", {}) for s in splits):
            print(f"tokenize: {out} is up to date (--force to redo)", file=sys.stderr)
            return meta
    out.mkdir(parents=True, exist_ok=True)
    vocab = Tokenizer.load(tokenizer).vocab_size
    dt = dtype_for(vocab)
    base = str(corpus_dir / "filtered" / "files")
    t0 = time.perf_counter()
    meta: dict = {"tokenizer": str(tokenizer), "tokenizer_sha256": tok_sha, "vocab_size": vocab,
                  "dtype": dt.str, "config": asdict(cfg), "workers": workers, "splits": {}}
    for split in splits:
        repos = group_repos(corpus_dir, split)
        # Largest first, so that the long tasks do not end up last on one core.
        sizes = [sum((Path(base) / p).stat().st_size for p in ps) for _, _, ps in repos]
        order = sorted(range(len(repos)), key=lambda i: -sizes[i])
        t1 = time.perf_counter()
        if split == "train":
            tasks = [(i, base, *repos[i], asdict(cfg), vocab) for i in order]
            res = _pool_map(train_task, tasks, workers, tokenizer, f"tokenize {split}",
                            context_factory)
            per_repo = {i: arrs for i, arrs, _ in res}
            counts: dict[str, int] = defaultdict(int)
            for _, _, c in res:
                for k, v in c.items():
                    counts[k] += v
            per_epoch = []
            with (out / "train.bin").open("wb") as f:
                for e in range(cfg.epochs):
                    perm = list(range(len(repos)))
                    random.Random(f"{cfg.seed}:epoch:{e}").shuffle(perm)
                    n = 0
                    for i in perm:
                        a = per_repo[i][e]
                        f.write(a.tobytes())
                        n += len(a)
                    per_epoch.append(n)
            meta["splits"][split] = {"repos": len(repos), "tokens_per_epoch": per_epoch,
                                     "tokens": sum(per_epoch), **counts,
                                     "bytes": sum(sizes),
                                     "seconds": round(time.perf_counter() - t1, 1)}
        else:
            tasks = [(i, base, *repos[i], vocab) for i in order]
            res = dict(_pool_map(eval_task, tasks, workers, tokenizer, f"tokenize {split}"))
            docs, start = [], 0
            with (out / f"{split}.bin").open("wb") as f:
                for i, (crate, version, _) in enumerate(repos):
                    a = res[i]
                    f.write(a.tobytes())
                    docs.append({"crate": crate, "version": version, "start": start,
                                 "tokens": len(a), "bytes": sizes[i]})
                    start += len(a)
            (out / f"{split}.docs.json").write_text(json.dumps(docs, indent=0) + "\n")
            meta["splits"][split] = {"repos": len(repos), "tokens": start, "bytes": sum(sizes),
                                     "seconds": round(time.perf_counter() - t1, 1)}
        print(f"tokenize: {split}: {meta['splits'][split]}", file=sys.stderr)
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv: Sequence[str] | None = None, *,
         context_factory: ContextFactory | None = None) -> int:
    """The stage's command line; `hybrid_lsp.train_data` calls it with the indexer's factory."""
    from engine.data.corpus import CACHE_DIR

    ap = argparse.ArgumentParser(prog="python -m engine.data.tokenize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=CACHE_DIR)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    ap.add_argument("--splits", default="train,val,test")
    ap.add_argument("--force", action="store_true")
    defaults = TokenizeConfig()
    for k, v in asdict(defaults).items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    a = ap.parse_args(argv)
    cfg = TokenizeConfig(**{k: getattr(a, k) for k in asdict(defaults)})
    tokenize_corpus(a.corpus, a.tokenizer, a.out, cfg, a.workers, a.splits.split(","), a.force,
                    context_factory=context_factory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
