"""Name resolution over the index: module tree, `use` paths, re-exports, then by name.

`Resolver(index)` builds, once per index generation, the module tree of every crate
(`mod x;` as `x.rs` or `x/mod.rs`, `#[path = "..."]`, inline `mod x { ... }`) and the
scope of every module (its top-level items and its `use` declarations). It then answers:

- `resolve_path(("crate", "shapes", "Circle"), from_path)`: a path as written in code or in a
  `use`, starting with `crate`, `self`, `super`, a crate name, or a name in scope (2018
  uniform paths); `pub use` re-exports and glob imports are followed;
- `resolve_name("Circle", from_path)`: a bare identifier seen in a file: its own module,
  its `use` declarations, its glob imports, the std prelude, and last, any item of that name.

Caution: this is a syntactic approximation of rustc's resolution, good enough to rank
context. Privacy is ignored, macros are not expanded, `use` declarations inside function
bodies count for the whole file, and `std` falls back to `core`/`alloc` when a module is
only present there (the std stub re-exports them the same way).

Cost: glob imports make the scope graph cyclic (`pub use super::*;` in a child whose parent
does `pub use child::*;`, prelude modules glob-importing each other). A lookup of
`(module, name)` is therefore memoised: within one query every key is expanded at most
once (a key met again while still being expanded is a cycle and contributes nothing), and
across queries (for this index generation) every result that no cycle, depth or budget cut
could have changed is kept. A query also has a step budget (`STEP_BUDGET` key expansions);
past it, it gives up and answers by name, logging why.
"""

from __future__ import annotations

import bisect
import logging
import operator
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from indexer.items import FileIndex, IndexView, Item, UseDecl

log = logging.getLogger(__name__)

ModPath = tuple[str, ...]

#: Names the std prelude brings into every module, with the enum a bare variant belongs to.
STD_PRELUDE: dict[str, str] = {
    name: name for name in (
        "Option", "Result", "Vec", "String", "Box", "Clone", "Copy", "Default", "Debug",
        "Drop", "Eq", "PartialEq", "Ord", "PartialOrd", "Hash", "Iterator", "IntoIterator",
        "Extend", "From", "Into", "TryFrom", "TryInto", "ToString", "ToOwned", "AsRef",
        "AsMut", "Fn", "FnMut", "FnOnce", "Send", "Sync", "Sized", "Unpin",
        "DoubleEndedIterator", "ExactSizeIterator",
    )
} | {"Some": "Option", "None": "Option", "Ok": "Result", "Err": "Result"}
STD_CRATES = ("std", "core", "alloc")
#: Item kinds that live in a module's namespace (methods, fields, variants belong to a parent).
SCOPE_KINDS = frozenset({
    "fn", "struct", "enum", "union", "trait", "mod", "const", "static", "type", "macro",
})
#: Resolution gives up after this many nested re-export / glob hops (cycles are cut by the
#: per-query memo; this only bounds the recursion depth of long acyclic chains).
MAX_HOPS = 64
#: Key expansions (`(module, name)` lookups not already memoised) one query may make before
#: it degrades to the by-name answer.
STEP_BUDGET = 20_000
#: The cross-query memo is dropped when it grows past this many keys.
MEMO_MAX = 500_000

_ROOT_NAMES = ("lib.rs", "main.rs")
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Resolution:
    """Items a name or path resolved to, best first, and how (for the context breakdown)."""

    items: tuple[Item, ...]
    how: str
    by_name: bool = False       # found only by name (no `use`/module evidence)


@dataclass(frozen=True, slots=True)
class _Target:
    """An intermediate result: a module, or items (a type, enum, trait, fn ...)."""

    module: ModPath | None = None
    items: tuple[Item, ...] = ()
    how: tuple[str, ...] = ()


_Key = tuple[ModPath, str]
_PENDING = _Target(how=("<pending>",))  # a key being expanded (met again: a cycle)
_MISSING = object()


class _Query:
    """Per-query state: keys expanded so far (or pending), work done, cuts taken."""

    __slots__ = ("cuts", "exhausted", "local", "steps")

    def __init__(self) -> None:
        self.local: dict[_Key, _Target | None] = {}
        self.steps = 0
        self.cuts = 0               # cycle, depth and budget cuts (results they touch are
        self.exhausted = False      # not kept across queries unless positive)


def crate_of(fi: FileIndex) -> str:
    """The crate name of a file as used in paths (`-` becomes `_`)."""
    if fi.crate:
        return fi.crate.replace("-", "_")
    p = fi.path
    if p.startswith("<std>/"):
        return p.split("/")[1]
    if p.startswith("<dep:"):
        name = p[5:p.index(">")] if ">" in p else p[5:]
        return re.sub(r"-\d[\w.+-]*$", "", name).replace("-", "_")
    parts = p.split("/")
    if "src" in parts:
        i = parts.index("src")
        return parts[i - 1].replace("-", "_") if i > 0 else "crate"
    return "crate"


def _use_binding(u: UseDecl) -> tuple[str, tuple[str, ...]] | None:
    """The name a non-glob `use` binds and the path it points to (`a::{self}` handled)."""
    path = u.path
    if path and path[-1] == "self":
        path = path[:-1]
    if not path:
        return None
    return (u.alias or path[-1], path)


class Resolver:
    """Module tree and scopes of every crate in an index, for one generation."""

    def __init__(self, index: IndexView) -> None:
        self.generation = index.generation
        self._files: dict[str, FileIndex] = {}
        for p in index.files():
            fi = index.file(p)
            if fi is not None:
                self._files[p] = fi
        self.crates: set[str] = {crate_of(fi) for fi in self._files.values()}
        self._file_module: dict[str, ModPath] = {}
        self._children: dict[ModPath, set[str]] = defaultdict(set)
        self._scope: dict[ModPath, dict[str, list[Item]]] = defaultdict(lambda: defaultdict(list))
        #: module -> (path, use) of every `use` in it, in file order.
        self._uses: dict[ModPath, list[tuple[str, UseDecl]]] = defaultdict(list)
        self._named_uses: dict[ModPath, dict[str, list[tuple[UseDecl, tuple[str, ...]]]]] = {}
        self._glob_uses: dict[ModPath, list[UseDecl]] = {}
        #: (module, name, at the root of a query) -> result, for this generation.
        self._memo: dict[tuple[ModPath, str, bool], _Target | None] = {}
        self._budget_logged: set[tuple[ModPath, str]] = set()
        self._by_name: dict[str, list[Item]] = defaultdict(list)
        self._item_module: dict[int, ModPath] = {}
        self._build_module_tree()
        self._build_scopes()

    # -- building ------------------------------------------------------------------------

    def _build_module_tree(self) -> None:
        by_crate: dict[str, list[str]] = defaultdict(list)
        for p, fi in self._files.items():
            by_crate[crate_of(fi)].append(p)
        for crate, paths in sorted(by_crate.items()):
            roots = sorted((p for p in paths if posixpath.basename(p) in _ROOT_NAMES
                            and posixpath.basename(posixpath.dirname(p)) == "src"),
                           key=lambda p: (p.count("/"), not p.endswith("lib.rs"), p))
            if not roots:
                roots = sorted((p for p in paths if posixpath.basename(p) in _ROOT_NAMES),
                               key=lambda p: (p.count("/"), p))[:1]
            queue = [(r, (crate,)) for r in roots]
            while queue:
                path, mod = queue.pop()
                if path in self._file_module:
                    continue
                self._file_module[path] = mod
                queue.extend(self._child_files(path, mod, is_root=path in roots))
            for p in sorted(paths):
                if p not in self._file_module:
                    self._file_module[p] = _module_from_path(crate, p)
        for mod in list(self._file_module.values()):
            for i in range(1, len(mod)):
                self._children[mod[:i]].add(mod[i])

    def _child_files(self, path: str, mod: ModPath, *, is_root: bool) -> list[tuple[str, ModPath]]:
        fi = self._files[path]
        base = posixpath.dirname(path)
        stem = posixpath.basename(path)
        own_dir = base if is_root or stem in ("mod.rs", *_ROOT_NAMES) else (
            posixpath.join(base, stem[:-3]))
        inline = _inline_mods(fi)
        out = []
        for md in fi.mods:
            if md.inline:
                continue
            chain = [it.name for it in inline if it.start_line < md.line <= it.end_line]
            if md.path_attr:
                cands = [posixpath.normpath(posixpath.join(base, *chain, md.path_attr))]
            else:
                d = posixpath.join(own_dir, *chain)
                cands = [posixpath.join(d, f"{md.name}.rs"), posixpath.join(d, md.name, "mod.rs")]
            child = (*mod, *chain, md.name)
            for c in cands:
                if c in self._files:
                    out.append((c, child))
                    break
        return out

    def _build_scopes(self) -> None:
        self._order = {p: i for i, p in enumerate(self._files)}
        for path, fi in self._files.items():
            self._add_file(path, fi)
        for mod in self._uses:
            self._index_uses(mod)

    def _add_file(self, path: str, fi: FileIndex) -> None:
        """Add one file's items and `use`s to the scopes, appending (the full build visits
        files in order; `update` splices them in place of the file's old entries)."""
        fmod = self._file_module[path]
        inline = _inline_mods(fi)
        for it in fi.items:
            chain = tuple(m.name for m in inline
                          if m is not it and m.start_byte <= it.start_byte
                          and it.end_byte <= m.end_byte)
            mod = (*fmod, *chain)
            self._item_module[id(it)] = mod
            if it.parent is None and it.kind in SCOPE_KINDS:
                self._scope[mod][it.name].append(it)
                self._by_name[it.name].append(it)
                if it.kind == "mod" and it in inline:
                    self._children[mod].add(it.name)
            elif it.kind in ("method", "trait_fn", "variant"):
                self._by_name[it.name].append(it)
        for u in fi.uses:
            chain = tuple(m.name for m in inline if m.start_line < u.line <= m.end_line)
            self._uses[(*fmod, *chain)].append((path, u))

    def _index_uses(self, mod: ModPath) -> None:
        named: dict[str, list[tuple[UseDecl, tuple[str, ...]]]] = defaultdict(list)
        globs = []
        for _, u in self._uses.get(mod, ()):
            if u.glob:
                globs.append(u)
            elif (b := _use_binding(u)) is not None:
                named[b[0]].append((u, b[1]))
        if mod in self._uses:
            self._named_uses[mod] = dict(named)
            self._glob_uses[mod] = globs
        else:
            self._named_uses.pop(mod, None)
            self._glob_uses.pop(mod, None)

    # -- incremental update ----------------------------------------------------------------

    def update(self, index: IndexView, changed: Iterable[str]) -> bool:
        """Bring the resolver to `index`'s generation when only the files `changed` differ
        from the ones it was built on (same path set). Each changed file's scope entries are
        replaced in place, in file order, so the result equals a fresh `Resolver(index)`.
        Returns False, changing nothing, when a change could move modules (a `mod`
        declaration, inline module, crate or the path set changed): rebuild then."""
        news: dict[str, FileIndex] = {}
        for p in changed:
            old = self._files.get(p)
            fi = index.file(p)
            if old is None or fi is None or crate_of(old) != crate_of(fi) or (
                    _module_shape(old) != _module_shape(fi)):
                return False
            news[p] = fi
        if len(index.files()) != len(self._files):
            return False
        for p, fi in news.items():
            self._replace_file(p, self._files[p], fi)
        self.generation = index.generation
        self._memo.clear()
        self._budget_logged.clear()
        return True

    def _replace_file(self, path: str, old: FileIndex, new: FileIndex) -> None:
        # Remove the old version's entries.
        scope_keys: set[tuple[ModPath, str]] = set()
        names: set[str] = set()
        for it in old.items:
            mod = self._item_module.pop(id(it), None)
            if it.parent is None and it.kind in SCOPE_KINDS:
                scope_keys.add((mod, it.name))  # type: ignore[arg-type]
                names.add(it.name)
            elif it.kind in ("method", "trait_fn", "variant"):
                names.add(it.name)
        fmod = self._file_module[path]
        inline = _inline_mods(old)
        use_mods = {(*fmod, *(m.name for m in inline if m.start_line < u.line <= m.end_line))
                    for u in old.uses}
        for mod, name in scope_keys:
            by = self._scope[mod]
            kept = [it for it in by[name] if it.path != path]
            if kept:
                by[name] = kept
            else:
                del by[name]
                if not by:
                    del self._scope[mod]
        for name in names:
            kept = [it for it in self._by_name[name] if it.path != path]
            if kept:
                self._by_name[name] = kept
            else:
                del self._by_name[name]
        for mod in use_mods:
            kept_uses = [pu for pu in self._uses[mod] if pu[0] != path]
            if kept_uses:
                self._uses[mod] = kept_uses
            else:
                del self._uses[mod]
        # Collect the new version's entries on their own, then splice each list at the
        # file's place in file order.
        saved = (self._scope, self._by_name, self._uses)
        self._scope = defaultdict(lambda: defaultdict(list))
        self._by_name = defaultdict(list)
        self._uses = defaultdict(list)
        self._files[path] = new
        self._add_file(path, new)
        add_scope, add_names, add_uses = self._scope, self._by_name, self._uses
        self._scope, self._by_name, self._uses = saved
        rank = self._order.__getitem__
        at = rank(path)

        def splice(lst: list, new_items: list, path_of) -> None:  # noqa: ANN001
            i = bisect.bisect_left(lst, at, key=lambda x: rank(path_of(x)))
            lst[i:i] = new_items

        item_path = operator.attrgetter("path")
        for mod, by in add_scope.items():
            for name, items in by.items():
                splice(self._scope[mod][name], items, item_path)
        for name, items in add_names.items():
            splice(self._by_name[name], items, item_path)
        use_path = operator.itemgetter(0)
        for mod, uses in add_uses.items():
            splice(self._uses[mod], uses, use_path)
        for mod in use_mods | set(add_uses):
            self._index_uses(mod)

    # -- queries -------------------------------------------------------------------------

    def module_of(self, path: str) -> ModPath:
        """The module a file is, e.g. ("demo", "shapes")."""
        mod = self._file_module.get(path)
        if mod is not None:
            return mod
        return _module_from_path("crate", path)

    def module_of_item(self, item: Item) -> ModPath:
        """The module an item lives in (inline modules included)."""
        return self._item_module.get(id(item)) or self.module_of(item.path)

    def items_named(self, name: str) -> list[Item]:
        """Every module-level item, method, trait fn and variant called `name`."""
        return self._by_name.get(name, [])

    def resolve_path(self, segments: Iterable[str], from_path: str) -> Resolution | None:
        """Resolve a path written in `from_path` (e.g. `super::shapes::Circle`)."""
        segs = tuple(segments)
        mod = self.module_of(from_path)
        q = self._query()
        t = self._walk(mod, segs, 0, q)
        if q.exhausted and (t is None or not t.items) and segs:
            self._log_budget(mod, "::".join(segs), q)
            res = self._by_name_resolution(segs[-1], from_path, mod)
            return None if res is None else Resolution(
                res.items, f"{res.how} (resolution budget exceeded)", by_name=True)
        if t is None or not t.items:
            return None
        return Resolution(t.items, "; ".join(t.how) or "path " + "::".join(segs))

    def resolve_name(self, name: str, from_path: str) -> Resolution | None:
        """Resolve a bare identifier used in `from_path`; `by_name=True` when only guessed."""
        mod = self.module_of(from_path)
        q = self._query()
        t = self._lookup(mod, name, 0, q)
        if t is not None and t.items:
            return Resolution(t.items, "; ".join(t.how))
        if q.exhausted:
            self._log_budget(mod, name, q)
        return self._by_name_resolution(name, from_path, mod, budget=q.exhausted)

    def _by_name_resolution(self, name: str, from_path: str, mod: ModPath, *,
                            budget: bool = False) -> Resolution | None:
        """The std prelude, then any item called `name`, nearest first (by name)."""
        if name in STD_PRELUDE:
            found = self._std_item(STD_PRELUDE[name])
            if found:
                return Resolution(found, f"std prelude {STD_PRELUDE[name]}")
        cands = [it for it in self._by_name.get(name, ()) if it.kind != "variant"]
        if not cands:
            enums = self._variant_enums(name)
            if enums:
                return Resolution(enums, f"enum of variant {name} (by name)", by_name=True)
            return None
        crate = crate_of(self._files[from_path]) if from_path in self._files else ""
        cands.sort(key=lambda it: self._distance(it, crate, mod))
        how = "by name (resolution budget exceeded)" if budget else "by name"
        return Resolution(tuple(cands), how, by_name=True)

    def enum_of_variant(self, variant: Item) -> Item | None:
        """The enum that declares `variant` (same file, `parent` name)."""
        fi = self._files.get(variant.path)
        if fi is None or variant.parent is None:
            return None
        for it in fi.items:
            if it.kind == "enum" and it.name == variant.parent and (
                    it.start_byte <= variant.start_byte <= it.end_byte):
                return it
        return None

    # -- internals -----------------------------------------------------------------------

    def _query(self) -> _Query:
        if len(self._memo) > MEMO_MAX:
            self._memo.clear()
        return _Query()

    def _log_budget(self, mod: ModPath, what: str, q: _Query) -> None:
        key = (mod, what)
        if key not in self._budget_logged:
            self._budget_logged.add(key)
            log.info("resolution of %s from %s gave up after %d steps (glob re-exports); "
                     "answering by name", what, "::".join(mod), q.steps)

    def _distance(self, it: Item, crate: str, mod: ModPath) -> tuple:
        fi = self._files.get(it.path)
        other = self.module_of_item(it)
        same_crate = fi is not None and crate_of(fi) == crate
        common = 0
        for a, b in zip(other, mod, strict=False):
            if a != b:
                break
            common += 1
        read_only = fi.read_only if fi is not None else True
        return (read_only, not same_crate, -common, it.kind in ("method", "trait_fn"),
                it.path, it.start_byte)

    def _std_item(self, name: str) -> tuple[Item, ...]:
        found = [it for it in self._by_name.get(name, ())
                 if it.path.startswith("<std") and it.parent is None]
        found.sort(key=lambda it: (it.kind not in ("trait", "enum", "struct"), it.path))
        return tuple(found[:1])

    def _variant_enums(self, name: str) -> tuple[Item, ...]:
        out = []
        for v in self._by_name.get(name, ()):
            if v.kind == "variant":
                e = self.enum_of_variant(v)
                if e is not None and e not in out:
                    out.append(e)
        return tuple(out)

    def _start(self, mod: ModPath, seg: str, hops: int, q: _Query) -> _Target | None:
        """The first segment of a path, seen from module `mod`."""
        if seg in ("crate", "$crate"):
            return _Target(module=mod[:1])
        if seg == "self":
            return _Target(module=mod)
        if seg == "super":
            return _Target(module=mod[:-1] if len(mod) > 1 else mod)
        t = self._lookup(mod, seg, hops, q)
        if t is not None:
            return t
        if seg in self.crates:
            return _Target(module=(seg,))
        if seg in STD_CRATES:
            for alt in STD_CRATES:
                if alt in self.crates:
                    return _Target(module=(alt,), how=(f"{seg} as {alt}",) if alt != seg else ())
        return None

    def _walk(self, mod: ModPath, segs: tuple[str, ...], hops: int, q: _Query) -> _Target | None:
        if not segs:
            return None
        if hops > MAX_HOPS:
            q.cuts += 1
            return None
        t = self._start(mod, segs[0], hops, q)
        i = 1
        while t is not None and i < len(segs):
            seg = segs[i]
            if t.module is None:
                return t  # `Enum::Variant`, `Type::assoc`: the type is the answer
            if seg == "super":
                t = _Target(module=t.module[:-1] or t.module, how=t.how)
            elif seg != "self":
                nxt = self._lookup(t.module, seg, hops + 1, q)
                if nxt is None and t.module[0] in STD_CRATES:
                    nxt = self._std_fallback(t.module, seg, hops, q)
                if nxt is None:
                    return None
                t = _Target(nxt.module, nxt.items, t.how + nxt.how)
            i += 1
        return t

    def _std_fallback(self, module: ModPath, seg: str, hops: int, q: _Query) -> _Target | None:
        for alt in STD_CRATES:
            if alt != module[0] and alt in self.crates:
                t = self._lookup((alt, *module[1:]), seg, hops + 1, q)
                if t is not None:
                    return t
        return None

    def _lookup(self, mod: ModPath, name: str, hops: int, q: _Query) -> _Target | None:
        """`name` in the scope of `mod`, memoised (see the module docstring)."""
        root = hops == 0
        hit = self._memo.get((mod, name, root), _MISSING)
        if hit is not _MISSING:
            return hit  # type: ignore[return-value]
        key = (mod, name)
        if key in q.local:
            got = q.local[key]
            if got is _PENDING:
                q.cuts += 1     # a cycle: this path contributes nothing
                return None
            return got
        if hops > MAX_HOPS or q.exhausted:
            q.cuts += 1
            return None
        q.steps += 1
        if q.steps > STEP_BUDGET:
            q.exhausted = True
            q.cuts += 1
            return None
        q.local[key] = _PENDING
        cuts = q.cuts
        t = self._expand(mod, name, hops, q)
        q.local[key] = t
        if t is not None or q.cuts == cuts:
            self._memo[(mod, name, root)] = t
        return t

    def _expand(self, mod: ModPath, name: str, hops: int, q: _Query) -> _Target | None:
        """`name` in the scope of `mod`: items, child modules, `use`s, then globs."""
        items = self._scope.get(mod, {}).get(name)
        if items:
            modname = "::".join(mod)
            how = () if hops == 0 else (f"defined in {modname}",)
            typed = tuple(it for it in items if it.kind != "mod")
            if typed:
                return _Target(items=typed, how=how or ("same module",))
        if name in self._children.get(mod, ()):
            return _Target(module=(*mod, name))
        for u, path in self._named_uses.get(mod, {}).get(name, ()):
            t = self._walk(mod, path, hops + 1, q)
            if t is not None:
                kind = "pub use" if u.is_pub else "use"
                step = f"{kind} {'::'.join(u.path)}"
                if hops > 0:
                    step += f" in {'::'.join(mod)}"
                return _Target(t.module, t.items, (step, *t.how))
        for u in self._glob_uses.get(mod, ()):
            base = self._walk(mod, u.path, hops + 1, q)
            if base is None:
                continue
            step = f"glob use {'::'.join(u.path)}::*"
            if base.module is not None:
                t = self._lookup(base.module, name, hops + 1, q)
                if t is not None and (t.items or t.module):
                    return _Target(t.module, t.items, (step, *t.how))
            else:
                enums = tuple(e for e in base.items
                              if e.kind == "enum" and self._has_variant(e, name))
                if enums:
                    return _Target(items=enums, how=(step,))
        return None

    def _has_variant(self, enum: Item, name: str) -> bool:
        return any(v.kind == "variant" and v.parent == enum.name and v.path == enum.path
                   for v in self._by_name.get(name, ()))


def _module_shape(fi: FileIndex) -> tuple:
    """What a file contributes to the module tree: its `mod` declarations (with the inline
    modules around them) and its inline modules. Equal shapes give equal module trees."""
    inline = _inline_mods(fi)
    decls = tuple((md.name, md.inline, md.path_attr,
                   tuple(it.name for it in inline if it.start_line < md.line <= it.end_line))
                  for md in fi.mods)
    mods = tuple((it.name, it.parent, tuple(m.name for m in inline if m is not it
                                            and m.start_byte <= it.start_byte
                                            and it.end_byte <= m.end_byte))
                 for it in inline)
    return decls, mods


def _inline_mods(fi: FileIndex) -> list[Item]:
    names = {m.name for m in fi.mods if m.inline}
    if not names:
        return []
    return [it for it in fi.items if it.kind == "mod" and it.name in names
            and it.end_line > it.start_line]


def _module_from_path(crate: str, path: str) -> ModPath:
    """A module path guessed from a file path (`src/a/b.rs` -> crate::a::b)."""
    parts = path.split("/")
    if "src" in parts:
        parts = parts[parts.index("src") + 1:]
    if parts and parts[-1] in ("mod.rs", *_ROOT_NAMES):
        parts = parts[:-1]
    elif parts and parts[-1].endswith(".rs"):
        parts[-1] = parts[-1][:-3]
    return (crate, *(p for p in parts if _SEGMENT.fullmatch(p)))
