"""`hybrid-lsp context FILE:LINE:COL`: prompt and breakdown, JSON, bad locations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from hybrid_lsp import context_cmd
from indexer.workspace import ScanOptions

FIXTURE = Path(__file__).resolve().parents[1] / "indexer" / "fixtures" / "ctx_geo"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The index database goes to a per-test folder, never the user's cache."""
    monkeypatch.setenv(context_cmd.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    context_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["context", *argv, "--model", "/nonexistent.gguf"])
    rc = args.func(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_json_breakdown(capsys) -> None:
    loc = f"{FIXTURE / 'src' / 'render.rs'}:26:13"
    rc, out, _ = run(capsys, loc, "--budget", "2048", "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["path"] == "src/render.rs" and data["total_tokens"] <= 2048
    assert data["enclosing"] == "method describe (in Canvas)"
    assert data["chunks"][-1]["name"] == "Shape" and data["chunks"][-1]["kind"] == "enum"
    assert data["prompt"].endswith("<|fim_middle|>")
    assert "estimate" in data["token_counting"]


def test_text_output_lists_every_chunk(capsys) -> None:
    rc, out, _ = run(capsys, f"{FIXTURE / 'src' / 'shapes' / 'circle.rs'}:15:9")
    assert rc == 0
    assert "trait of impl Area for Circle" in out and "<|repo_name|>" in out


@pytest.mark.parametrize("loc", ["nofile.rs:1:1", "x.rs:0:1", "x.rs", "x.rs:a:b"])
def test_bad_locations(capsys, loc: str) -> None:
    rc, _, err = run(capsys, loc)
    assert rc == 2 and "hybrid-lsp context" in err


def test_uses_the_persistent_index(capsys, _cache_dir: Path) -> None:
    loc = f"{FIXTURE / 'src' / 'render.rs'}:26:13"
    rc, out, _ = run(capsys, loc, "--budget", "2048", "--json")
    assert rc == 0
    assert list(_cache_dir.rglob("*.sqlite3"))  # the server's database, not a memory copy
    rc2, out2, _ = run(capsys, loc, "--budget", "2048", "--json")
    first, second = json.loads(out), json.loads(out2)
    assert rc2 == 0 and first["prompt"] == second["prompt"]


def test_memory_index_fallback_matches_the_store(tmp_path: Path) -> None:
    from indexer.store import Index

    mem = context_cmd.load_memory_index(FIXTURE)
    with Index([str(FIXTURE)], options=ScanOptions(include_deps=False),
               cache_dir=str(tmp_path)) as store:
        store.reconcile()
        assert sorted(p for p in store.files() if not p.startswith("<")) == sorted(
            p for p in mem.files() if not p.startswith("<"))


@pytest.mark.parametrize("persistent", [False, True])
def test_context_bench_times_next_generations_and_restores_the_index(persistent: bool) -> None:
    """`bench_context_assembly` times item changes, keystrokes and next generations after
    one-file edits, and leaves the index's texts as it found them."""
    from tests.indexer.ctx_fixtures import count_words, load_crate

    index = context_cmd.load_index(FIXTURE) if persistent else load_crate("ctx_geo")
    try:
        before = {p: index.text(p) for p in index.files()}
        r = context_cmd.bench_context_assembly(index, count_words, budget=2048, samples=4,
                                               keystrokes=2, next_generations=3)
        assert r.samples == 4 and r.mean_total_tokens > 0
        assert 0 < r.item_change_p50_ms <= r.item_change_p95_ms
        assert len(r.next_generation_ms) == 3 and all(t > 0 for t in r.next_generation_ms)
        assert {p: index.text(p) for p in index.files()} == before
        assert not any("hybrid_lsp_bench_" in it.name for p in index.files()
                       for it in index.file(p).items)
    finally:
        close = getattr(index, "close", None)
        if close is not None:
            close()
