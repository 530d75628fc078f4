"""Cold indexing in worker processes: same results as in-process, progress, batching."""

from __future__ import annotations

import shutil
from pathlib import Path

from indexer import build
from indexer.build import Job, parse_job, parse_many
from indexer.parse import parse_file
from indexer.store import Index
from indexer.workspace import ScanOptions, discover

FIX = Path(__file__).parent / "fixtures"


def jobs_for(root: Path) -> list[Job]:
    d = discover([root], ScanOptions(include_deps=False, include_std=False))
    return [Job(f.path, f.abspath, f.module, f.crate) for f in d.files]


def test_workers_match_in_process_and_report_progress() -> None:
    jobs = jobs_for(FIX / "wordcount")
    seen: list[tuple[int, int]] = []
    pooled = {p.job.path: p for p in parse_many(
        jobs, workers=2, progress=lambda done, total, path: seen.append((done, total)))}
    assert seen == [(i, len(jobs)) for i in range(1, len(jobs) + 1)]
    assert sorted(pooled) == sorted(j.path for j in jobs)
    for job in jobs:
        p = pooled[job.path]
        expected = parse_file(job.path, Path(job.abspath).read_bytes(), module=job.module,
                              crate=job.crate)
        assert p.reason is None
        assert p.file_index() == expected
        assert p.text == Path(job.abspath).read_text()
        assert p.nitems == len(expected.items)
        assert set(p.names.split("\n")) == {it.name for it in expected.items}


def test_cold_index_through_workers_commits_in_batches(tmp_path: Path, monkeypatch) -> None:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "Cargo.toml").write_text('[package]\nname = "many"\n')
    mods = "".join(f"pub mod m{i};\n" for i in range(30))
    (ws / "src" / "lib.rs").write_text(mods)
    for i in range(30):
        (ws / "src" / f"m{i}.rs").write_text(
            f"pub struct S{i};\nimpl S{i} {{ fn f(&self) {{}} }}\n")
    monkeypatch.setattr("indexer.store.COMMIT_EVERY_FILES", 7)
    monkeypatch.setattr(build, "BATCH_FILES", 8)
    progress: list[str] = []
    with Index([ws], options=ScanOptions(include_deps=False, include_std=False),
               cache_dir=str(tmp_path / "cache"), workers=2) as index:
        st = index.reconcile(progress=lambda d, t, p: progress.append(p))
        assert st.parsed == 31 and len(progress) == 31
        assert index.items_named("S29")[0].module == "crate::m29"
        assert index.generation >= 31 // 7


def test_cancel_stops_between_batches() -> None:
    jobs = jobs_for(FIX / "wordcount") * 3
    got = list(parse_many(jobs, workers=0, cancel=lambda: True))
    assert got == []


def test_vanished_and_unreadable_files_are_skips(tmp_path: Path) -> None:
    assert parse_job(Job("src/x.rs", str(tmp_path / "gone.rs"))).reason == \
        "vanished during indexing"
    (tmp_path / "dir.rs").mkdir()
    assert parse_job(Job("dir.rs", str(tmp_path / "dir.rs"))).reason.startswith("unreadable")


def test_copy_keeps_results(tmp_path: Path) -> None:
    shutil.copytree(FIX / "wordcount", tmp_path / "wc")
    a = {p.job.path: p.content_hash for p in parse_many(jobs_for(tmp_path / "wc"), workers=0)}
    b = {p.job.path: p.content_hash for p in parse_many(jobs_for(FIX / "wordcount"),
                                                        workers=0)}
    assert a == b
