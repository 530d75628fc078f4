"""engine.compare_runs: two runs' logs side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.compare_runs import compare, main, peak_memory, steady_throughput, train_records


def _log(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _rec(step: int, loss: float, tps: float, seq: int = 4096, **kw) -> dict:
    return {"step": step, "loss": loss, "tok_per_s": tps, "seq_len": seq, **kw}


def test_throughput_drops_compile_interval_and_resume_outlier() -> None:
    steps = train_records([_rec(20, 6.0, 1e5), _rec(40, 5.0, 8e5), _rec(60, 4.0, 8.2e5),
                           _rec(80, 3.9, 9e4), _rec(100, 3.8, 8.1e5),
                           _rec(120, 3.7, 2e4, seq=8192), _rec(140, 3.6, 7e5, seq=8192)])
    assert steady_throughput(steps) == {4096: 8.1e5, 8192: 7e5}


def test_peak_memory_per_rank_takes_the_maximum() -> None:
    steps = train_records([_rec(1, 1.0, 1.0, mem_gib=2.0, mem_gib_ranks=[2.0, 3.0]),
                           _rec(2, 1.0, 1.0, mem_gib=4.0, mem_gib_ranks=[4.0, 2.5])])
    assert peak_memory(steps) == [4.0, 3.0]


def test_compare_lists_common_steps_and_ratio(tmp_path: Path, capsys) -> None:
    a = _log(tmp_path / "a", [{"model": "x"}, _rec(20, 6.0, 1e5), _rec(40, 5.0, 1e6),
                              _rec(60, 4.0, 1e6), {"step": 60, "val_loss": 4.1}])
    b = _log(tmp_path / "b", [_rec(20, 6.0, 2e5), _rec(40, 5.05, 1.9e6), _rec(60, 3.96, 1.9e6),
                              _rec(80, 3.5, 1.9e6)])
    assert main([str(a), str(b / "log.jsonl"), "--names", "one,two"]) == 0
    out = capsys.readouterr().out
    assert "| 40 | 4096 | 5.0000 | 5.0500 | +1.00% |" in out
    assert "| 80 |" not in out  # only steps both runs logged
    assert "| 4096 | 1,000,000 | 1,900,000 | 1.900x |" in out


def test_no_common_steps_is_said(tmp_path: Path) -> None:
    text = compare([_rec(1, 1.0, 1.0)], [_rec(2, 1.0, 1.0)])
    assert "no step logged by both runs" in text


def test_bad_log_is_a_clear_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "log.jsonl").write_text('{"step": 1}\nnot json\n')
    assert main([str(tmp_path), str(tmp_path)]) == 2
    assert "log.jsonl:2: not JSON" in capsys.readouterr().err
    with pytest.raises(ValueError):
        from engine.compare_runs import read_log
        read_log(tmp_path)
