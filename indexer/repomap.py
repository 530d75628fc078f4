"""The repository map step: file skeletons ranked by personalised PageRank, within a budget.

`RepoMapper.build(...)` takes (file, name) pairs in rank order from the reference graph
(`rank.py`) while an estimate of their skeleton lines fits the budget (Aider binary-searches
on the count; the estimate only grows with n, so one pass finds the same n), renders each
chosen file's skeleton once and counts it exactly; files of least rank go if the exact total
is over.

Everything that depends only on a file version is cached per (path, content hash) and so
survives index generations that do not touch the file: the skeleton, each name's node set
(nodes and their containers), each node's token estimate, and recent renders with their exact
counts. `warm(...)` fills the estimates of many files with one tokenizer batch (done once per
index generation, for the files new to it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from indexer.items import FileIndex, IndexView
from indexer.rank import RefGraph, personalization_for
from indexer.skeleton import FileSkeleton
from indexer.tokens import TokenCounter

#: The map asks the graph for at most budget / MAP_TOKENS_PER_PAIR pairs (a skeleton line
#: costs 10-20 tokens; fewer pairs than this never fill the budget).
MAP_TOKENS_PER_PAIR = 8
#: File versions kept (skeletons and their estimates) before the cache is cleared.
FILE_CACHE_MAX = 50_000
#: Rendered (file version, names) skeletons kept before the cache is cleared.
RENDER_CACHE_MAX = 20_000
#: Names shown in a map chunk's reason before "...".
REASON_NAMES = 4


@dataclass(frozen=True, slots=True)
class MapFile:
    """One file of the map: its skeleton text and exact tokens as a prompt chunk."""

    path: str
    text: str
    tokens: int
    score: float
    reason: str
    content_hash: str


class _FileVersion:
    """Per file version: the skeleton, per-name node sets and per-node token estimates."""

    __slots__ = ("closure", "costs", "header", "sk")

    def __init__(self, sk: FileSkeleton, header: int) -> None:
        self.sk = sk
        self.header = header                    # `<|file_sep|>{path}\n` + the final "\n"
        self.costs: list[int] | None = None     # per node: tokens of its own lines
        self.closure: dict[str, tuple[frozenset[int], int]] = {}

    def nodes_of(self, name: str) -> tuple[frozenset[int], int]:
        """The nodes `name` brings into a skeleton (its items and their containers) and
        their summed token estimate; `costs` must be filled."""
        got = self.closure.get(name)
        if got is None:
            out: set[int] = set()
            for i in self.sk.indices([name]):
                out.add(i)
                out.update(self.sk.ancestors(i))
            costs = self.costs or []
            got = self.closure[name] = (frozenset(out), sum(costs[i] for i in out))
        return got


class RepoMapper:
    """Builds repository maps for one index, caching per file version."""

    def __init__(self, index: IndexView, tokens: TokenCounter,
                 chunk_tokens: Callable[[str, str], int]) -> None:
        self.index = index
        self.tokens = tokens
        self.chunk_tokens = chunk_tokens
        self._files: dict[tuple[str, str], _FileVersion] = {}
        self._renders: dict[tuple[str, str, frozenset[str]], tuple[str, int]] = {}
        self._table: _PairTable | None = None

    def skeleton(self, fi: FileIndex) -> FileSkeleton:
        """The skeleton of a file version (cached)."""
        return self._version(fi).sk

    def _version(self, fi: FileIndex) -> _FileVersion:
        key = (fi.path, fi.content_hash)
        v = self._files.get(key)
        if v is None:
            v = self._put(fi, _FileVersion(FileSkeleton(fi), 2 + self.tokens(fi.path)))
        return v

    def _put(self, fi: FileIndex, v: _FileVersion) -> _FileVersion:
        if len(self._files) > FILE_CACHE_MAX:
            self._files.clear()
        self._files[(fi.path, fi.content_hash)] = v
        return v

    def warm(self, files: Iterable[FileIndex]) -> int:
        """Token estimates of every skeleton node of `files` not seen yet, counted in one
        tokenizer batch; returns how many file versions were new."""
        todo: list[_FileVersion] = []
        new: list[tuple[FileIndex, FileSkeleton]] = []
        for fi in files:
            v = self._files.get((fi.path, fi.content_hash))
            if v is None:
                new.append((fi, FileSkeleton(fi)))
            elif v.costs is None:
                todo.append(v)
        # New versions' path headers go into the same batch (one tokenizer call, not one
        # per file).
        heads = iter(self.tokens.count_many([fi.path for fi, _ in new]))
        for fi, sk in new:
            v = self._put(fi, _FileVersion(sk, 2 + next(heads)))
            todo.append(v)
        texts = [_node_text(v.sk, i) for v in todo for i in range(len(v.sk.nodes))]
        counts = iter(self.tokens.count_many(texts))
        for v in todo:
            v.costs = [next(counts) for _ in v.sk.nodes]
        return len(todo)

    def _lookup(self, path: str) -> tuple[FileIndex, _FileVersion] | None:
        """The file's index record and version, its node estimates filled."""
        fi = self.index.file(path)
        if fi is None:
            return None
        v = self._version(fi)
        if v.costs is None:
            v.costs = self.tokens.count_many(_node_text(v.sk, i) for i in range(len(v.sk.nodes)))
        return fi, v

    def build(self, graph: RefGraph, path: str, definition_files: list[str],
              mentioned: set[str], shown: set[tuple[str, str]], budget: int) -> list[MapFile]:
        """The map for a cursor in `path`, personalised towards it and `definition_files`;
        `mentioned` names weigh more, `shown` (path, name) pairs are already in the context."""
        if budget <= 0 or len(graph) == 0:
            return []
        table = self._table_of(graph)
        personal = personalization_for(path, definition_files)
        order, scores = graph.ranked_pairs(personal, mentioned,
                                           limit=max(64, budget // MAP_TOKENS_PER_PAIR))
        names, score = table.walk(graph, order, scores, path, shown, budget)
        out = []
        for f in sorted(names, key=graph.paths.__getitem__):
            p = graph.paths[f]
            fi, v = table.files[f]  # type: ignore[misc]
            text, tokens = self._render(p, fi.content_hash, v, names[f])
            if text:
                shown_names = ", ".join(names[f][:REASON_NAMES]) + (
                    " ..." if len(names[f]) > REASON_NAMES else "")
                out.append(MapFile(p, text, tokens, round(score[f], 6),
                                   f"PageRank {score[f]:.4f}: {shown_names}", fi.content_hash))
        over = sum(m.tokens for m in out) - budget
        if over > 0:
            drop = set()
            for m in sorted(out, key=lambda m: (m.score, m.path)):
                if over <= 0:
                    break
                drop.add(m.path)
                over -= m.tokens
            out = [m for m in out if m.path not in drop]
        return out

    def prepare(self, graph: RefGraph) -> None:
        """Build the walk's arrays for a new graph now (part of the generation build)
        rather than in the first request that uses it."""
        self._table_of(graph)

    def _table_of(self, graph: RefGraph) -> _PairTable:
        """The walk's arrays for `graph` (built once per graph, i.e. per index generation)."""
        t = self._table
        if t is None or t.graph is not graph:
            prev = getattr(graph, "_prev", None)
            if t is not None and prev is not None and prev() is t.graph:
                t = self._table = t.updated(graph, self._lookup)
            else:
                t = self._table = _PairTable(graph, self._lookup)
        return t

    def _render(self, path: str, content_hash: str, v: _FileVersion,
                names: list[str]) -> tuple[str, int]:
        key = (path, content_hash, frozenset(names))
        got = self._renders.get(key)
        if got is None:
            if len(self._renders) > RENDER_CACHE_MAX:
                self._renders.clear()
            text = v.sk.render(names).rstrip("\n")
            got = self._renders[key] = (text, self.chunk_tokens(path, text) if text else 0)
        return got


def _node_text(sk: FileSkeleton, i: int) -> str:
    """Node `i`'s own skeleton lines as they appear inside a chunk (each after a "\\n")."""
    return "\n" + "".join(sk.own_lines(i)).rstrip("\n") if sk.nodes[i].parent != -2 else ""


class _PairTable:
    """Per reference graph: every (file, name) pair's skeleton nodes as global node ids, the
    nodes' token estimates and each file's header, so that the map's greedy walk over the
    ranked pairs runs as array operations.

    The walk is the one a plain loop over the ranked pairs does: skip the current file's
    pairs and pairs already shown; a pair adds the estimate of its nodes not counted yet (and
    its file's header, the first time); a pair adding no node is skipped; stop before the
    first pair that would go over the budget."""

    def __init__(self, graph: RefGraph,
                 lookup: Callable[[str], tuple[FileIndex, _FileVersion] | None]) -> None:
        self.graph = graph
        self.files = [lookup(p) for p in graph.paths]
        offsets: list[int] = []
        costs: list[int] = []
        headers = []
        for got in self.files:
            offsets.append(len(costs))
            if got is None:
                headers.append(0)
                continue
            v = got[1]
            costs.extend(v.costs or [0] * len(v.sk.nodes))
            headers.append(v.header)
        self.node_cost = np.asarray(costs, dtype=np.int64)
        self.header = np.asarray(headers, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        names = graph.names
        ptr = [0]
        nodes: list[int] = []
        for f, k in zip(graph.pair_file.tolist(), graph.pair_name.tolist(), strict=True):
            got = self.files[f]
            if got is not None:
                base = offsets[f]
                nodes.extend(sorted(base + i for i in got[1].nodes_of(names[k])[0]))
            ptr.append(len(nodes))
        self.ptr = np.asarray(ptr, dtype=np.int64)
        self.nodes = np.asarray(nodes, dtype=np.int64)

    def updated(self, graph: RefGraph,
                lookup: Callable[[str], tuple[FileIndex, _FileVersion] | None]) -> _PairTable:
        """The table of `graph`, made by `RefGraph.updated` from this table's graph: the
        changed files' nodes get new ids (appended; node ids only need to be distinct), and
        only the pairs that are new or belong to a changed file are looked up again."""
        t = object.__new__(_PairTable)
        t.graph = graph
        changed: list[int] = list(graph._changed_nodes)  # type: ignore[attr-defined]
        files = list(self.files)
        offsets = self.offsets.copy()
        header = self.header.copy()
        costs = [self.node_cost]
        n_cost = len(self.node_cost)
        for f in changed:
            got = files[f] = lookup(graph.paths[f])
            offsets[f] = n_cost
            if got is None:
                header[f] = 0
                continue
            v = got[1]
            c = np.asarray(v.costs or [0] * len(v.sk.nodes), dtype=np.int64)
            costs.append(c)
            n_cost += len(c)
            header[f] = v.header
        t.files, t.offsets, t.header = files, offsets, header
        t.node_cost = np.concatenate(costs)
        pmap = graph._pmap  # type: ignore[attr-defined]
        n_new = len(graph.pair_file)
        inv = np.full(n_new, -1, dtype=np.int64)
        ok = pmap >= 0
        inv[pmap[ok]] = np.flatnonzero(ok)
        pf = graph.pair_file
        is_changed = np.zeros(len(graph.paths), dtype=bool)
        is_changed[changed] = True
        fresh = (inv < 0) | is_changed[pf]
        safe = np.where(fresh, 0, inv)
        lens = np.where(fresh, 0, self.ptr[safe + 1] - self.ptr[safe])
        fresh_ids = np.flatnonzero(fresh).tolist()
        names = graph.names
        lists = []
        for p, f, k in zip(fresh_ids, pf[fresh_ids].tolist(),
                           graph.pair_name[fresh_ids].tolist(), strict=True):
            got = files[f]
            base = int(offsets[f])
            lst = sorted(base + i for i in got[1].nodes_of(names[k])[0]) if got else []
            lists.append(lst)
            lens[p] = len(lst)
        ptr = np.zeros(n_new + 1, dtype=np.int64)
        np.cumsum(lens, out=ptr[1:])
        nodes = np.empty(int(ptr[-1]), dtype=np.int64)
        reuse = np.flatnonzero(~fresh)
        rl = lens[reuse]
        total = int(rl.sum())
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(rl) - rl, rl)
        nodes[np.repeat(ptr[reuse], rl) + within] = self.nodes[
            np.repeat(self.ptr[inv[reuse]], rl) + within]
        for p, lst in zip(fresh_ids, lists, strict=True):
            nodes[ptr[p]:ptr[p + 1]] = lst
        t.ptr, t.nodes = ptr, nodes
        return t

    def walk(self, graph: RefGraph, order: np.ndarray, scores: np.ndarray, path: str,
             shown: set[tuple[str, str]], budget: int,
             ) -> tuple[dict[int, list[str]], dict[int, float]]:
        """Names (in rank order) and summed scores per file id of the pairs the walk takes."""
        pair_file = graph.pair_file
        keep = pair_file[order] != graph.node.get(path, -1)
        if shown:
            skip = [i for p, n in shown if (i := graph.pair_index(p, n)) >= 0]
            if skip:
                keep &= ~np.isin(order, skip)
        starts = self.ptr[order]
        lens = self.ptr[order + 1] - starts
        keep &= lens > 0
        order, scores, starts, lens = order[keep], scores[keep], starts[keep], lens[keep]
        if len(order) == 0:
            return {}, {}
        files = pair_file[order]
        # Every node of every pair, in rank order; a node counts at its first occurrence.
        total = int(lens.sum())
        ends = np.cumsum(lens)
        pos = np.repeat(np.arange(len(order)), lens)
        flat = self.nodes[np.arange(total) - np.repeat(ends - lens - starts, lens)]
        first = np.zeros(total, dtype=bool)
        first[np.unique(flat, return_index=True)[1]] = True
        add = np.bincount(pos[first], weights=self.node_cost[flat[first]],
                          minlength=len(order)).astype(np.int64)
        new = np.bincount(pos[first], minlength=len(order)) > 0
        head = np.unique(files, return_index=True)[1]
        add[head] += self.header[files[head]]
        stop = int(np.searchsorted(np.cumsum(add), budget, side="right"))
        taken = np.flatnonzero(new[:stop])
        t_files = files[taken].tolist()
        t_names = graph.pair_name[order[taken]].tolist()
        names_of = graph.names
        out: dict[int, list[str]] = {}
        for f, k in zip(t_files, t_names, strict=True):
            got = out.get(f)
            if got is None:
                out[f] = [names_of[k]]
            else:
                got.append(names_of[k])
        # Summed in rank order, as a loop would (bincount adds its weights in order).
        sums = np.bincount(files[taken], weights=scores[taken], minlength=len(graph.paths))
        return out, {f: float(sums[f]) for f in out}
