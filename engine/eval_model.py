"""Held-out bits/byte of a model file on the test crates (the model card's figures).

    python -m engine.eval_model MODEL.gguf [--contexts 1024,4096] [--max-tokens N]
                                [--corpus .cache/corpus] [--device auto] [--json]

Scores whole test-crate documents (no FIM) with a sliding context of C tokens, exactly as
the training run's final evaluation does (`engine.train.score_documents`), for any model
file, quantized or not, on the CPU or a GPU. `--max-tokens` scores a seeded sample of whole
documents (round-robin over crates) of at most that many tokens; 0 scores all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from engine.gguf_io import load_gguf
from engine.model import Transformer
from engine.train import (
    TrainConfig,
    byte_lengths,
    eval_tokens_in_memory,
    load_split,
    sample_docs,
    score_documents,
)


def evaluate(model_path: Path, corpus: Path, contexts: Sequence[int], max_tokens: int,
             device: torch.device, seed: int = 1337, threads: int = 0) -> dict:
    """Bits/byte (overall and by position bucket) at each context of `contexts`."""
    if threads:
        torch.set_num_threads(threads)
    loaded = load_gguf(model_path)
    model = Transformer(loaded.info.args)
    model.load_state_dict(loaded.state_dict)
    model.to(device).eval()
    tok = loaded.info.tokenizer
    tokens, docs = eval_tokens_in_memory(tok, load_split(corpus, "test"))
    docs = sample_docs(docs, max_tokens, seed)
    cfg = TrainConfig(device=device.type, bf16=device.type == "cuda", compile="off",
                      attention="sdpa")
    out: dict = {"model": str(model_path), "file_type": loaded.info.file_type,
                 "bytes": model_path.stat().st_size,
                 "crates": len({d["crate"] for d in docs}), "documents": len(docs),
                 "tokens": int(sum(d["tokens"] for d in docs))}
    nbytes = byte_lengths(tok)
    t0 = time.perf_counter()
    with torch.no_grad():
        for c in contexts:
            out[f"C{c}"] = score_documents(model, tokens, docs, c, nbytes, device, cfg)
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.eval_model", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--contexts", default="1024")
    ap.add_argument("--max-tokens", type=int, default=60_000)
    ap.add_argument("--corpus", type=Path, default=Path(".cache/corpus"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    dev = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        contexts = [int(x) for x in a.contexts.split(",")]
        res = evaluate(a.model, a.corpus, contexts, a.max_tokens, torch.device(dev),
                       threads=a.threads)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"{res['model']} ({res['file_type']}, {res['bytes'] / 1e6:.2f} MB): "
          f"{res['documents']} documents of {res['crates']} crates, {res['tokens']:,} tokens")
    for c in contexts:
        r = res[f"C{c}"]
        buckets = ", ".join(f"{k[4:]} {v:.4f}" for k, v in r.items() if k.startswith("bpb_"))
        print(f"  C={c}: {r['bpb']:.4f} bits/byte ({buckets})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
