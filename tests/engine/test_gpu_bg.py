"""engine/data/gpu_bg.sh: a background job followed across calls (start, still running, end)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "engine" / "data" / "gpu_bg.sh"


def _call(name: str, out: Path, poll: int, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "POLL_SECONDS": str(poll)}
    return subprocess.run(["bash", str(SCRIPT), name, *cmd], env=env, capture_output=True,
                          text=True, timeout=120)


def test_job_outlives_a_call_then_reports_its_status_and_files(tmp_path: Path) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    flag = tmp_path / "go"
    job = (f'while [ ! -f {flag} ]; do sleep 0.2; done; echo "step 7 | loss 1.0"; '
           'echo result > "$OUT/summary.json"; exit 5')
    first = _call(name, tmp_path / "out1", 1, "bash", "-c", job)
    assert first.returncode == 3, first.stderr          # still running after this call
    assert "started" in first.stderr and "call again" in first.stderr
    flag.touch()
    second = _call(name, tmp_path / "out2", 60)          # same job, no command needed now
    assert second.returncode == 5, second.stderr         # the job's own status
    assert "step 7" in second.stdout
    assert (tmp_path / "out2" / "summary.json").read_text() == "result\n"
    third = _call(name, tmp_path / "out3", 60)           # ended jobs stay ended
    assert third.returncode == 5 and "started" not in third.stderr
    subprocess.run(["rm", "-rf", f"/tmp/bg-{name}"], check=False)


def test_first_call_without_a_command_is_refused(tmp_path: Path) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    res = _call(name, tmp_path / "out", 1)
    assert res.returncode == 2 and "no command" in res.stderr
    subprocess.run(["rm", "-rf", f"/tmp/bg-{name}"], check=False)
