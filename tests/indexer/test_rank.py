"""Reference graph and personalised PageRank against hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.items import FileIndex, Item
from indexer.rank import (
    COMMON_NAME_PENALTY,
    DAMPING,
    LONG_NAME_BOOST,
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
