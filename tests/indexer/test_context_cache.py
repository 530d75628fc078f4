"""Caches and fast paths of context assembly (issue 4) give what the plain code gives:
the map's array walk, per-generation line counts, record reuse across generations, and the
line-piece fast path."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

import indexer.context as context_mod
from indexer.context import ContextAssembler, _Snapshot
from indexer.items import MemoryIndex
from indexer.parse import parse_file
from indexer.rank import personalization_for
from indexer.repomap import REASON_NAMES, MapFile, RepoMapper
from indexer.store import Index
from indexer.tokens import TokenCounter, line_pieces
from indexer.workspace import ScanOptions
from tests.indexer.ctx_fixtures import SPECIAL, count_words, load_crate

FIX = Path(__file__).parent / "fixtures"
TOKIO = Path(__file__).resolve().parents[2] / (
    ".cache/corpus/unpacked/librust-tokio-dev_1.24.2-1/usr/share/cargo/registry/tokio-1.24.2")


def _reference_build(m: RepoMapper, graph, path, definition_files, mentioned, shown,
                     budget) -> list[MapFile]:
    """`RepoMapper.build` as the plain loop over `graph.iter_ranked` it replaced."""
    if budget <= 0 or len(graph) == 0:
        return []
    ranked = graph.iter_ranked(personalization_for(path, definition_files), mentioned,
                               limit=max(64, budget // 8))
    looked: dict = {}
    files: dict = {}
    names: dict[str, list[str]] = {}
    score: dict[str, float] = {}
    counted: dict = {}
    total = 0
    for r_path, r_name, r_score in ranked:
        if r_path == path or (shown and (r_path, r_name) in shown):
            continue
        got = looked.get(r_path, False)
        if got is False:
            got = looked[r_path] = m._lookup(r_path)
        if got is None:
            continue
        v = got[1]
        nodes, add = v.nodes_of(r_name)
        if not nodes:
            continue
        seen = counted.get(r_path)
        if seen is None:
            new = nodes
            add += v.header
        else:
            new = nodes - seen
            if not new:
                continue
            if len(new) < len(nodes):
                add = sum(v.costs[i] for i in new)
        if total + add > budget:
            break
        total += add
        if seen is None:
            files[r_path] = got
            counted[r_path] = new
            names[r_path] = [r_name]
            score[r_path] = r_score
        else:
            counted[r_path] = seen | new
            names[r_path].append(r_name)
            score[r_path] += r_score
    out = []
    for p in sorted(names):
        fi, v = files[p]
        text, tokens = m._render(p, fi.content_hash, v, names[p])
        if text:
            shown_names = ", ".join(names[p][:REASON_NAMES]) + (
                " ..." if len(names[p]) > REASON_NAMES else "")
            out.append(MapFile(p, text, tokens, round(score[p], 6),
                               f"PageRank {score[p]:.4f}: {shown_names}", fi.content_hash))
    over = sum(mf.tokens for mf in out) - budget
    if over > 0:
        drop = set()
        for mf in sorted(out, key=lambda mf: (mf.score, mf.path)):
            if over <= 0:
                break
            drop.add(mf.path)
            over -= mf.tokens
        out = [mf for mf in out if mf.path not in drop]
    return out


def _tokio_index(max_files: int = 120) -> MemoryIndex:
    index = MemoryIndex()
    for p in sorted((TOKIO / "src").rglob("*.rs"))[:max_files]:
        rel = p.relative_to(TOKIO).as_posix()
        data = p.read_bytes()
        index.put(parse_file(rel, data, crate="tokio"), data.decode("utf-8", "replace"))
    return index


def _indexes() -> list[MemoryIndex]:
    out = [load_crate("ctx_geo"), load_crate("ctx_globs")]
    if TOKIO.is_dir():
        out.append(_tokio_index())
    return out


def test_map_walk_equals_the_plain_loop() -> None:
    rng = random.Random(0)
    checked = 0
    for index in _indexes():
        asm = ContextAssembler(index, count_words, SPECIAL)
        _, graph = asm._per_generation()
        m = asm.mapper
        paths = graph.paths
        for _ in range(60):
            path = rng.choice(paths)
            defs = rng.sample(paths, min(len(paths), rng.randrange(4)))
            mentioned = set(rng.sample(graph.names, min(len(graph.names), rng.randrange(12))))
            ranked = graph.ranked_definitions(personalization_for(path, defs), mentioned, 40)
            shown = {(r.path, r.name) for r in ranked if rng.random() < 0.3}
            shown.add(("no/such.rs", "nothing"))
            budget = rng.choice([0, 50, 300, 2000, 20_000, 200_000])
            got = m.build(graph, path, defs, mentioned, shown, budget)
            want = _reference_build(m, graph, path, defs, mentioned, shown, budget)
            assert got == want
            checked += bool(want)
    assert checked > 50


def test_precounted_lines_give_the_same_contexts(monkeypatch) -> None:
    """A first visit served from the generation's line counts builds the same context as
    one that counts the file itself, and the tokenizer is not asked for its lines."""
    index = load_crate("ctx_geo")
    counter_a = TokenCounter(count_words)
    counter_b = TokenCounter(count_words)
    pre = ContextAssembler(index, counter_a, SPECIAL, repo_name="geo")
    pre._per_generation()
    assert pre._precounted
    monkeypatch.setattr(context_mod, "PRECOUNT_MAX_BYTES", 0)
    plain = ContextAssembler(index, counter_b, SPECIAL, repo_name="geo")
    rng = random.Random(1)
    for path in index.files():
        text = index.text(path)
        if path.startswith("<") or not text:
            continue
        lines = text.split("\n")
        key = (path, index.file(path).content_hash)
        assert key in pre._precounted
        for _ in range(3):
            line = rng.randrange(len(lines))
            col = rng.randrange(len(lines[line]) + 1)
            a = pre.assemble(path, text, line, col, budget=rng.choice([1500, 4000, 64_000]))
            b = plain.assemble(path, text, line, col, budget=a.budget)
            assert a == b
        # The file's lines, counted with the generation, were handed over on the first visit.
        assert key in pre._seeded and key not in pre._precounted
        assert all(s in pre.count._cache for s in text.splitlines(keepends=True))
    assert plain._precounted == {}
    assert pre._seeded


def test_precount_of_a_new_generation_counts_only_changed_files() -> None:
    index = load_crate("ctx_geo")
    seen: list[str] = []

    def batch(texts):
        seen.extend(texts)
        return [count_words(t) for t in texts]

    asm = ContextAssembler(index, TokenCounter(count_words, count_batch=batch), SPECIAL)
    asm._per_generation()
    units = index.text("src/units.rs").replace("3.28084", "3.2808399")
    index.put(parse_file("src/units.rs", units.encode(), crate="geo"), units)
    seen.clear()
    asm._per_generation()
    assert set(asm._precounted) == {(p, fi.content_hash) for p, fi in index.entries.items()
                                   if not fi.read_only}
    lines, counts = asm._precounted[("src/units.rs", index.file("src/units.rs").content_hash)]
    assert "".join(lines) == units and counts == [count_words(s) for s in lines]
    # Only the changed file's new lines went to the tokenizer.
    assert seen and all(s in units for s in seen)


@pytest.fixture
def geo_ws(tmp_path: Path) -> Path:
    shutil.copytree(FIX / "ctx_geo", tmp_path / "ws")
    return tmp_path / "ws"


def test_store_record_keys_reuse_equals_a_fresh_read(geo_ws: Path, tmp_path: Path) -> None:
    """Across a buffer update and a disk change, the snapshot built from the previous one
    (records reused where `record_keys` is unchanged) equals one read from scratch."""
    with Index([geo_ws], options=ScanOptions(include_deps=False),
               cache_dir=str(tmp_path / "cache"), workers=0) as index:
        index.reconcile()
        keys = index.record_keys()
        assert keys and all(keys[p] == context_mod._record_key(index.file(p))
                            for p in index.files())
        snap = _Snapshot(index)
        text = index.text("src/units.rs")
        index.update_text("src/units.rs", text.replace("3.28084", "3.2808399"))
        (geo_ws / "src" / "lib.rs").write_text(
            (geo_ws / "src" / "lib.rs").read_text() + "\npub fn added() {}\n")
        index.reconcile()
        reads: list[str] = []
        real = index.file

        def counting(path: str):
            reads.append(path)
            return real(path)

        index.file = counting  # type: ignore[method-assign]
        again = _Snapshot(index, snap)
        del index.file
        fresh = _Snapshot(index)
        assert again.records == fresh.records
        assert set(reads) == {"src/units.rs", "src/lib.rs"}


def _line_pieces_loop(text: str) -> list[str]:
    parts = text.split("\n")
    out: list[str] = []
    buf = parts[0]
    for p in parts[1:]:
        if buf and not buf[-1].isspace():
            out.append(buf)
            buf = "\n" + p
        else:
            buf += "\n" + p
    if buf:
        out.append(buf)
    return out


def test_line_pieces_fast_path_equals_the_loop() -> None:
    rng = random.Random(2)
    alphabet = ["a", "b", "1", " ", "\t", "\n", "\n", "\r", "\u00a0", "\u2003", "{", "é", ""]
    texts = ["", "\n", "\n\n", "a", "a\n", "a\nb", " \na", "a \nb\n", "\na\nb",
             "a\u00a0\nb", "fn x() {\n    y\n}\n"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
              for _ in range(5000)]
    for text in texts:
        assert line_pieces(text) == _line_pieces_loop(text), repr(text)
