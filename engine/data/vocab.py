"""Bytes per token of BPE vocabularies of several sizes: how docs/MODEL.md picked 16,384.

    python -m engine.data.vocab 4096 8192 16384 32768 [--sample 4] [--dim 512]

Trains the project's tokenizer (`engine.tokenizer.train_tokenizer`) on every `sample`-th
file of the train split for each size, and prints bytes per token on the validation and
test splits next to the embedding's parameter count at width `dim`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def measure(sizes: Sequence[int], cache: Path, sample: int = 4, dim: int = 512) -> dict:
    """{vocab: {train_seconds, val_bytes_per_token, test_bytes_per_token, embedding_params}}."""
    from engine.data.corpus import split_files
    from engine.tokenizer import train_tokenizer

    train = split_files("train", cache)[::sample]
    texts = {s: [f.read_text() for f in split_files(s, cache)] for s in ("val", "test")}
    out: dict[int, dict] = {}
    for v in sizes:
        t0 = time.perf_counter()
        tok = train_tokenizer(train, v)
        row: dict[str, float] = {"train_seconds": round(time.perf_counter() - t0, 1)}
        for split, tx in texts.items():
            nbytes = sum(len(t.encode()) for t in tx)
            ntok = sum(len(ids) for ids in tok.encode_batch(tx))
            row[f"{split}_bytes_per_token"] = round(nbytes / ntok, 3)
        row["embedding_params"] = tok.vocab_size * dim
        out[v] = row
        print(v, row, file=sys.stderr, flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from engine.data.corpus import CACHE_DIR

    ap = argparse.ArgumentParser(prog="python -m engine.data.vocab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", nargs="+", type=int)
    ap.add_argument("--cache", type=Path, default=CACHE_DIR)
    ap.add_argument("--sample", type=int, default=4, help="use every n-th train file")
    ap.add_argument("--dim", type=int, default=512)
    a = ap.parse_args(argv)
    print(json.dumps(measure(a.sizes, a.cache, a.sample, a.dim), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
