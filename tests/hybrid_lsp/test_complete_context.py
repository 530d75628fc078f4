"""`hybrid-lsp complete` feeds the workspace context to the model (index + assembler)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.hybrid_lsp.conftest import test_backend

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "indexer" / "fixtures" / "ctx_geo"
DEFAULT_MODEL = ROOT / "engine" / "models" / "hybrid-lsp.gguf"


def run_complete(where: str, *extra: str, cache: Path) -> dict:
    env = {**os.environ, "HYBRID_LSP_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "hybrid_lsp", "complete", where, "--json",
                          "--backend", test_backend(), "--max-tokens", "4", *extra],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_complete_uses_workspace_context(tmp_path: Path) -> None:
    assert DEFAULT_MODEL.is_file(), "the embedded default model is missing"
    ws = tmp_path / "ctx_geo"
    shutil.copytree(FIXTURE, ws)
    where = f"{ws / 'src' / 'render.rs'}:26:35"
    alone = run_complete(where, "--no-context", cache=tmp_path / "cache")
    with_ctx = run_complete(where, "--budget", "2048", cache=tmp_path / "cache")
    assert alone["context_budget"] is None and with_ctx["context_budget"] == 2048
    # The cross-file definitions (Shape, Area, ...) make the prompt longer, within budget.
    assert alone["prompt_tokens"] < with_ctx["prompt_tokens"] <= 2048
    # The index is cached: the database exists after the first run.
    assert any((tmp_path / "cache").rglob("*.sqlite*")) or any((tmp_path / "cache").rglob("*.db"))


def test_budget_below_minimum_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "hybrid_lsp", "complete",
                          f"{FIXTURE / 'src' / 'render.rs'}:1:1", "--budget", "100"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "1024" in out.stderr
