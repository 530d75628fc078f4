"""The file reference graph and its personalised PageRank (the repository map's ranking).

Follows the idea of Aider's repo map (aider/repomap.py `get_ranked_tags`), reimplemented:
nodes are the workspace's files; for every identifier a file references and other files
define, an edge goes from the referencing file to each defining file, weighted by the named
boosts below. PageRank is personalised towards the current file and the files holding the
definitions already chosen for the cursor; each file's rank is then spread over its
out-edges onto (defining file, identifier) pairs, the units the repository map shows.

The graph depends only on the index, so `RefGraph` is built once per index generation and
kept by the caller; a PageRank run is a few sparse matrix-vector products.

Invariants: deterministic (files, identifiers and ties are ordered by name); read-only files
(dependencies, std) are not nodes: the map shows the workspace, and definitions from
dependencies come in through name resolution instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from indexer.items import FileIndex, IndexView

# Edge boosts (Aider's values, whose author tuned them on real chats; ours are unchanged
# until the ranking tests or an evaluation say otherwise).
#: Identifiers the enclosing item uses weigh this much more (Aider: mentioned identifiers).
MENTIONED_BOOST = 10.0
#: Long, specific names (>= LONG_NAME_MIN characters in snake_case or CamelCase).
LONG_NAME_BOOST = 10.0
LONG_NAME_MIN = 8
#: `_private` names.
PRIVATE_PENALTY = 0.1
#: Names defined in more than COMMON_NAME_FILES files (`new`, `fmt`, `from`, ...).
COMMON_NAME_PENALTY = 0.1
COMMON_NAME_FILES = 5
#: Names defined in more files than this add no edges at all: every file referencing them
#: would link to every definer (`fn runner()` in 2,600 generated test files of rsass made
#: 11M edges and a 5 s graph build), and at that spread they say nothing about relevance.
MAX_DEFINER_FILES = 100
# Personalisation weights (Aider gives chat and mentioned files equal weight).
#: Weight of the file being edited in the personalisation vector.
PERSONAL_CURRENT_FILE = 1.0
#: Weight of each file holding a definition chosen for the cursor.
PERSONAL_DEFINITION_FILE = 0.5
#: PageRank damping, its usual value (and networkx's default).
DAMPING = 0.85
#: Convergence: L1 change per node, and an iteration cap (networkx's defaults).
TOLERANCE = 1e-6
MAX_ITERATIONS = 100
#: PageRank vectors kept per graph, by personalisation (oldest dropped first).
PAGERANK_CACHE = 8
#: Item kinds that count as definitions of their name (variants, fields and modules come
#: along with their enum, struct or file: `Shape::Circle` should lead to `struct Circle`).
DEF_KINDS = frozenset({
    "fn", "method", "trait_fn", "struct", "enum", "union", "trait", "const", "static", "type",
    "macro",
})


@dataclass(frozen=True, slots=True)
class RankedDef:
    """One (file, identifier) pair of the map, with its share of the PageRank."""

    path: str
    name: str
    score: float


def name_weight(name: str, n_definers: int) -> float:
    """Weight of one reference to `name` before personal boosts (Aider's heuristics)."""
    w = 1.0
    is_snake = "_" in name and any(c.isalpha() for c in name)
    is_camel = any(c.isupper() for c in name) and any(c.islower() for c in name)
    if (is_snake or is_camel) and len(name) >= LONG_NAME_MIN:
        w *= LONG_NAME_BOOST
    if name.startswith("_"):
        w *= PRIVATE_PENALTY
    if n_definers > COMMON_NAME_FILES:
        w *= COMMON_NAME_PENALTY
    return w


class RefGraph:
    """Referencer -> definer graph of the workspace files, for one index generation."""

    def __init__(self, files: Iterable[FileIndex], generation: int = 0) -> None:
        self.generation = generation
        fis = sorted((fi for fi in files if not fi.read_only), key=lambda fi: fi.path)
        self.paths: list[str] = [fi.path for fi in fis]
        self.node: dict[str, int] = {p: i for i, p in enumerate(self.paths)}
        src, dst, ident, weight, self.names, name_id, pairs, pair_of_edge = _edges(fis)
        n = len(self.paths)
        self.src, self.dst, self.ident, self.weight = src, dst, ident, weight
        self.out_weight = np.bincount(self.src, weights=self.weight, minlength=n)
        w = sparse.csr_matrix((self.weight, (self.src, self.dst)), shape=(n, n))
        inv = np.divide(1.0, self.out_weight, out=np.zeros(n), where=self.out_weight > 0)
        # (n, n): transition matrix transposed, so that x @ P == self._pt @ x.
        self._pt = (sparse.diags(inv) @ w).T.tocsr()
        self._dangling = self.out_weight == 0
        # One id per (definer, identifier) pair, to sum the spread rank of each pair.
        n_names = max(1, len(self.names))
        self._pairs, self._pair_of_edge = pairs, pair_of_edge
        self._pair_dst = self._pairs // n_names
        self._pair_ident = self._pairs % n_names
        # Per request, a pair's rank is sum over its edges of rank[src] * w / out[src]; the
        # boost of a mentioned identifier is the same on all edges of a pair, so that is
        # boost(pair) * (edge weights, pairs x files) @ (rank / boosted out-weight).
        self._pair_src = sparse.csr_matrix(
            (self.weight, (self._pair_of_edge.ravel(), self.src)), shape=(len(self._pairs), n))
        self._src_ident = sparse.csc_matrix((self.weight, (self.src, self.ident)),
                                            shape=(n, n_names))
        self.name_id = name_id
        self._ranks: dict[tuple[tuple[str, float], ...], np.ndarray] = {}

    @classmethod
    def from_index(cls, index: IndexView) -> RefGraph:
        """Build the graph of every workspace file of `index`."""
        files = (index.file(p) for p in index.files())
        return cls((fi for fi in files if fi is not None), index.generation)

    def __len__(self) -> int:
        return len(self.paths)

    def pagerank(self, personalization: Mapping[str, float]) -> np.ndarray:
        """Personalised PageRank of every file (uniform when no personal file is a node).

        The last PAGERANK_CACHE results are kept by personalisation (cursors moving between
        items of one file usually give the same one); callers must not modify them."""
        key = tuple(sorted(personalization.items()))
        got = self._ranks.get(key)
        if got is None:
            got = self._pagerank(personalization)
            got.flags.writeable = False
            if len(self._ranks) >= PAGERANK_CACHE:
                self._ranks.pop(next(iter(self._ranks)))
            self._ranks[key] = got
        return got

    def _pagerank(self, personalization: Mapping[str, float]) -> np.ndarray:
        n = len(self.paths)
        if n == 0:
            return np.zeros(0)
        p = np.zeros(n)
        for path, w in personalization.items():
            i = self.node.get(path)
            if i is not None and w > 0:
                p[i] += w
        p = p / p.sum() if p.sum() > 0 else np.full(n, 1.0 / n)
        x = p.copy()
        for _ in range(MAX_ITERATIONS):
            prev = x
            x = DAMPING * (self._pt @ prev + prev[self._dangling].sum() * p) + (1 - DAMPING) * p
            if np.abs(x - prev).sum() < n * TOLERANCE:
                break
        return x

    def ranked_definitions(
        self,
        personalization: Mapping[str, float],
        mentioned: Iterable[str] = (),
        limit: int | None = None,
    ) -> list[RankedDef]:
        """(file, identifier) pairs by spread rank, best first; ties by path, then name."""
        return [RankedDef(p, n, s) for p, n, s in self.iter_ranked(personalization, mentioned,
                                                                    limit)]

    def iter_ranked(
        self,
        personalization: Mapping[str, float],
        mentioned: Iterable[str] = (),
        limit: int | None = None,
    ) -> Iterator[tuple[str, str, float]]:
        """`ranked_definitions` as lazy (path, name, score) tuples (callers stop early)."""
        order, totals = self.ranked_pairs(personalization, mentioned, limit)
        paths, names = self.paths, self.names
        for d, i, t in zip(self._pair_dst[order].tolist(), self._pair_ident[order].tolist(),
                           totals.tolist(), strict=True):
            yield paths[d], names[i], t

    def ranked_pairs(
        self,
        personalization: Mapping[str, float],
        mentioned: Iterable[str] = (),
        limit: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`iter_ranked` as arrays: pair indices (`pair_file`, `pair_name` give their file
        and name ids), best first, and their scores."""
        if len(self.src) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        rank = self.pagerank(personalization)
        ids = sorted({self.name_id[m] for m in mentioned if m in self.name_id})
        # Each file's rank flows out along its edges, in proportion to their weights.
        out = self.out_weight
        if ids:
            extra = np.asarray(self._src_ident[:, ids].sum(axis=1)).ravel()
            out = out + (MENTIONED_BOOST - 1) * extra
        per_out = np.divide(rank, out, out=np.zeros_like(rank), where=out > 0)
        totals = self._pair_src @ per_out
        dst, ident = self._pair_dst, self._pair_ident
        if ids:
            totals = np.where(np.isin(ident, ids), totals * MENTIONED_BOOST, totals)
        # Paths and names are sorted, so node and name ids order ties by path, then name.
        key = -np.round(totals, 12)
        if limit is not None and limit < len(key):
            # Sort only the pairs that can make the first `limit`: those at or better than
            # the limit-th key (ties at the boundary included, so the order is the same).
            kth = np.partition(key, max(limit, 1) - 1)[max(limit, 1) - 1]
            cand = np.flatnonzero(key <= kth)
            order = cand[np.lexsort((ident[cand], dst[cand], key[cand]))][:limit]
        else:
            order = np.lexsort((ident, dst, key))
            if limit is not None:
                order = order[:limit]
        return order, totals[order]

    @property
    def pair_file(self) -> np.ndarray:
        """File id (index into `paths`) of each (definer, identifier) pair."""
        return self._pair_dst

    @property
    def pair_name(self) -> np.ndarray:
        """Name id (index into `names`) of each (definer, identifier) pair."""
        return self._pair_ident

    def pair_index(self, path: str, name: str) -> int:
        """Index of the pair (path, name), or -1 when the graph has no such pair."""
        d = self.node.get(path)
        k = self.name_id.get(name)
        if d is None or k is None or len(self._pairs) == 0:
            return -1
        key = d * max(1, len(self.names)) + k
        i = int(np.searchsorted(self._pairs, key))
        return i if i < len(self._pairs) and int(self._pairs[i]) == key else -1

    def file_ranks(self, personalization: Mapping[str, float]) -> dict[str, float]:
        """PageRank by path (for reports and tests)."""
        return dict(zip(self.paths, (float(v) for v in self.pagerank(personalization)),
                        strict=True))


def _edges(fis: list[FileIndex]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                           list[str], dict[str, int], np.ndarray, np.ndarray]:
    """(src, dst, identifier, weight) of every edge, the sorted defined names with their ids,
    and the (definer, identifier) pairs: their keys `definer * len(names) + identifier`
    ascending, and each edge's pair index (what `np.unique(keys, return_inverse=True)` gives,
    without sorting the edges). Edges come in the order of a plain loop (referencing file, its
    references in order, defining files ascending), built with array operations: a big
    workspace has 10M+ edges."""
    def_name: list[str] = []
    def_file: list[int] = []
    for i, fi in enumerate(fis):
        own = {it.name for it in fi.items if it.kind in DEF_KINDS}
        def_name.extend(own)
        def_file.extend([i] * len(own))
    names = sorted(set(def_name))
    name_id = {nm: k for k, nm in enumerate(names)}
    dn = np.fromiter(map(name_id.__getitem__, def_name), dtype=np.int64, count=len(def_name))
    df = np.asarray(def_file, dtype=np.int64)
    order = np.lexsort((df, dn))            # by name, then defining file
    df, dn = df[order], dn[order]
    # Each definition's position when ordered by defining file, then name (pair key order).
    by_file = np.lexsort((dn, df))
    key_rank = np.empty(len(by_file), dtype=np.int64)
    key_rank[by_file] = np.arange(len(by_file), dtype=np.int64)
    n_def = np.bincount(dn, minlength=len(names))
    first = np.concatenate(([0], np.cumsum(n_def)[:-1])).astype(np.int64)
    # Referencing file and identifier of every reference to a defined name, in file order.
    ref_k: list[int] = []
    ref_i: list[int] = []
    get = name_id.get
    for i, fi in enumerate(fis):
        ks = [k for k in map(get, fi.references) if k is not None]
        ref_k.extend(ks)
        ref_i.extend([i] * len(ks))
    rk = np.asarray(ref_k, dtype=np.int64)
    ri = np.asarray(ref_i, dtype=np.int64)
    keep = n_def[rk] <= MAX_DEFINER_FILES
    rk, ri = rk[keep], ri[keep]
    # Expand each reference into one edge per defining file of its name.
    reps = n_def[rk]
    total = int(reps.sum())
    ref_of = np.repeat(np.arange(len(rk), dtype=np.int64), reps)
    starts = np.cumsum(reps) - reps
    within = np.arange(total, dtype=np.int64) - np.repeat(starts, reps)
    src = ri[ref_of]
    defpos = first[rk][ref_of] + within
    dst = df[defpos]
    ident = rk[ref_of]
    loop = src != dst
    src, dst, ident, defpos = src[loop], dst[loop], ident[loop], defpos[loop]
    # Pairs with at least one edge, in key order, and each edge's index among them.
    edge_key = key_rank[defpos]
    has = np.bincount(edge_key, minlength=len(by_file)) > 0
    pair_of_edge = (np.cumsum(has) - 1)[edge_key]
    kept = by_file[has]
    pairs = df[kept] * max(1, len(names)) + dn[kept]
    used = np.flatnonzero(np.bincount(ident, minlength=len(names)))
    w_of = np.zeros(len(names), dtype=np.float64)
    for k in used.tolist():
        w_of[k] = name_weight(names[k], int(n_def[k]))
    return src, dst, ident, w_of[ident], names, name_id, pairs, pair_of_edge


def personalization_for(current: str, definition_files: Iterable[str]) -> dict[str, float]:
    """The personalisation vector: the current file and the files of chosen definitions."""
    p: dict[str, float] = {current: PERSONAL_CURRENT_FILE}
    for f in definition_files:
        if f != current:
            p[f] = max(p.get(f, 0.0), PERSONAL_DEFINITION_FILE)
    return p


def sqrt_weight(count: int) -> float:
    """Aider's damping of repeated references: sqrt(count) (used for in-item counts)."""
    return math.sqrt(max(count, 0))
