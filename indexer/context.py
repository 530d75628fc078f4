"""Context assembly: the prompt's repository part and the current file's FIM split.

`ContextAssembler(index, count_tokens, special)` keeps the caches (token counts per piece,
line and chunk, the resolver and reference graph per index generation, the last repository
part); `assemble(path, text, line, col, budget=...)` returns a `Context`.
`assemble_context(...)` is the one-shot form. Pipeline steps: signals around the cursor
(`signals.py`), candidates and their resolution (here, with `resolve.py`), the repository map
(`repomap.py`, ranked by `rank.py`), the FIM split (`fim.py`); token counts come from
`tokens.TokenCounter` (pass one with `additive=True` for the engine's byte-level BPE: counts
are then sums of cached piece counts, and a new chunk rarely needs the tokenizer).

The repository part (everything before the current file) is, in prompt order:
1. the repository map: skeletons of the files ranked by personalised PageRank (`rank.py`),
   ordered by path;
2. the ranked cross-file chunks, least relevant first so that the best one sits right before
   the current file: the trait of an `impl Trait for T`, the enums matched on, the types in the
   enclosing function's signature, definitions of the identifiers the enclosing item uses
   (resolved through `use` paths and modules by `resolve.py`, by name otherwise), and
   recently edited files.

Prefix caching: the repository part depends only on (index generation, enclosing item
identity, budget) and is recomputed only on named events: the cursor leaves its enclosing
item, a save (`on_save`), or an index update that changes a file a chosen chunk came from.
Typing inside an item therefore leaves it byte-identical, and in the engine's "spm" order only
the FIM prefix at the very end of the prompt changes.

Invariants: no model calls, no network, nothing of ours imported; the same input gives the
same bytes (ties are broken by path and position, never by hash or dict order). Token counts:
each chunk is one `<|file_sep|>{path}\\n{text}\\n` piece of the engine's prompt, which the
engine tokenizes on its own, so a chunk's cached count is exact and totals are sums. Chunk
counts that needed the tokenizer are also kept in the index's token-count cache
(`get_token_count`/`put_token_count`, keyed by the chunk's content hash) when it has one.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from indexer.fim import FIM_SLACK, LineCounter, full_sizes, split_fim, split_lines
from indexer.items import FileIndex, IndexView, Item
from indexer.rank import RefGraph
from indexer.repomap import RepoMapper
from indexer.resolve import Resolution, Resolver
from indexer.signals import (
    ItemKey,
    extract_identifiers,
    find_enclosing,
    item_key,
    match_enums,
    signature_types,
)
from indexer.skeleton import definition_text
from indexer.tokens import TokenCounter

log = logging.getLogger(__name__)

CHUNK_KINDS = ("definition", "signature-type", "trait", "enum", "recent", "repo-map")
#: Special-token roles the prompt uses (keys of `engine.prompt.special_token_strings()`).
REQUIRED_SPECIAL = ("file_sep", "repo_name", "fim_prefix", "fim_suffix", "fim_middle")

# Scores of the ranked cross-file chunks (hand-set so that the ranking tests read naturally:
# what the cursor's item is *about* first, then what it uses).
SCORE_IMPL_TRAIT = 300.0
SCORE_MATCH_ENUM = 250.0
SCORE_SIGNATURE_TYPE = 200.0
SCORE_DEFINITION = 100.0
#: Each further use of an identifier in the item adds this share, up to DEFINITION_MAX_REPEAT.
DEFINITION_REPEAT_SHARE = 0.2
DEFINITION_MAX_REPEAT = 4
#: A name found only by name (no `use` or module evidence) counts this much, split over its
#: candidates; names with more than MAX_BY_NAME candidates are too ambiguous to show.
BY_NAME_FACTOR = 0.5
MAX_BY_NAME = 3
#: Method calls (`x.area()`) are resolved by name only, so they rank below plain names.
METHOD_CALL_FACTOR = 0.4
#: Dependency and std items: the model knows them better than workspace code.
READ_ONLY_FACTOR = 0.8
SCORE_RECENT = 60.0
RECENT_MAX_FILES = 3

# Budget split.
#: Share of the budget the current file may take (prefix + suffix) when it is long.
CURRENT_FILE_SHARE = 0.4
#: Share of the FIM budget kept for the suffix when both sides must be cut.
SUFFIX_SHARE = 0.25
#: Room left for the current file to grow by typing before the repository part is redone.
GROWTH_TOKENS = 256
#: Share of the repository part the ranked chunks may take; the map fills the rest.
DEFINITIONS_SHARE = 0.5
#: A single ranked chunk may take at most this share of the ranked chunks' budget in full;
#: larger ones are shown as their signature or skeleton.
DEFINITION_MAX_SHARE = 0.25
#: Exact token counts cached before the cache is cleared.
CHUNK_CACHE_MAX = 50_000
#: Sources and FIM cut lines of file versions kept before those caches are cleared.
SOURCE_CACHE_MAX = 512
#: Workspaces with at most this much source have every line of every file counted when an
#: index generation is built (one tokenizer batch; later generations count only the files
#: they changed), so that the cursor's first visit to a file costs look-ups. Larger ones
#: count a file's lines on its first visit.
PRECOUNT_MAX_BYTES = 8_000_000

_TYPE_KINDS = frozenset({"struct", "enum", "union", "trait", "type"})


@dataclass(frozen=True, slots=True)
class Chunk:
    """One context piece: `<|file_sep|>{path}\\n{text}\\n` in the prompt."""

    path: str
    text: str
    kind: str           # one of CHUNK_KINDS
    reason: str         # why it was chosen
    tokens: int         # its exact tokens in the prompt (file separator included)
    score: float
    name: str = ""      # the item it shows ("" for a file skeleton)
    source_hash: str = ""   # content hash of the file it came from



@dataclass(frozen=True)
class Context:
    """An assembled prompt, as the engine's pieces; `prompt_text()` shows it as text."""

    repo_name: str
    path: str
    prefix: str
    suffix: str
    chunks: tuple[Chunk, ...]       # prompt order
    budget: int
    repo_tokens: int                # `<|repo_name|>{repo}\n` and every chunk
    file_tokens: int                # `<|file_sep|>{path}\n` and the FIM part (estimate)
    prefix_tokens: int
    suffix_tokens: int
    enclosing: ItemKey | None
    recomputed: bool                # the repository part was computed for this request
    truncated_prefix: bool = False
    truncated_suffix: bool = False
    special: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def total_tokens(self) -> int:
        return self.repo_tokens + self.file_tokens

    def context_files(self) -> tuple[tuple[str, str], ...]:
        """(path, text) per chunk, for `engine.prompt.ContextFile`."""
        return tuple((c.path, c.text) for c in self.chunks)

    def ranked(self) -> tuple[Chunk, ...]:
        """The ranked cross-file chunks, best first (the map comes after them)."""
        return tuple(sorted(self.chunks, key=lambda c: (c.kind == "repo-map", -c.score,
                                                        c.path, c.name)))

    def segments(self, order: str = "spm") -> list[tuple[bool, str]]:
        """The prompt as (is_special, text) pieces in the engine's order."""
        s = self.special
        out: list[tuple[bool, str]] = [(True, s["repo_name"]), (False, f"{self.repo_name}\n")]
        for c in self.chunks:
            out += [(True, s["file_sep"]), (False, f"{c.path}\n{c.text}\n")]
        out += [(True, s["file_sep"]), (False, f"{self.path}\n")]
        pre = [(True, s["fim_prefix"]), (False, self.prefix)]
        suf = [(True, s["fim_suffix"]), (False, self.suffix)]
        out += [*suf, *pre] if order == "spm" else [*pre, *suf]
        out.append((True, s["fim_middle"]))
        return out

    def prompt_text(self, order: str = "spm") -> str:
        """The whole prompt as text, special tokens written as their strings."""
        return "".join(t for _, t in self.segments(order))

    def repo_text(self) -> str:
        """The repository part as text (what must stay byte-identical while typing)."""
        n = 2 + 2 * len(self.chunks)
        return "".join(t for _, t in self.segments()[:n])


@dataclass
class _RepoPart:
    key: tuple
    chunks: tuple[Chunk, ...]
    tokens: int
    sources: dict[str, str]     # path -> content hash of every chunk's file
    checked_generation: int


@dataclass
class _Candidate:
    item: Item
    kind: str
    score: float
    reason: str


class ContextAssembler:
    """Assembles contexts for one index, keeping the caches between requests."""

    def __init__(
        self,
        index: IndexView,
        count_tokens: Callable[[str], int] | TokenCounter,
        special: Mapping[str, str],
        *,
        repo_name: str = "",
    ) -> None:
        missing = [k for k in REQUIRED_SPECIAL if k not in special]
        if missing:
            raise ValueError(f"Expected special tokens {REQUIRED_SPECIAL}, missing {missing}")
        self.index = index
        self.special = dict(special)
        self.repo_name = repo_name
        self.tokens = (count_tokens if isinstance(count_tokens, TokenCounter)
                       else TokenCounter(count_tokens))
        self.count = LineCounter(self.tokens, count_many=self.tokens.count_many)
        self.mapper = RepoMapper(index, self.tokens, self.chunk_tokens)
        self._exact: dict[str, int] = {}
        self._generation: int | None = None
        self._resolver: Resolver | None = None
        self._graph: RefGraph | None = None
        self._snapshot: _Snapshot | None = None
        self._bytes: dict[tuple[str, str], bytes] = {}
        self._cuts: dict[tuple[str, str], list[int]] = {}
        self._repo: _RepoPart | None = None
        #: (path, content hash) -> the indexed text's lines and their exact counts, counted
        #: per generation (`PRECOUNT_MAX_BYTES`); handed to `count` on the first visit.
        self._precounted: dict[tuple[str, str], tuple[list[str], list[int]]] = {}
        self._seeded: set[tuple[str, str]] = set()     # precounted and handed over
        self.recomputations = 0

    # -- named events ----------------------------------------------------------------------

    def on_save(self, path: str) -> None:
        """A file was saved: the next request recomputes the repository part."""
        self._repo = None

    def invalidate(self) -> None:
        """Drop the repository part (and keep the per-generation caches)."""
        self._repo = None

    # -- the request -----------------------------------------------------------------------

    def assemble(
        self,
        path: str,
        text: str,
        line: int,
        col: int,
        *,
        budget: int,
        recent: Sequence[str] = (),
        current: FileIndex | None = None,
    ) -> Context:
        """The context for a cursor at (line, col), 0-based, col in code points."""
        if budget < 1:
            raise ValueError(f"Expected a budget >= 1 token, got {budget}")
        fi = current if current is not None else self.index.file(path)
        lines = split_lines(text)
        item = find_enclosing(fi, line) if fi is not None else None
        key_item = item_key(fi, item) if fi is not None and item is not None else None
        overhead = (3 + self.count(f"{self.repo_name}\n") + self.count(f"{path}\n") + 3)
        key = (path, key_item, budget)
        recomputed = False
        repo = self._repo
        if fi is not None and self._precounted:
            pre = self._precounted.pop((path, fi.content_hash), None)
            if pre is not None:
                self.count.seed(*pre)
                self._seeded.add((path, fi.content_hash))
        counts = self.count.lines(lines)
        if repo is None or repo.key != key or not self._still_valid(repo):
            file_now = sum(counts)
            reserve = min(file_now + GROWTH_TOKENS, int(budget * CURRENT_FILE_SHARE))
            repo_budget = max(0, budget - overhead - reserve)
            repo = self._repo = self._compute_repo(key, path, fi, item, text, repo_budget,
                                                   recent)
            recomputed = True
        avail = max(0, int((budget - overhead - repo.tokens) * (1 - FIM_SLACK)))
        line = min(line, len(lines))
        pre_full, suf_full = full_sizes(lines, line, col, self.count, counts)
        # A cut suffix gets a fixed share, so that typing (a growing prefix) leaves it alone.
        s_budget = suf_full if pre_full + suf_full <= avail else min(
            suf_full, int(avail * SUFFIX_SHARE))
        split = split_fim(lines, line, col, prefix_budget=avail - s_budget,
                          suffix_budget=s_budget, counter=self.count,
                          boundaries=self._boundaries(fi), counts=counts)
        file_tokens = 1 + self.count(f"{path}\n") + 3 + split.prefix_tokens + split.suffix_tokens
        return Context(
            repo_name=self.repo_name, path=path, prefix=split.prefix, suffix=split.suffix,
            chunks=repo.chunks, budget=budget,
            repo_tokens=1 + self.count(f"{self.repo_name}\n") + repo.tokens,
            file_tokens=file_tokens, prefix_tokens=split.prefix_tokens,
            suffix_tokens=split.suffix_tokens, enclosing=key_item, recomputed=recomputed,
            truncated_prefix=split.truncated_prefix, truncated_suffix=split.truncated_suffix,
            special=self.special,
        )

    # -- caches ----------------------------------------------------------------------------

    def _still_valid(self, repo: _RepoPart) -> bool:
        """False when a file a chosen chunk came from changed in the index."""
        gen = self.index.generation
        if gen == repo.checked_generation:
            return True
        for p, h in repo.sources.items():
            fi = self.index.file(p)
            if fi is None or fi.content_hash != h:
                return False
        repo.checked_generation = gen
        return True

    def _per_generation(self) -> tuple[Resolver, RefGraph]:
        """The resolver and reference graph of the index generation; a new generation also
        counts the skeleton lines of the workspace files it changed (one tokenizer batch)."""
        gen = self.index.generation
        if self._generation != gen or self._resolver is None or self._graph is None:
            # One read of every file record per generation, shared by the three builders
            # (the store's record cache is far smaller than a big workspace).
            # The builders allocate millions of small acyclic objects: with the cyclic
            # collector on, its full passes over them took a large share of the build
            # (nothing they build is cyclic; refcounting frees the last generation's).
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                snap = _Snapshot(self.index, self._snapshot)
                changed = snap.changed
                # The next generation updates the previous one's resolver and graph for the
                # files that changed (equal to a fresh build; see `Resolver.update` and
                # `RefGraph.updated`), or builds them anew.
                if changed is None or self._resolver is None or not self._resolver.update(
                        snap, changed):
                    self._resolver = Resolver(snap)
                if changed is None or self._graph is None:
                    self._graph = RefGraph(snap.records.values(), gen)
                else:
                    self._graph = self._graph.updated(snap.records.values(), gen, changed)
                self._generation = gen
                self._snapshot = snap
                # The map reads file records of this generation from the snapshot too.
                self.mapper.index = snap
                warm = self._graph.paths if changed is None else sorted(changed)
                self.mapper.warm(fi for p in warm if (fi := snap.records.get(p)) is not None
                                 and not fi.read_only)
                self.mapper.prepare(self._graph)
                self._precount(snap)
            finally:
                # Leave the long-lived records out of later collections (a full pass over
                # them, on the first request after the build, took over a second).
                gc.freeze()
                if was_enabled:
                    gc.enable()
        return self._resolver, self._graph

    def _precount(self, snap: _Snapshot) -> None:
        """Count the lines of the generation's workspace files not counted yet (all of them
        in one tokenizer batch), when the workspace is at most `PRECOUNT_MAX_BYTES`."""
        files = [fi for fi in snap.records.values() if not fi.read_only]
        if sum(fi.size for fi in files) > PRECOUNT_MAX_BYTES:
            self._precounted.clear()
            self._seeded.clear()
            return
        keep = {(fi.path, fi.content_hash) for fi in files}
        self._precounted = {k: v for k, v in self._precounted.items() if k in keep}
        self._seeded &= keep
        todo: list[tuple[tuple[str, str], list[str]]] = []
        for fi in files:
            key = (fi.path, fi.content_hash)
            if key not in self._precounted and key not in self._seeded:
                text = snap.text(fi.path)
                if text is not None:
                    todo.append((key, split_lines(text)))
        if not todo:
            return
        counts = iter(self.tokens.count_many([s for _, lines in todo for s in lines]))
        for key, lines in todo:
            self._precounted[key] = (lines, [next(counts) for _ in lines])

    def _source(self, fi: FileIndex) -> bytes:
        key = (fi.path, fi.content_hash)
        data = self._bytes.get(key)
        if data is None:
            if len(self._bytes) > SOURCE_CACHE_MAX:
                self._bytes.clear()
            data = self._bytes[key] = (self.index.text(fi.path) or "").encode("utf-8")
        return data

    def _boundaries(self, fi: FileIndex | None) -> list[int]:
        """Lines where top-level items start or end (clean FIM cuts), per file version."""
        if fi is None:
            return []
        key = (fi.path, fi.content_hash)
        cuts = self._cuts.get(key)
        if cuts is None:
            if len(self._cuts) > SOURCE_CACHE_MAX:
                self._cuts.clear()
            found = set()
            for n in self.mapper.skeleton(fi).nodes:
                if n.parent == -1:
                    found.add(n.item.outer_start_line or n.item.start_line)
                    found.add(n.item.end_line + 1)
            cuts = self._cuts[key] = sorted(found)
        return cuts

    def chunk_tokens(self, path: str, text: str) -> int:
        """Exact tokens of one chunk in the prompt: `<|file_sep|>` + `{path}\\n{text}\\n`.

        Cached here by text, and in the index's token-count cache (`get_token_count`, keyed
        by the chunk's content hash) when counting it would need the tokenizer."""
        piece = f"{path}\n{text}\n"
        n = self._exact.get(piece)
        if n is None:
            if len(self._exact) > CHUNK_CACHE_MAX:
                self._exact.clear()
            n = self._exact[piece] = 1 + self._count_chunk(piece)
        return n

    def _count_chunk(self, piece: str) -> int:
        n = self.tokens.cached(piece)
        if n is not None:
            return n
        get = getattr(self.index, "get_token_count", None)
        put = getattr(self.index, "put_token_count", None)
        if not self.tokens.name or get is None or put is None:
            return self.tokens(piece)
        key = chunk_count_key(piece)
        n = get(key, self.tokens.name)
        if n is None:
            n = self.tokens(piece)
            put(key, self.tokens.name, n)
        return n

    # -- the repository part ---------------------------------------------------------------

    def _compute_repo(self, key: tuple, path: str, fi: FileIndex | None, item: Item | None,
                      live_text: str, budget: int, recent: Sequence[str]) -> _RepoPart:
        self.recomputations += 1
        resolver, graph = self._per_generation()
        region = self._region(path, fi, item, live_text)
        uses = extract_identifiers(region)
        cands = self._candidates(path, item, region, uses, resolver)
        cands += self._recent(path, recent)
        chosen = self._choose(cands, int(budget * DEFINITIONS_SHARE), path)
        used = sum(c.tokens for c in chosen)
        mentioned = {p[-1] for p, _ in uses}
        shown = {(c.path, c.name) for c in chosen if c.kind != "recent"}
        repo_map = [Chunk(m.path, m.text, "repo-map", m.reason, m.tokens, m.score, "",
                          m.content_hash)
                    for m in self.mapper.build(graph, path, [c.path for c in chosen],
                                               mentioned, shown, budget - used)]
        chunks = tuple(sorted(repo_map, key=lambda c: c.path)) + tuple(
            sorted(chosen, key=lambda c: (c.score, _neg_path(c.path), c.name)))
        sources = {c.path: c.source_hash for c in chunks}
        return _RepoPart(key, chunks, sum(c.tokens for c in chunks), sources,
                         self.index.generation)

    def _region(self, path: str, fi: FileIndex | None, item: Item | None, live: str) -> str:
        """The enclosing item's text (the whole file outside any item), from the index."""
        src = self._source(fi) if fi is not None and self.index.text(path) is not None else (
            live.encode("utf-8"))
        if item is None:
            return src.decode("utf-8", "replace")
        return src[item.outer_start_byte or item.start_byte:item.end_byte].decode(
            "utf-8", "replace")

    def _candidates(self, path: str, item: Item | None, region: str,
                    uses: Counter[tuple[tuple[str, ...], str]],
                    resolver: Resolver) -> list[_Candidate]:
        out: list[_Candidate] = []

        def add(res: Resolution | None, kind: str, score: float, why: str,
                want: frozenset[str] | None = None) -> None:
            if res is None:
                return
            items = [it for it in res.items if want is None or it.kind in want]
            items = [_definition_target(it, resolver) for it in items]
            items = [it for it in items if it is not None and it.path != path]
            if not items:
                return
            if res.by_name:
                if len(items) > MAX_BY_NAME:
                    return
                score *= BY_NAME_FACTOR / len(items)
            for it in items:
                s = score * (READ_ONLY_FACTOR if _read_only(it) else 1.0)
                out.append(_Candidate(it, kind, s, f"{why} ({res.how})"))

        if item is not None:
            if item.trait_name:
                segs = tuple(item.trait_name.split("::"))
                res = resolver.resolve_path(segs, path) or resolver.resolve_name(segs[-1], path)
                add(res, "trait", SCORE_IMPL_TRAIT,
                    f"trait of impl {item.trait_name} for {item.self_type}", frozenset({"trait"}))
            if item.kind in ("fn", "method", "trait_fn"):
                for segs in signature_types(item):
                    res = (resolver.resolve_path(segs, path) if len(segs) > 1 else None) or (
                        resolver.resolve_name(segs[-1], path))
                    add(res, "signature-type", SCORE_SIGNATURE_TYPE,
                        f"type {'::'.join(segs)} in the signature of {item.name}", _TYPE_KINDS)
            for segs, why in match_enums(region, item):
                if segs == ("Self",) and item.self_type:
                    segs = (item.self_type,)
                res = (resolver.resolve_path(segs, path) if len(segs) > 1
                       else resolver.resolve_name(segs[0], path))
                add(res, "enum", SCORE_MATCH_ENUM, why, frozenset({"enum"}))
        for (segs, how), n in sorted(uses.items()):
            score = SCORE_DEFINITION * (1 + DEFINITION_REPEAT_SHARE
                                        * min(n - 1, DEFINITION_MAX_REPEAT))
            name = "::".join(segs)
            if how == "method":
                res = resolver.resolve_name(segs[-1], path)
                if res is not None:
                    methods = [it for it in res.items if it.kind in ("method", "trait_fn")]
                    # A trait's declaration stands for all of its impls.
                    decls = [it for it in methods if it.kind == "trait_fn"]
                    res = Resolution(tuple(decls or methods), "method call, by name",
                                     by_name=True)
                add(res, "definition", score * METHOD_CALL_FACTOR, f"method .{name}() used")
                continue
            if len(segs) > 1:
                res = resolver.resolve_path(segs, path)
                if res is None and segs[0][:1].isupper():
                    res = resolver.resolve_name(segs[0], path)
            else:
                res = resolver.resolve_name(segs[0], path)
            add(res, "definition", score, f"{name} used {n}x" if n > 1 else f"{name} used")
        return out

    def _recent(self, path: str, recent: Sequence[str]) -> list[_Candidate]:
        out = []
        for rank, p in enumerate([p for p in recent if p != path][:RECENT_MAX_FILES]):
            fi = self.index.file(p)
            if fi is not None and fi.items:
                top = fi.items[0]
                out.append(_Candidate(top, "recent", SCORE_RECENT / (rank + 1),
                                      f"recently edited (#{rank + 1})"))
        return out

    def _choose(self, cands: list[_Candidate], budget: int, path: str) -> list[Chunk]:
        """The best candidates, one chunk per item, within `budget` tokens."""
        best: dict[tuple[str, int, str], _Candidate] = {}
        for c in cands:
            k = (c.item.path, c.item.start_byte, "recent" if c.kind == "recent" else "")
            if k not in best or c.score > best[k].score:
                best[k] = c
        order = sorted(best.values(), key=lambda c: (-c.score, c.item.path, c.item.start_byte))
        chosen: list[Chunk] = []
        left = budget
        cap = int(budget * DEFINITION_MAX_SHARE)
        for c in order:
            if left <= 0:
                break
            chunk = self._definition_chunk(c, cap, left)
            if chunk is not None:
                chosen.append(chunk)
                left -= chunk.tokens
        return chosen

    def _definition_chunk(self, c: _Candidate, cap: int, left: int) -> Chunk | None:
        it = c.item
        fi = self.index.file(it.path)
        if fi is None:
            return None
        sk = self.mapper.skeleton(fi)
        if c.kind == "recent":
            texts = [sk.render_indices({i for i, n in enumerate(sk.nodes) if n.parent == -1})]
        else:
            container = sk.container_of(it)
            src = self._source(fi)
            texts = [definition_text(it, src, container, full=True)]
            if it.kind in ("struct", "enum", "union", "trait"):
                texts.append(sk.render_indices(sk.indices([it.name]) & {
                    i for i, n in enumerate(sk.nodes) if n.item == it}))
            texts.append(definition_text(it, src, container, full=False))
        for i, text in enumerate(texts):
            est = sum(self.count.lines(split_lines(text)))
            if est > min(cap, left) * 2 and i + 1 < len(texts):
                continue  # clearly too big: skip the exact count
            n = self.chunk_tokens(it.path, text)
            if n <= min(cap, left) or (c.kind == "recent" and n <= left):
                return Chunk(it.path, text, c.kind, c.reason, n, round(c.score, 6),
                             "" if c.kind == "recent" else it.name, fi.content_hash)
        return None


class _Snapshot:
    """The index's file records of one generation, each read once (an `IndexView`).

    When the index can list a key per record without decoding it (`record_keys()`:
    path -> (content hash, module, crate, read_only), as `store.Index` does; or
    `content_hashes()`: path -> content hash), records whose key is unchanged since
    `previous` are reused instead of read again."""

    def __init__(self, index: IndexView, previous: _Snapshot | None = None) -> None:
        self.generation = index.generation
        self._index = index
        self._paths = index.files()
        self.records: dict[str, FileIndex] = {}
        old = previous.records if previous is not None else {}
        #: Paths whose record differs from `previous` (added and removed ones included);
        #: None without a previous snapshot.
        self.changed: set[str] | None = None
        keys = getattr(index, "record_keys", None)
        hashes = getattr(index, "content_hashes", None)
        if old and keys is not None:
            listed: Mapping[str, object] = keys()
            key_of: Callable[[FileIndex], object] = _record_key
        elif old and hashes is not None:
            listed = hashes()
            key_of = _hash_key
        else:
            listed, key_of = {}, _hash_key
        for p in self._paths:
            prev = old.get(p)
            fi = prev if prev is not None and listed.get(p) == key_of(prev) else (
                index.file(p))
            if fi is not None:
                self.records[p] = fi
        if previous is not None:
            recs = self.records
            self.changed = {p for p, fi in recs.items() if old.get(p) is not fi}
            self.changed.update(p for p in old if p not in recs)

    def files(self) -> list[str]:
        return list(self._paths)

    def file(self, path: str) -> FileIndex | None:
        return self.records.get(path)

    def text(self, path: str) -> str | None:
        return self._index.text(path)

    def items_named(self, name: str) -> list[Item]:
        return self._index.items_named(name)


def _record_key(fi: FileIndex) -> tuple[str, str, str, bool]:
    return (fi.content_hash, fi.module, fi.crate, fi.read_only)


def _hash_key(fi: FileIndex) -> str:
    return fi.content_hash


def assemble_context(
    index: IndexView,
    path: str,
    text: str,
    line: int,
    col: int,
    *,
    budget: int,
    count_tokens: Callable[[str], int],
    special: Mapping[str, str],
    repo_name: str = "",
    recent: Sequence[str] = (),
) -> Context:
    """One-shot `ContextAssembler(...).assemble(...)` (no caches kept between calls)."""
    asm = ContextAssembler(index, count_tokens, special, repo_name=repo_name)
    return asm.assemble(path, text, line, col, budget=budget, recent=recent)


def chunk_count_key(piece: str) -> str:
    """Key of a chunk's count in the index's token-count cache: its content hash."""
    return "chunk:" + hashlib.blake2b(piece.encode("utf-8", "surrogatepass"),
                                      digest_size=16).hexdigest()


def _definition_target(it: Item, resolver: Resolver) -> Item | None:
    """What to show for an item: a variant's enum; everything else itself."""
    if it.kind == "variant":
        return resolver.enum_of_variant(it)
    if it.kind in ("impl", "field"):
        return None
    return it


def _read_only(it: Item) -> bool:
    return it.path.startswith("<")


def _neg_path(p: str) -> tuple[int, ...]:
    """Sort key that reverses path order (ties among equal scores: the earlier path last)."""
    return tuple(-ord(c) for c in p)


def tokens_estimate(text: str) -> int:
    """A tokenizer-free estimate: UTF-8 bytes / 3.5 (for callers without a tokenizer)."""
    return math.ceil(len(text.encode("utf-8")) / 3.5)
