"""Shared set-up of the editor-client tests: the server command, a model, the fixture crate.

The clients start the server as the user's configuration does (`hybrid-lsp serve`), on the
fixture crate in `fixtures/crate`, with the llama.cpp backend when it is installed and
the embedded default model when it exists (else, or with HYBRID_LSP_EDITOR_TESTS_PREDICTABLE=1, a
tiny model whose completion is known in advance, built once per session).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EDITORS = ROOT / "editors"
FIXTURE = Path(__file__).parent / "fixtures" / "crate"
DEFAULT_MODEL = ROOT / "engine" / "models" / "hybrid-lsp.gguf"
#: The line of the fixture's lib.rs where the clients ask for a completion (at its end).
CURSOR_NEEDLE = "let sq = self.x * self.x + "
#: What the predictable test model writes, one token after another.
PREDICTED = "1"


def tool_or_skip(name: str) -> str:
    """The path of `name`; skip without it, except in CI (CI=true), where that fails."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI (CI=true) but is not on PATH")
        pytest.skip(f"{name} is not installed")
    return path


def server_executable(tmp: Path) -> Path:
    """An executable that the clients start as `<it> serve`, like the installed `hybrid-lsp`.

    The installed entry point when there is one (setup.sh installs it into .venv/bin);
    otherwise a small script running this checkout's CLI with the test's Python.
    """
    installed = shutil.which("hybrid-lsp") or shutil.which(
        "hybrid-lsp", path=str(Path(sys.executable).parent))
    if installed:
        return Path(installed)
    script = tmp / "hybrid-lsp"
    script.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}} "
                      f"exec {sys.executable} -m hybrid_lsp \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def copy_fixture(tmp: Path) -> Path:
    """A fresh copy of the fixture crate (the server may write caches next to it)."""
    ws = tmp / "crate"
    shutil.copytree(FIXTURE, ws)
    return ws


def cursor_position(text: str) -> tuple[int, int]:
    """(line, UTF-16 character) at the end of the line holding CURSOR_NEEDLE (0-based)."""
    for number, line in enumerate(text.split("\n")):
        if line.endswith(CURSOR_NEEDLE):
            return number, len(line.encode("utf-16-le")) // 2
    raise AssertionError(f"expected a line ending in {CURSOR_NEEDLE!r} in the fixture")


def server_env(tmp: Path) -> dict[str, str]:
    """The environment of a client (and so of the server it starts)."""
    env = dict(os.environ)
    env["HYBRID_LSP_LOG_DIR"] = str(tmp / "logs")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    return env


def build_predictable_model(path: Path, text: str = PREDICTED) -> Path:
    """A tiny cohere2 model that predicts the token `text` after any input, greedily.

    Every block's output projections are zero, so the residual stream is the input token's
    embedding; all embeddings point the same way (zero mean, so LayerNorm keeps it) and
    `text`'s is four times as long, so with tied embeddings its logit is the largest
    whatever the input. The editor tests then get a completion they can predict.
    """
    import torch

    from engine.config import ModelArgs
    from engine.gguf_io import save_gguf
    from engine.model import Transformer
    from engine.tokenizer import train_tokenizer
    from tests.hybrid_lsp.conftest import SNIPPETS  # the tokenizer recipe of the e2e tests

    src = path.parent / "tok-src"
    src.mkdir(parents=True, exist_ok=True)
    for i, snippet in enumerate(SNIPPETS):
        (src / f"f{i}.rs").write_text(snippet)
    tok = train_tokenizer(src, 320)
    [target] = tok.encode(text)
    args = ModelArgs(vocab_size=tok.vocab_size, dim=32, n_layer=2, n_head=2, n_kv_head=1,
                     ffn_dim=64, window=16, global_every=2, context_length=8192)
    model = Transformer(args)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.fill_(1.0 if name.endswith("norm.weight") else 0.0)
        direction = torch.tensor([1.0, -1.0]).repeat(args.dim // 2)  # (dim,), zero mean
        model.tok_embeddings.weight[:] = direction
        model.tok_embeddings.weight[target] = 4 * direction
    return save_gguf(path, args, model.state_dict(), tok, name="predictable-test")


@pytest.fixture(scope="session")
def editor_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """(model file, whether it is the shipped model): the shipped model, else a predictable
    one."""
    if DEFAULT_MODEL.is_file() and not os.environ.get("HYBRID_LSP_EDITOR_TESTS_PREDICTABLE"):
        return DEFAULT_MODEL, True
    return build_predictable_model(tmp_path_factory.mktemp("editor-model") / "m.gguf"), False


@pytest.fixture(scope="session")
def editor_backend() -> str:
    """llama (llama.cpp) when installed, as in CI; else torch on the CPU."""
    from tests.hybrid_lsp.conftest import test_backend

    return test_backend()
