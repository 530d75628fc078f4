"""Re-encode a model file with another tensor type (what the shipped model was made with).

    python -m engine.requantize IN.gguf OUT.gguf --dtype q4_0 [--embedding-dtype q8_0]

Reads IN (any type `save_gguf` writes; quantized tensors are dequantized to float32) and
writes OUT with the same shape, tokenizer, name and `hybrid_lsp.*` metadata, the weights in
`--dtype` (token embedding in `--embedding-dtype`, by default Q8_0 for 4- and 5-bit types).
Starting from Q8_0 instead of float adds Q8_0's error (relative RMS ~0.3%) to the target's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.gguf_io import (
    DTYPES,
    KEY_DEMO,
    KEY_EXTRA_PREFIX,
    KEY_PROMPT_FORMAT,
    ExportError,
    load_gguf,
    save_gguf,
)


def requantize(src: Path, dst: Path, dtype: str, embedding_dtype: str | None = None) -> Path:
    """Write `src`'s model to `dst` in `dtype`; returns `dst`."""
    if src.resolve() == dst.resolve():
        raise ExportError("output must differ from input")
    loaded = load_gguf(src)
    info = loaded.info
    extra = {k[len(KEY_EXTRA_PREFIX):]: str(v) for k, v in info.metadata.items()
             if k.startswith(KEY_EXTRA_PREFIX)}
    for key in (KEY_DEMO, KEY_PROMPT_FORMAT):  # written by save_gguf itself
        extra.pop(key[len(KEY_EXTRA_PREFIX):], None)
    extra["requantized_from"] = info.file_type
    return save_gguf(dst, info.args, loaded.state_dict, info.tokenizer, dtype=dtype,
                     embedding_dtype=embedding_dtype, name=info.name, demo=info.demo,
                     extra_metadata=extra)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.requantize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--dtype", required=True, choices=sorted(DTYPES))
    ap.add_argument("--embedding-dtype", choices=sorted(DTYPES), default=None)
    a = ap.parse_args(argv)
    try:
        out = requantize(a.src, a.dst, a.dtype, a.embedding_dtype)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {a.dtype})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
