"""`hybrid-lsp index PATH [--json]`: summary text, exactly one JSON object, bad paths."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from hybrid_lsp import index_cmd

FIXTURE = Path(__file__).resolve().parents[1] / "indexer" / "fixtures" / "wordcount"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    index_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["index", *argv])
    rc = args.func(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_json_summary_then_warm_start(tmp_path: Path, capsys) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE, ws)
    (ws / "src" / "blob.rs").write_bytes(b"\x00\x01\x02" * 100)
    common = ["--json", "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--no-deps"]
    rc, out, _ = run(capsys, str(ws), *common)
    assert rc == 0
    assert out.count("\n") == 1
    d = json.loads(out)
    assert d["files"] == 6 and d["parsed_files"] == 6 and d["items"] > 250
    assert d["bytes"] > 0 and d["seconds"] >= 0 and "mb_per_s" in d
    assert d["skipped"] == [{"path": "src/blob.rs", "reason": "binary file (NUL bytes)"}]
    assert d["skipped_by_reason"] == {"binary file": 1}
    rc, out, _ = run(capsys, str(ws), *common)
    d = json.loads(out)
    assert (d["parsed_files"], d["unchanged_files"]) == (0, 6)


def test_text_summary(tmp_path: Path, capsys) -> None:
    rc, out, _ = run(capsys, str(FIXTURE), "--cache-dir", str(tmp_path), "--workers", "0",
                     "--no-deps", "--no-std")
    assert rc == 0
    assert out.startswith("indexed 5 files, ")
    assert "MB/s" in out and "database: " in out


def test_bad_path(tmp_path: Path, capsys) -> None:
    rc, out, _ = run(capsys, str(tmp_path / "missing"), "--json")
    assert rc == 2 and json.loads(out)["exit_code"] == 2
    rc, out, err = run(capsys, str(tmp_path / "missing"))
    assert rc == 2 and out == "" and "Expected a folder" in err
