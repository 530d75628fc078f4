"""Worker of test_train_ddp.py: a few tiny training steps, alone or under torchrun.

    python ddp_train_helper.py TOKENIZER OUT_JSON MICRO_BATCH_TOKENS RUN_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine import config as engine_config  # noqa: E402
from engine.tokenizer import Tokenizer  # noqa: E402
from engine.train import Document, end_distributed, parse_overrides, train  # noqa: E402


def docs(n: int, seed: int) -> list[Document]:
    out = []
    for i in range(n):
        a, b = f"v{(i * 7 + seed) % 13}", f"w{(i * 5 + seed) % 11}"
        out.append(Document(f"crate{i % 3}", f"src/m{i}.rs",
                            f"pub fn {a}_{i}({a}: u32, {b}: u32) -> u32 {{\n    {a} + {b}\n}}\n"
                            f"pub struct S{i} {{\n    {a}: u64,\n}}\n"))
    return out


def main() -> int:
    tok_path, out_json, micro, run_dir = sys.argv[1:5]
    engine_config.CONFIGS["test-tiny"] = dict(dim=32, n_layer=2, n_head=2, n_kv_head=1,
                                              ffn_dim=64, window=8, global_every=2)
    cfg = parse_overrides(["tiny", "--model=test-tiny", "--max_steps=4", "--lr=1e-2",
                           f"--micro_batch_tokens={micro}", "--batch_tokens=128",
                           f"--out_dir={run_dir}", "--resume=false", "--eval_interval=4"])
    summary = train(cfg, tokenizer=Tokenizer.load(tok_path), train_docs=docs(40, 1),
                    val_docs=docs(6, 2))
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out_json).write_text(json.dumps({"losses": summary["losses"],
                                              "val_loss": summary["val_loss"],
                                              "ranks": summary["ranks"]}))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        end_distributed(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
