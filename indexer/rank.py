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

import bisect
import math
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from indexer.items import FileIndex, IndexView

try:    # scipy's own CSC matrix-vector kernel (y += M[:, a:b] @ x[a:b] without a copy)
    from scipy.sparse._sparsetools import csc_matvec as _csc_matvec
except ImportError:  # pragma: no cover - another scipy layout: plain products
    _csc_matvec = None

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
#: `RefGraph.updated` rebuilds from scratch when more names than this change definers.
RESCAN_MAX_NAMES = 64
#: `_matvec` runs through zero columns fewer than this apart rather than start a new call.
MATVEC_GAP = 16
#: Smaller matrices take the plain product (the skipping pays from about this size).
MATVEC_MIN_NNZ = 200_000
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
    """Referencer -> definer graph of the workspace files, for one index generation.

    Everything per edge is kept per referencing file (one row per file): the transition
    matrix's rows, the (definer, identifier) pairs' columns and the identifier columns, each
    computed from that file's edges alone. `updated(...)` therefore brings a graph to the
    next generation by recomputing only the rows of the files whose edges can differ (the
    changed files, and the files referencing a name whose definers changed) and gives the
    same arrays, bit for bit, as a fresh build."""

    def __init__(self, files: Iterable[FileIndex], generation: int = 0) -> None:
        self.generation = generation
        fis = sorted((fi for fi in files if not fi.read_only), key=lambda fi: fi.path)
        self._fis = fis
        self.paths: list[str] = [fi.path for fi in fis]
        self.node: dict[str, int] = {p: i for i, p in enumerate(self.paths)}
        self._own = [_own_defs(fi) for fi in fis]
        names = sorted(set().union(*self._own)) if self._own else []
        self._set_names(names)
        def_name: list[int] = []
        def_file: list[int] = []
        get = self.name_id.__getitem__
        for i, own in enumerate(self._own):
            def_name.extend(map(get, own))
            def_file.extend([i] * len(own))
        self._set_defs(np.asarray(def_name, dtype=np.int64), np.asarray(def_file, dtype=np.int64))
        self._w_of = np.full(len(self.names), np.nan)
        n = len(self.paths)
        every = np.arange(n, dtype=np.int64)
        sl, dst, ident, defpos = self._block_edges(every)
        # Pairs with at least one edge, in key order, and each edge's pair index (what
        # `np.unique(keys, return_inverse=True)` gives, without sorting the edges): each pair
        # is a definition, so rank the definitions by (file, name).
        n_defs = len(self._def_file)
        by_file = np.lexsort((self._def_name, self._def_file))
        key_rank = np.empty(n_defs, dtype=np.int64)
        key_rank[by_file] = np.arange(n_defs, dtype=np.int64)
        edge_key = key_rank[defpos]
        has = np.bincount(edge_key, minlength=n_defs) > 0
        pid = (np.cumsum(has) - 1)[edge_key]
        kept = by_file[has]
        self._set_pairs(self._def_file[kept] * self._nn + self._def_name[kept])
        w = self._weights(ident)
        wp, sp, si, out = self._rows(n, sl, dst, ident, pid, w)
        self.out_weight = out
        self._wp, self._sp, self._si = wp, sp, si
        self._finish()

    # -- building --------------------------------------------------------------------------

    def _set_names(self, names: list[str]) -> None:
        self.names = names
        self.name_id: dict[str, int] = {nm: k for k, nm in enumerate(names)}
        self._nn = max(1, len(names))

    def _set_defs(self, def_name: np.ndarray, def_file: np.ndarray) -> None:
        """The definitions, ordered by name, then defining file."""
        order = np.lexsort((def_file, def_name))
        self._def_name, self._def_file = def_name[order], def_file[order]
        self._n_def = np.bincount(self._def_name, minlength=len(self.names))
        self._def_first = (np.cumsum(self._n_def) - self._n_def).astype(np.int64)

    def _set_pairs(self, keys: np.ndarray) -> None:
        self._pairs = keys
        self._pair_dst = keys // self._nn
        self._pair_ident = keys % self._nn

    def _weights(self, ident: np.ndarray) -> np.ndarray:
        """Each edge's weight (`name_weight` of its identifier, computed once per name)."""
        w_of = self._w_of
        for k in np.unique(ident[np.isnan(w_of[ident])]).tolist():
            w_of[k] = name_weight(self.names[k], int(self._n_def[k]))
        return w_of[ident]

    def _block_edges(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                      np.ndarray]:
        """The edges of the files `rows` (ascending): (row position, definer, identifier,
        definition index), in the order of a plain loop (referencing file, its references in
        order, defining files ascending), built with array operations: a big workspace has
        10M+ edges."""
        ref_k: list[int] = []
        ref_i: list[int] = []
        get = self.name_id.get
        fis = self._fis
        for j, i in enumerate(rows.tolist()):
            ks = [k for k in map(get, fis[i].references) if k is not None]
            ref_k.extend(ks)
            ref_i.extend([j] * len(ks))
        rk = np.asarray(ref_k, dtype=np.int64)
        ri = np.asarray(ref_i, dtype=np.int64)
        n_def = self._n_def
        keep = n_def[rk] <= MAX_DEFINER_FILES
        rk, ri = rk[keep], ri[keep]
        # Expand each reference into one edge per defining file of its name.
        reps = n_def[rk]
        total = int(reps.sum())
        ref_of = np.repeat(np.arange(len(rk), dtype=np.int64), reps)
        starts = np.cumsum(reps) - reps
        within = np.arange(total, dtype=np.int64) - np.repeat(starts, reps)
        sl = ri[ref_of]
        defpos = self._def_first[rk][ref_of] + within
        dst = self._def_file[defpos]
        ident = rk[ref_of]
        loop = rows[sl] != dst
        return sl[loop], dst[loop], ident[loop], defpos[loop]

    def _rows(self, m: int, sl: np.ndarray, dst: np.ndarray, ident: np.ndarray,
              pid: np.ndarray, w: np.ndarray,
              ) -> tuple[sparse.csr_matrix, sparse.csr_matrix, sparse.csr_matrix, np.ndarray]:
        """The per-file rows of `m` files from their edges: the transition rows (weights
        summed per definer, divided by the file's out-weight), the pair rows and the
        identifier rows, and the out-weights."""
        n = len(self.paths)
        out = np.bincount(sl, weights=w, minlength=m)
        wr = sparse.csr_matrix((w, (sl, dst)), shape=(m, n))
        inv = np.divide(1.0, out, out=np.zeros(m), where=out > 0)
        # What `sparse.diags(inv) @ wr` gives (one product per entry).
        wr.data = wr.data * np.repeat(inv, np.diff(wr.indptr))
        sp = sparse.csr_matrix((w, (sl, pid)), shape=(m, len(self._pairs)))
        si = sparse.csr_matrix((w, (sl, ident)), shape=(m, self._nn))
        return _idx32(wr), _idx32(sp), _idx32(si), out

    def _finish(self) -> None:
        n = len(self.paths)
        # Transition matrix transposed (x @ P == self._pt @ x), as the transpose of the
        # per-file rows: summed per definer in ascending file order, as a CSR of P^T would.
        self._pt = self._wp.T
        self._dangling = self.out_weight == 0
        # Per request, a pair's rank is sum over its edges of rank[src] * w / out[src]; the
        # boost of a mentioned identifier is the same on all edges of a pair, so that is
        # boost(pair) * (edge weights, pairs x files) @ (rank / boosted out-weight).
        self._pair_src = self._sp.T
        self._src_ident = self._si.tocsc()
        self._pair_count = np.bincount(self._sp.indices, minlength=len(self._pairs))
        self._ranks: dict[tuple[tuple[str, float], ...], np.ndarray] = {}
        self._n_edges = int(self._sp.nnz)
        assert len(self.out_weight) == n

    # -- the next generation ---------------------------------------------------------------

    def updated(self, files: Iterable[FileIndex], generation: int,
                changed: Iterable[str]) -> RefGraph:
        """The graph of the next generation, whose workspace files are `files` and differ
        from this graph's in the files `changed` only: equal, array for array, to
        `RefGraph(files, generation)`, at the cost of the rows it recomputes. Falls back to
        that full build when the workspace's file set changed or a change touches too many
        names."""
        fis = sorted((fi for fi in files if not fi.read_only), key=lambda fi: fi.path)
        if [fi.path for fi in fis] != self.paths:
            return RefGraph(fis, generation)
        node = self.node
        touched = sorted(node[p] for p in set(changed) if p in node)
        if len(touched) > max(8, len(self.paths) // 8):
            return RefGraph(fis, generation)
        g = object.__new__(RefGraph)
        g.__dict__.update(self.__dict__)
        g.generation = generation
        g._fis = fis
        g._prev = weakref.ref(self)
        g._changed_nodes = list(touched)
        g._pmap = np.arange(len(self._pairs))
        if not touched:
            g._ranks = {}
            return g
        own = list(self._own)
        gained: set[str] = set()
        lost: set[str] = set()
        for i in touched:
            own[i] = _own_defs(fis[i])
            gained |= own[i] - self._own[i]
            lost |= self._own[i] - own[i]
        g._own = own
        moved = gained | lost
        # Definitions and names.
        def_name, def_file = self._def_name, self._def_file
        if moved:
            n_def = dict.fromkeys(moved, 0)
            for nm in moved:
                k = self.name_id.get(nm)
                n_def[nm] = int(self._n_def[k]) if k is not None else 0
            before = dict(n_def)
            for i in touched:
                for nm in own[i] - self._own[i]:
                    n_def[nm] += 1
                for nm in self._own[i] - own[i]:
                    n_def[nm] -= 1
            new_names = sorted(nm for nm, c in n_def.items() if c > 0 and nm not in self.name_id)
            dead = {nm for nm, c in n_def.items() if c == 0 and nm in self.name_id}
            # Names whose definers changed and that can have edges, before or after: every
            # file referencing one gets its row recomputed.
            rescan = [nm for nm in moved
                      if min(before[nm], n_def[nm]) <= MAX_DEFINER_FILES]
            if len(rescan) > RESCAN_MAX_NAMES:
                return RefGraph(fis, generation)
            old_names = self.names
            if new_names or dead:
                names = sorted((set(old_names) - dead) | set(new_names))
                g._set_names(names)
                nmap = np.fromiter((g.name_id.get(nm, -1) for nm in old_names),
                                   dtype=np.int64, count=len(old_names))
            else:
                nmap = None
            touched_set = set(touched)
            keep = ~np.isin(def_file, touched)
            dn, df = def_name[keep], def_file[keep]
            if nmap is not None:
                dn = nmap[dn]
            add_n: list[int] = []
            add_f: list[int] = []
            for i in touched:
                ks = [g.name_id[nm] for nm in own[i]]
                add_n.extend(ks)
                add_f.extend([i] * len(ks))
            g._set_defs(np.concatenate([dn, np.asarray(add_n, dtype=np.int64)]),
                        np.concatenate([df, np.asarray(add_f, dtype=np.int64)]))
            w_of = np.full(len(g.names), np.nan)
            if nmap is not None:
                live = nmap >= 0
                w_of[nmap[live]] = self._w_of[live]
            else:
                w_of[:] = self._w_of
            for nm in moved:
                k = g.name_id.get(nm)
                if k is not None:
                    w_of[k] = np.nan
            g._w_of = w_of
            rows = set(touched_set)
            if rescan:
                rows.update(_referencers(fis, rescan))
            touched = sorted(rows)
        else:
            nmap = None
        s_rows = np.asarray(touched, dtype=np.int64)
        # The rows' new edges, and the pairs of the next generation.
        sl, dst, ident, _ = g._block_edges(s_rows)
        nn = g._nn
        old_keys = self._pairs
        if nmap is not None:
            old_keys = self._pair_dst * nn + nmap[self._pair_ident]
        left = self._pair_count - np.bincount(_row_indices(self._sp, s_rows),
                                              minlength=len(self._pairs))
        new_keys = dst * nn + ident
        keys = np.union1d(old_keys[left > 0], new_keys)
        if len(keys) == len(old_keys) and np.array_equal(keys, old_keys):
            pmap = None
        else:
            pos = np.searchsorted(keys, old_keys)
            pos_c = np.minimum(pos, max(len(keys) - 1, 0))
            found = (pos < len(keys)) & (keys[pos_c] == old_keys) if len(keys) else (
                np.zeros(len(old_keys), dtype=bool))
            pmap = np.where(found, pos, -1)
        g._set_pairs(keys)
        pid = np.searchsorted(keys, new_keys)
        w = g._weights(ident)
        wp, sp, si, out = g._rows(len(s_rows), sl, dst, ident, pid, w)
        out_weight = self.out_weight.copy()
        out_weight[s_rows] = out
        g.out_weight = out_weight
        g._wp = _splice_rows(self._wp, s_rows, wp)
        base_sp = self._sp
        if pmap is not None:
            base_sp = sparse.csr_matrix(
                (base_sp.data, _remap(base_sp.indices, pmap, s_rows, base_sp.indptr),
                 base_sp.indptr), shape=(len(self.paths), len(keys)))
        g._sp = _splice_rows(base_sp, s_rows, sp, ncols=len(keys))
        base_si = self._si
        if nmap is not None:
            base_si = sparse.csr_matrix(
                (base_si.data, _remap(base_si.indices, nmap, s_rows, base_si.indptr),
                 base_si.indptr), shape=(len(self.paths), g._nn))
        g._si = _splice_rows(base_si, s_rows, si, ncols=g._nn)
        g._pmap = pmap if pmap is not None else np.arange(len(keys))
        g._finish()
        return g

    # -- edge arrays (tests and reports) -----------------------------------------------------

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(src, dst, identifier, weight) of every edge, in the order of a plain loop."""
        rows = np.arange(len(self.paths), dtype=np.int64)
        sl, dst, ident, _ = self._block_edges(rows)
        return rows[sl], dst, ident, self._weights(ident)

    @property
    def src(self) -> np.ndarray:
        return self.edges()[0]

    @property
    def dst(self) -> np.ndarray:
        return self.edges()[1]

    @property
    def ident(self) -> np.ndarray:
        return self.edges()[2]

    @property
    def weight(self) -> np.ndarray:
        return self.edges()[3]

    @property
    def _pair_of_edge(self) -> np.ndarray:
        _, dst, ident, _ = self.edges()
        return np.searchsorted(self._pairs, dst * self._nn + ident)

    def arrays(self) -> dict[str, object]:
        """The graph's state as plain values (to compare two builds)."""
        def m(a: sparse.spmatrix) -> tuple:
            a = a.tocsr() if not isinstance(a, sparse.csr_matrix) else a
            return (a.shape, a.indptr.tolist(), a.indices.tolist(), a.data.tolist())
        return {
            "paths": self.paths, "names": self.names, "name_id": self.name_id,
            "pairs": self._pairs.tolist(), "out_weight": self.out_weight.tolist(),
            "pt": m(self._wp), "pair_src": m(self._sp), "src_ident": m(self._si),
            "src_ident_csc": (self._src_ident.indptr.tolist(),
                              self._src_ident.indices.tolist(),
                              self._src_ident.data.tolist()),
            "defs": (self._def_name.tolist(), self._def_file.tolist(), self._n_def.tolist()),
            "pair_count": self._pair_count.tolist(),
        }

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
            x = DAMPING * (_matvec(self._pt, prev) + prev[self._dangling].sum() * p) + (
                1 - DAMPING) * p
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
        if self._n_edges == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        rank = self.pagerank(personalization)
        ids = sorted({self.name_id[m] for m in mentioned if m in self.name_id})
        # Each file's rank flows out along its edges, in proportion to their weights.
        out = self.out_weight
        if ids:
            extra = np.asarray(self._src_ident[:, ids].sum(axis=1)).ravel()
            out = out + (MENTIONED_BOOST - 1) * extra
        per_out = np.divide(rank, out, out=np.zeros_like(rank), where=out > 0)
        totals = _matvec(self._pair_src, per_out)
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


def _matvec(m: sparse.csc_matrix, x: np.ndarray) -> np.ndarray:
    """`m @ x` for a CSC matrix with finite, non-negative entries and x >= 0, running only
    through the columns where x is not 0 (in runs: zero columns less than MATVEC_GAP apart
    go along). A skipped column's terms are +0.0, which leaves every sum as it was, so the
    result is the same, bit for bit: each row still adds its terms in column order. Files
    PageRank has not reached yet have rank 0; on the big workspace that is every file but
    the personal ones in the first iteration and about 28% of them at the end."""
    if _csc_matvec is None or m.nnz < MATVEC_MIN_NNZ:
        return m @ x
    nz = np.flatnonzero(x)
    if len(nz) > len(x) * 0.9:
        return m @ x
    y = np.zeros(m.shape[0], dtype=np.result_type(m.dtype, x.dtype))
    if len(nz) == 0:
        return y
    cut = np.flatnonzero(np.diff(nz) > MATVEC_GAP)
    starts = nz[np.concatenate(([0], cut + 1))].tolist()
    ends = (nz[np.concatenate((cut, [len(nz) - 1]))] + 1).tolist()
    ap, ai, ax = m.indptr, m.indices, m.data
    rows = m.shape[0]
    for a, b in zip(starts, ends, strict=True):
        _csc_matvec(rows, b - a, ap[a:b + 1], ai, ax, x[a:b], y)
    return y


def _own_defs(fi: FileIndex) -> frozenset[str]:
    return frozenset(it.name for it in fi.items if it.kind in DEF_KINDS)


def _referencers(fis: list[FileIndex], names: Iterable[str]) -> set[int]:
    """Files whose (sorted) references include one of `names`."""
    names = sorted(set(names))
    out = set()
    for i, fi in enumerate(fis):
        refs = fi.references
        for nm in names:
            j = bisect.bisect_left(refs, nm)
            if j < len(refs) and refs[j] == nm:
                out.add(i)
                break
    return out


def _idx32(a: sparse.csr_matrix) -> sparse.csr_matrix:
    if a.indices.dtype != np.int32:
        a.indices = a.indices.astype(np.int32)
        a.indptr = a.indptr.astype(np.int32)
    return a


def _row_indices(a: sparse.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """The column indices of `rows` (ascending) of a CSR matrix, concatenated."""
    ip = a.indptr
    return np.concatenate([a.indices[ip[r]:ip[r + 1]] for r in rows.tolist()] or
                          [np.zeros(0, dtype=a.indices.dtype)])


def _remap(indices: np.ndarray, mapping: np.ndarray, rows: np.ndarray,
           indptr: np.ndarray) -> np.ndarray:
    """Column indices mapped through `mapping`; the entries of `rows` (replaced anyway, and
    possibly mapped to -1) are set to 0."""
    out = indices.copy()
    for r in rows.tolist():
        out[indptr[r]:indptr[r + 1]] = 0
    return mapping[out].astype(np.int32)


def _splice_rows(old: sparse.csr_matrix, rows: np.ndarray, new: sparse.csr_matrix,
                 ncols: int | None = None) -> sparse.csr_matrix:
    """`old` with its rows `rows` (ascending) replaced by the rows of `new`, in order."""
    ip = old.indptr
    nip = new.indptr
    counts = np.diff(ip)
    counts[rows] = np.diff(nip)
    indptr = np.zeros(len(ip), dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    parts_i, parts_d = [], []
    prev = 0
    for j, r in enumerate(rows.tolist()):
        parts_i += [old.indices[ip[prev]:ip[r]], new.indices[nip[j]:nip[j + 1]]]
        parts_d += [old.data[ip[prev]:ip[r]], new.data[nip[j]:nip[j + 1]]]
        prev = r + 1
    parts_i.append(old.indices[ip[prev]:])
    parts_d.append(old.data[ip[prev]:])
    shape = (old.shape[0], old.shape[1] if ncols is None else ncols)
    out = sparse.csr_matrix(shape, dtype=old.data.dtype)
    out.indptr = indptr.astype(np.int32) if indptr[-1] < 2**31 - 1 else indptr
    out.indices = np.concatenate(parts_i).astype(out.indptr.dtype, copy=False)
    out.data = np.concatenate(parts_d)
    return out


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
