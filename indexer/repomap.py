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
        personal = personalization_for(path, definition_files)
        ranked = graph.iter_ranked(personal, mentioned,
                                   limit=max(64, budget // MAP_TOKENS_PER_PAIR))
        looked: dict[str, tuple[FileIndex, _FileVersion] | None] = {}
        files: dict[str, tuple[FileIndex, _FileVersion]] = {}
        names: dict[str, list[str]] = {}
        score: dict[str, float] = {}
        counted: dict[str, frozenset[int]] = {}
        total = 0
        for r_path, r_name, r_score in ranked:
            if r_path == path or (shown and (r_path, r_name) in shown):
                continue
            got = looked.get(r_path, False)
            if got is False:
                got = looked[r_path] = self._lookup(r_path)
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
                    costs = v.costs or []
                    add = sum(costs[i] for i in new)
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
            text, tokens = self._render(p, fi.content_hash, v, names[p])
            if text:
                shown_names = ", ".join(names[p][:REASON_NAMES]) + (
                    " ..." if len(names[p]) > REASON_NAMES else "")
                out.append(MapFile(p, text, tokens, round(score[p], 6),
                                   f"PageRank {score[p]:.4f}: {shown_names}", fi.content_hash))
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
