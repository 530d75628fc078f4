"""Reference graph and personalised PageRank against hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.items import FileIndex, Item
from indexer.rank import (
    COMMON_NAME_PENALTY,
    DAMPING,
    LONG_NAME_BOOST,
    MAX_DEFINER_FILES,
    PRIVATE_PENALTY,
    RefGraph,
    name_weight,
    personalization_for,
)
from tests.indexer.ctx_fixtures import load_crate


def fi(path: str, defines: tuple[str, ...] = (), refs: tuple[str, ...] = (),
       read_only: bool = False) -> FileIndex:
    items = tuple(Item("fn", n, path, "crate", f"fn {n}()") for n in defines)
    return FileIndex(path, path, 0, items=items, references=tuple(sorted(refs)),
                     read_only=read_only)


def test_name_weights_are_the_named_boosts() -> None:
    assert name_weight("x", 1) == 1.0
    assert name_weight("parse_header", 1) == LONG_NAME_BOOST
    assert name_weight("TokenStream", 1) == LONG_NAME_BOOST
    assert name_weight("_hidden", 1) == PRIVATE_PENALTY
    assert name_weight("new", 9) == COMMON_NAME_PENALTY


def reference_pagerank(w: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Dense PageRank (dangling mass follows the personalisation), solved exactly."""
    n = len(p)
    out = w.sum(axis=1)
    t = np.divide(w, out[:, None], out=np.zeros_like(w), where=out[:, None] > 0)
    dangling = (out == 0).astype(float)
    m = DAMPING * (t.T + np.outer(p, dangling)) + (1 - DAMPING) * np.outer(p, np.ones(n))
    vals, vecs = np.linalg.eig(m)
    v = np.real(vecs[:, np.argmax(np.real(vals))])
    return v / v.sum()


def test_pagerank_matches_the_dense_solution() -> None:
    files = [fi("a.rs", ("alpha",), ("beta", "gamma")), fi("b.rs", ("beta",), ("gamma",)),
             fi("c.rs", ("gamma",)), fi("d.rs", (), ("alpha",))]
    g = RefGraph(files)
    w = np.zeros((4, 4))
    w[0, 1] = w[0, 2] = w[1, 2] = w[3, 0] = 1.0
    for personal in ({"a.rs": 1.0}, {"d.rs": 1.0, "b.rs": 0.5}, {}):
        p = np.zeros(4)
        for path, v in personal.items():
            p[g.node[path]] = v
        p = p / p.sum() if p.sum() else np.full(4, 0.25)
        np.testing.assert_allclose(g.pagerank(personal), reference_pagerank(w, p), atol=1e-5)


def test_personalisation_moves_rank_to_the_current_files_neighbours() -> None:
    files = [fi("a.rs", ("alpha",), ("beta",)), fi("b.rs", ("beta",)),
             fi("c.rs", ("gamma",)), fi("d.rs", (), ("gamma",))]
    g = RefGraph(files)
    from_a = g.file_ranks(personalization_for("a.rs", []))
    from_d = g.file_ranks(personalization_for("d.rs", []))
    assert from_a["b.rs"] > from_a["c.rs"]
    assert from_d["c.rs"] > from_d["b.rs"]


def test_read_only_files_are_not_nodes_and_empty_graphs_work() -> None:
    g = RefGraph([fi("a.rs", (), ("Display",)), fi("<std>/x.rs", ("Display",), read_only=True)])
    assert g.paths == ["a.rs"]
    assert g.ranked_definitions({"a.rs": 1.0}) == []
    assert len(RefGraph([]).pagerank({})) == 0


def test_mentioned_identifiers_lead_the_ranked_definitions() -> None:
    files = [fi("cur.rs", (), ("render_frame", "load_config")),
             fi("r.rs", ("render_frame",)), fi("l.rs", ("load_config",))]
    g = RefGraph(files)
    top = g.ranked_definitions({"cur.rs": 1.0})
    assert {(d.path, d.name) for d in top} == {("r.rs", "render_frame"), ("l.rs", "load_config")}
    assert top[0].name == "load_config"  # equal scores: ties by path (l.rs < r.rs)
    boosted = g.ranked_definitions({"cur.rs": 1.0}, mentioned=["render_frame"])
    assert boosted[0].name == "render_frame"
    assert boosted[0].score > boosted[1].score


@pytest.mark.parametrize("current", ["src/render.rs", "src/shapes/circle.rs"])
def test_fixture_crate_ranks_shapes_mod_first(current: str) -> None:
    g = RefGraph.from_index(load_crate("ctx_geo"))
    ranks = g.file_ranks(personalization_for(current, []))
    others = sorted((r, p) for p, r in ranks.items() if p != current)
    assert others[-1][1] == "src/shapes/mod.rs"   # Shape and Area: used by every file
    assert g.ranked_definitions({current: 1.0}) == g.ranked_definitions({current: 1.0})


def _plain_edges(files: list[FileIndex]) -> list[tuple[int, int, int, float]]:
    """The graph's edges built the straightforward way (the vectorised build's reference)."""
    fis = sorted((f for f in files if not f.read_only), key=lambda f: f.path)
    definers: dict[str, set[int]] = {}
    for i, f in enumerate(fis):
        for it in f.items:
            definers.setdefault(it.name, set()).add(i)
    names = sorted(definers)
    out = []
    for i, f in enumerate(fis):
        for name in f.references:
            defs = definers.get(name)
            if not defs or len(defs) > MAX_DEFINER_FILES:
                continue
            out += [(i, j, names.index(name), name_weight(name, len(defs)))
                    for j in sorted(defs) if j != i]
    return out


def _random_files(seed: int, n: int = 40) -> list[FileIndex]:
    import random
    rng = random.Random(seed)
    pool = [f"name_{k}" if k % 3 else f"N{k}" for k in range(30)] + ["new", "_x"]
    files = []
    for k in range(n):
        defines = tuple(sorted(set(rng.sample(pool, rng.randrange(0, 4)))))
        refs = tuple(sorted(set(rng.sample(pool, rng.randrange(0, 8)))))
        files.append(fi(f"f{k:02}.rs", defines, refs, read_only=rng.random() < 0.1))
    # Names defined in more than MAX_DEFINER_FILES files add no edges.
    files += [fi(f"many/{k:03}.rs", ("runner",), ("runner", "name_1"))
              for k in range(MAX_DEFINER_FILES + 1)]
    return files


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_graph_build_matches_the_plain_loop(seed: int) -> None:
    files = _random_files(seed)
    g = RefGraph(files)
    got = list(zip(g.src.tolist(), g.dst.tolist(), g.ident.tolist(), g.weight.tolist(),
                   strict=True))
    assert got == _plain_edges(files)
    # Pairs: what np.unique over the (definer, identifier) keys gives.
    keys = g.dst * max(1, len(g.names)) + g.ident
    pairs, inverse = np.unique(keys, return_inverse=True)
    assert np.array_equal(g._pairs, pairs)
    assert np.array_equal(g._pair_of_edge, inverse.ravel())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_limit_ranking_equals_the_full_sort(seed: int) -> None:
    g = RefGraph(_random_files(seed))
    for personal in ({"f00.rs": 1.0}, {"f03.rs": 1.0, "f07.rs": 0.5}, {}):
        full = g.ranked_definitions(personal, ["name_2"])
        for limit in (1, 5, 17, len(full), len(full) + 3):
            assert g.ranked_definitions(personal, ["name_2"], limit) == full[:limit]


def test_pagerank_is_kept_per_personalisation() -> None:
    g = RefGraph(_random_files(0))
    a = g.pagerank({"f00.rs": 1.0, "f01.rs": 0.5})
    assert g.pagerank({"f01.rs": 0.5, "f00.rs": 1.0}) is a   # same personalisation
    assert not a.flags.writeable
    np.testing.assert_array_equal(a, g._pagerank({"f00.rs": 1.0, "f01.rs": 0.5}))
    assert g.pagerank({"f02.rs": 1.0}) is not a
