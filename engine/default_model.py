"""Where the embedded default model lives (package data, so `pip install` carries it)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

#: The shipped model: trained on Rust crates (docs/MODEL.md), Q4_0 (Q8_0 embedding), under 32 MB.
DEFAULT_MODEL_FILE = "hybrid-lsp.gguf"


def default_model_path() -> Path:
    """The embedded default model file (engine/models/hybrid-lsp.gguf)."""
    return Path(str(importlib.resources.files("engine").joinpath("models", DEFAULT_MODEL_FILE)))
