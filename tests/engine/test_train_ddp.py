"""DistributedDataParallel on the CPU: `torchrun --nproc-per-node 2` (gloo) gives the same
losses as one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.tokenizer import train_tokenizer

HELPER = Path(__file__).with_name("ddp_train_helper.py")


def _run(cmd: list[str], tmp: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NCCL_NVLS_ENABLE": "0",
           "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[:4000]


def test_two_ranks_match_one_process(tmp_path: Path) -> None:
    src = tmp_path / "rs"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}.rs").write_text(f"pub fn f{i}(a: u32, b: u32) -> u32 {{\n    a + b\n}}\n")
    tok = train_tokenizer(src, 300)
    tok.save(tmp_path / "tok.json")
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    _run([sys.executable, str(HELPER), str(tmp_path / "tok.json"), str(one), "128",
          str(tmp_path / "run1")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
          "2", str(HELPER), str(tmp_path / "tok.json"), str(two), "64",
          str(tmp_path / "run2")], tmp_path)
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert (a["ranks"], b["ranks"]) == (1, 2)
    assert sorted(a["losses"]) == sorted(b["losses"]) == ["1", "2", "3", "4"]
    for step in a["losses"]:
        assert b["losses"][step] == pytest.approx(a["losses"][step], rel=1e-5, abs=1e-6)
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
