"""Parsing one Rust file into a `FileIndex`: items, `use` paths, `mod` declarations, references.

Language knowledge is data: `queries/rust-tags.scm` captures definitions (`definition.<kind>`
+ `name`), `use` declarations, attributes and doc comments; `queries/rust-refs.scm` captures
referenced names. The code here only switches on capture names, then places each captured
node in its enclosing item with one sorted sweep over byte ranges (no Python recursion, no
`Node.parent` chains: tree-sitter issue #5807, reliability-notes §6).

Caution: `parse_file` never raises on bad input (invalid UTF-8, binary bytes, deep nesting,
parse deadline); problems come back in `FileIndex.errors`. Parsing goes through a read
callable so that `progress_callback` can cancel it (the callback is ignored for bytes
sources in py-tree-sitter 0.26; facts.md).
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import tree_sitter_rust
from tree_sitter import Language, Node, Parser, Query, QueryCursor, Tree

from indexer.items import FileIndex, Item, ModDecl, UseDecl

log = logging.getLogger(__name__)

#: Parse deadline per file, seconds. reliability-notes §6/R14 asks that no file cost more
#: than ~1 s of parse; tree-sitter-rust parses 2-3 MB/s here, so the 1 MB size limit
#: parses in ~0.4 s and 2 s leaves room for a loaded 2-core machine.
PARSE_DEADLINE_S = 2.0
#: Signatures longer than this are cut (a generated 10 kB `where` clause helps nobody).
MAX_SIGNATURE_CHARS = 1000
#: `const`/`static` values up to this length stay in the signature (`const MAX: usize = 10`).
MAX_INLINE_VALUE_CHARS = 80
#: At most this many syntax-error locations are reported per file.
MAX_ERRORS = 5
#: Bytes handed to tree-sitter per read callback.
_READ_CHUNK = 1 << 16
#: Bytes inspected for NUL when deciding a file is binary (git's heuristic uses 8000).
_BINARY_PROBE = 8192
_QUERIES = Path(__file__).with_name("queries")
_BOM = b"\xef\xbb\xbf"
_PATH_ATTR = re.compile(r'^#\[\s*path\s*=\s*"((?:[^"\\]|\\.)*)"\s*\]$')
#: Identifier tokens (ASCII; a `'` before one makes it a lifetime) and the keywords among them.
_PUB = re.compile(rb"pub\b")
#: Comments, strings (also b"", r"", r#""#: close enough) and char literals.
_NOT_CODE = re.compile(
    rb'"(?:[^"\\]|\\.)*"'              # "string", b"bytes", r"raw" (no escapes in raw: rare)
    rb"|'(?:[^'\\\n]|\\[^'\n]{1,10})'"   # 'c', '\n', '\u{1F600}' (not lifetimes: 'a)
    rb"|//[^\n]*"
    rb"|/\*(?:[^*]|\*(?!/))*\*/",
    re.DOTALL)
_IDENT = re.compile(rb"[A-Za-z_](?<![\w'].)[A-Za-z0-9_]*")   # (the lookbehind after the
# first character lets `re` skip ahead by character class: 1.6x faster than before it)
_KEYWORDS = frozenset(w.encode() for w in (
    "as async await break const continue crate dyn else enum extern false fn for if impl in "
    "let loop match mod move mut pub ref return self Self static struct super trait true "
    "type union unsafe use where while macro_rules _ r").split())
#: Interiors smaller than this are queried anyway (a skip costs one more query call).
SKIP_MIN_BYTES = 256
#: A keyword that starts an item (or `use`) the tags query captures, or an inner doc.
#: (fn|struct|enum|union|trait|impl|mod|const|static|type|macro_rules|use), factored by
#: first letter: 2x faster in `re`.
_ITEM_KEYWORD = re.compile(
    rb"(?<![\w'])(?:fn|s(?:truct|tatic)|enum|u(?:nion|se)|t(?:rait|ype)|impl|m(?:od|acro_rules)"
    rb"|const)(?!\w)|//!|/\*!")
_INNER_DOC = re.compile(rb"//!|/\*!")
#: Leaf items whose interior holds no item the tags query captures (token trees, attribute
#: arguments, use trees).
_OPAQUE_ITEMS = frozenset({"macro_invocation", "macro_definition", "attribute_item",
                           "use_declaration"})
#: Item kinds whose body (field `body`) is elided from the signature.
_BODY_KINDS = frozenset({"fn", "struct", "enum", "union", "trait", "impl", "mod"})
#: Item kinds other items nest in (the sweep keeps a stack of these).
_CONTAINERS = frozenset({"fn", "struct", "enum", "union", "trait", "impl", "mod", "variant"})


def content_hash(source: bytes) -> str:
    """Content key of a file's bytes (BLAKE2b-128, hex)."""
    return hashlib.blake2b(source, digest_size=16).hexdigest()


@cache
def language() -> Language:
    """The tree-sitter Rust language (one per process)."""
    return Language(tree_sitter_rust.language())


@cache
def _query(name: str) -> Query:
    return Query(language(), (_QUERIES / name).read_text(encoding="utf-8"))


def module_for_path(path: str) -> str:
    """Module path implied by a file's place in its crate (`src/a/b.rs` -> `crate::a::b`).

    The part after the last `src/` folder counts; `lib.rs`, `main.rs`, `src/bin/*.rs` and
    files directly in `tests/`, `examples/`, `benches/` (or `tests/x/main.rs`) are crate roots;
    `x/mod.rs` is `x`.
    `#[path]` attributes are resolved by the caller (see `workspace.resolve_path_modules`).
    """
    parts = [p for p in PurePosixPath(path).parts if p not in ("/", "")]
    if not parts:
        return "crate"
    if "src" in parts:
        rel = parts[len(parts) - 1 - parts[::-1].index("src") + 1:]
        if rel and rel[0] == "bin":
            rel = rel[2:] if len(rel) > 2 else []
    else:
        rel = parts
        for top in ("tests", "examples", "benches"):
            if top in rel:
                rel = rel[rel.index(top) + 1:]
                if len(rel) == 1 or rel[1:] == ["main.rs"]:
                    rel = []
                break
        else:
            rel = [p for p in rel if not p.startswith("<")]
    if not rel:
        return "crate"
    segs = list(rel[:-1])
    stem = rel[-1].removesuffix(".rs")
    if not (len(rel) == 1 and stem in ("lib", "main")) and stem != "mod":
        segs.append(stem)
    return "::".join(["crate", *segs])


@dataclass(slots=True)
class _Frame:
    """An open item during the sweep: what its children inherit."""

    end: int
    kind: str
    name: str
    module: str                   # module its children live in
    trait_name: str | None = None
    self_type: str | None = None
    index: int = -1               # position in the items list (-1: not an Item)
    inner_doc: list[str] | None = None


def parse_file(
    path: str,
    source: bytes,
    *,
    cancel: Callable[[], bool] | None = None,
    module: str | None = None,
    deadline_s: float | None = PARSE_DEADLINE_S,
    read_only: bool = False,
    crate: str = "",
) -> FileIndex:
    """Index one file's bytes. Never raises on bad input: problems go to `errors`.

    `path` is workspace-relative (it decides the module path unless `module` is given);
    `cancel` is polled during the parse (True stops it); `deadline_s` bounds parse time.
    """
    digest = content_hash(source)
    try:
        return _parse(path, source, digest, cancel, module, deadline_s, read_only, crate)
    except Exception as exc:  # a parser surprise on one file must not stop indexing
        log.exception("internal error indexing %s", path)
        return FileIndex(path=path, content_hash=digest, size=len(source), read_only=read_only,
                         crate=crate, errors=(f"internal error: {type(exc).__name__}: {exc}",))


def decode_source(source: bytes) -> tuple[bytes, str, list[str]]:
    """UTF-8 bytes to index, their text, and problems (invalid bytes become U+FFFD)."""
    try:
        return source, source.decode("utf-8"), []
    except UnicodeDecodeError as exc:
        text = source.decode("utf-8", "replace")
        return text.encode("utf-8"), text, [
            f"invalid UTF-8 at byte {exc.start}; decoded with replacement characters"]


def is_binary(source: bytes) -> bool:
    """True for bytes that are no source text (a NUL in the first 8 kB)."""
    return b"\x00" in source[:_BINARY_PROBE]


def _parse(path: str, source: bytes, digest: str, cancel: Callable[[], bool] | None,
           module: str | None, deadline_s: float | None, read_only: bool,
           crate: str) -> FileIndex:
    base = FileIndex(path=path, content_hash=digest, size=len(source), read_only=read_only,
                     crate=crate)
    if is_binary(source):
        return _with(base, errors=("binary file (NUL bytes); not indexed",))
    data, _text, errors = decode_source(source)
    tree, why = _parse_tree(data, cancel, deadline_s)
    if tree is None:
        return _with(base, errors=(*errors, why))
    ex = _Extractor(path, data, module if module is not None else module_for_path(path),
                    keep_leaves=False)
    ex.run(tree.root_node)
    return ex.file_index(base, errors, tree.root_node.has_error)


def _with(fi: FileIndex, **changes: object) -> FileIndex:
    from dataclasses import replace
    return replace(fi, **changes)


def _parse_tree(data: bytes, cancel: Callable[[], bool] | None,
                deadline_s: float | None):
    """Parse through a read callable with a cancelling progress callback.

    Returns (tree, "") or (None, reason). The callback catches everything and returns a
    bool: an exception escaping it probably crashes the process (reliability-notes §6).
    """
    parse_data = b"   " + data[3:] if data.startswith(_BOM) else data
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    why = ["parse stopped"]

    def progress(_offset: int, _has_error: bool) -> bool:
        try:
            if cancel is not None and cancel():
                why[0] = "parse cancelled"
                return True
            if deadline is not None and time.monotonic() > deadline:
                why[0] = f"parse deadline of {deadline_s:g} s exceeded; not indexed"
                return True
        except Exception as exc:
            why[0] = f"cancel callback raised {type(exc).__name__}"
            return True
        return False

    def read(offset: int, _point: tuple[int, int]) -> bytes:
        return parse_data[offset:offset + _READ_CHUNK]

    parser = Parser(language())
    try:
        return parser.parse(read, progress_callback=progress), ""
    except ValueError:
        parser.reset()
        return None, why[0]


def _error_messages(nodes: Sequence[tuple[int, int, int]], has_error: bool) -> list[str]:
    """`syntax error at line N` for the first ERROR nodes (sorted by start byte)."""
    out = [f"syntax error at line {row + 1}" for _s, _e, row in nodes[:MAX_ERRORS]]
    if len(nodes) > MAX_ERRORS:
        out.append(f"... {len(nodes) - MAX_ERRORS} more syntax errors")
    if not out and has_error:
        out.append("syntax error (missing token)")
    return out


def _tokens(data: bytes, start: int, end: int) -> frozenset[bytes]:
    """Distinct identifier tokens of `data[start:end]` outside comments, strings and char
    literals (a lexer-level pass: the syntax tree adds nothing here but cost)."""
    return frozenset(_IDENT.findall(_NOT_CODE.sub(b" ", data[start:end])))


def _leaf_tokens(nodes: Sequence[Node], data: bytes) -> list[tuple[int, int, frozenset[bytes]]]:
    """Token sets of the leaves of item lists: each node is a leaf, except a mod, impl or
    trait with a body, which splits into its head (to the `{`), its body's items (likewise)
    and its `}`. Strings and comments never span leaves, and an incremental update
    recomputes whole leaves only, so its references equal a fresh parse's."""
    out: list[tuple[int, int, frozenset[bytes]]] = []
    stack = list(reversed(nodes))
    while stack:
        n = stack.pop()
        if isinstance(n, tuple):
            out.append((n[0], n[1], _tokens(data, n[0], n[1])))
            continue
        body = n.child_by_field_name("body") if n.type in _LIST_OWNERS else None
        if body is None or body.type != "declaration_list":
            out.append((n.start_byte, n.end_byte, _tokens(data, n.start_byte, n.end_byte)))
            continue
        stack.append((body.end_byte - 1, n.end_byte))
        stack.extend(reversed(body.named_children))
        stack.append((n.start_byte, body.start_byte + 1))
    return out


def _leaf_spans(nodes: Sequence[Node], data: bytes, skip: bool
                ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Byte spans of the item-list leaves (as `_leaf_tokens` splits them), and, when `skip`,
    the interiors the tags query may leave out, sorted: large enough (`SKIP_MIN_BYTES`)
    function bodies and const/static values with no item keyword or inner doc comment in
    their text, and macro, attribute and `use` interiors with no inner doc comment. Nothing
    the extraction reads can lie there: items and `use`s need their keyword; docs and
    attributes there precede no item outside; inner docs are kept. (ERROR nodes can lie
    anywhere: callers pass `skip=False` for trees with errors.)"""
    spans: list[tuple[int, int]] = []
    skips: list[tuple[int, int]] = []
    stack = list(reversed(nodes))
    kw, inner = _ITEM_KEYWORD.search, _INNER_DOC.search
    while stack:
        n = stack.pop()
        if isinstance(n, tuple):
            spans.append(n)
            continue
        t = n.type
        start, end = n.start_byte, n.end_byte
        if t in _LIST_OWNERS:
            body = n.child_by_field_name("body")
            if body is not None and body.type == "declaration_list":
                stack.append((body.end_byte - 1, end))
                stack.extend(reversed(body.named_children))
                stack.append((start, body.start_byte + 1))
                continue
        spans.append((start, end))
        if not skip or end - start < SKIP_MIN_BYTES:
            continue
        if t == "function_item":
            body = n.child_by_field_name("body")
            if body is not None and body.end_byte - body.start_byte >= SKIP_MIN_BYTES and \
                    kw(data, body.start_byte + 1, body.end_byte - 1) is None:
                skips.append((body.start_byte + 1, body.end_byte - 1))
        elif t == "const_item" or t == "static_item":
            value = n.child_by_field_name("value")
            if value is not None and value.end_byte - value.start_byte >= SKIP_MIN_BYTES and \
                    kw(data, value.start_byte, value.end_byte) is None:
                skips.append((value.start_byte, value.end_byte))
        elif t in _OPAQUE_ITEMS and inner(data, start + 1, end - 1) is None:
            skips.append((start + 1, end - 1))
    return spans, skips


def _captures_outside(cursor: QueryCursor, root: Node, skips: Sequence[tuple[int, int]],
                      size: int) -> dict[str, list[Node]]:
    """`cursor.captures(root)` leaving out nodes inside the sorted, disjoint `skips` (the
    cursor does not descend there): one byte-range query per gap; each node is kept from
    the gap it starts in, so an item spanning several gaps comes once."""
    if not skips:
        return cursor.captures(root)
    out: dict[str, list[Node]] = {}
    pos = 0
    for a, b in (*skips, (size + 1, size + 1)):
        cursor.set_byte_range(pos, a)
        for cap, nodes in cursor.captures(root).items():
            got = out.setdefault(cap, [])
            got.extend(nodes if pos == 0 else (n for n in nodes if n.start_byte >= pos))
        pos = b
    return out


def _span_references(data: bytes, spans: Sequence[tuple[int, int]]) -> tuple[str, ...]:
    """`_references` of the leaves at `spans` without per-leaf sets: each leaf's code
    (`_NOT_CODE` removed leaf by leaf, as `_tokens` does) joined by spaces, scanned once."""
    sub = _NOT_CODE.sub
    code = b" ".join([sub(b" ", data[a:b]) for a, b in spans])
    names = set(_IDENT.findall(code)) - _KEYWORDS
    return tuple(sorted(n.decode("ascii") for n in names))


def _references(leaves: Sequence[tuple[int, int, frozenset[bytes]]]) -> tuple[str, ...]:
    """Distinct identifiers of all leaves, keywords excluded, sorted."""
    names = set().union(*(t for _s, _e, t in leaves)) - _KEYWORDS
    return tuple(sorted(n.decode("ascii") for n in names))


def _is_pub(node: Node, data: bytes) -> bool:
    """An item has a visibility modifier iff its text starts with `pub` (attributes are
    siblings, not children, in tree-sitter-rust)."""
    return _PUB.match(data, node.start_byte) is not None


def _type_name(node: Node | None, data: bytes) -> str | None:
    """Base name of a type: `&'a mut Foo<T>` -> `Foo`, `fmt::Formatter` -> `Formatter`."""
    while node is not None and node.type in ("reference_type", "pointer_type", "generic_type"):
        node = node.child_by_field_name("type")
    if node is None:
        return None
    if node.type == "scoped_type_identifier":
        name = node.child_by_field_name("name")
        node = name if name is not None else node
    return _text(data, node)


def _trait_path(node: Node | None, data: bytes) -> str | None:
    """Trait path without generic arguments: `fmt::Display`, `From<u8>` -> `From`."""
    if node is None:
        return None
    if node.type == "generic_type":
        inner = node.child_by_field_name("type")
        node = inner if inner is not None else node
    return re.sub(r"\s+", "", _text(data, node))


def _text(data: bytes, node: Node, end: int | None = None) -> str:
    return data[node.start_byte:node.end_byte if end is None else end].decode("utf-8", "replace")


def _path_segments(text: str) -> tuple[str, ...]:
    return tuple(s for s in re.sub(r"\s+", "", text).split("::") if s)


def _doc_text(data: bytes, node: Node) -> str:
    """Doc comment text without its markers (`/// x` -> `x`; `/** a\n * b */` -> `a\nb`)."""
    raw = _text(data, node)
    if node.type == "line_comment":
        body = raw[3:].rstrip("\r\n")
        return body[1:] if body.startswith(" ") else body
    body = raw[3:-2] if raw.endswith("*/") else raw[3:]
    lines = []
    for line in body.splitlines():
        s = line.strip()
        s = s[1:] if s.startswith("*") else s
        lines.append(s[1:] if s.startswith(" ") else s)
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


class _Extractor:
    """One file's extraction state: run the tags query, then sweep the sorted captures."""

    def __init__(self, path: str, data: bytes, module: str, *, keep_leaves: bool = True) -> None:
        self.path, self.data, self.module = path, data, module
        #: Keep per-leaf token sets (`leaves`) for incremental updates; a one-off parse
        #: only needs `references`.
        self.keep_leaves = keep_leaves
        self.items: list[Item] = []
        # Records with the byte span of the node they come from: (start, end, record).
        self.uses: list[tuple[int, int, UseDecl]] = []
        self.mods: list[tuple[int, int, ModDecl]] = []
        self.file_doc: list[tuple[int, int, str]] = []
        self.error_nodes: list[tuple[int, int, int]] = []     # (start, end, row) of ERRORs
        self.references: tuple[str, ...] = ()
        self.leaves: list[tuple[int, int, frozenset[bytes]]] = []   # see _leaf_tokens
        # Preamble nodes (attributes, outer docs) sorted by end byte, for lookups.
        self._pre_end: list[int] = []
        self._pre: list[tuple[int, int, str, str]] = []   # (start, end, kind, text)

    def file_index(self, base: FileIndex, errors: list[str], has_error: bool) -> FileIndex:
        """The FileIndex of this extraction (`base` gives path, hash and metadata)."""
        return FileIndex(
            path=base.path, content_hash=base.content_hash, size=base.size,
            items=tuple(self.items), uses=tuple(u for _s, _e, u in self.uses),
            mods=tuple(m for _s, _e, m in self.mods), references=self.references,
            errors=(*errors, *_error_messages(self.error_nodes, has_error)),
            read_only=base.read_only, crate=base.crate, module=self.module,
            doc="\n".join(d for _s, _e, d in self.file_doc))

    def run(self, root: Node, region: tuple[int, int] | None = None,
            frames: Sequence[_Frame] = ()) -> None:
        """Extract from the whole tree, or only from the nodes inside `region` (whole
        children of one item list) with `frames` as the enclosing items' frames."""
        data = self.data
        entries: list[tuple[int, int, str, Node]] = []
        pre: list[tuple[int, int, str, str]] = []
        cursor = QueryCursor(_query("rust-tags.scm"))
        if region is not None:
            cursor.set_byte_range(*region)
            lo, hi = region
            captured = cursor.captures(root)
        else:
            spans, skips = _leaf_spans(root.named_children, data, not root.has_error)
            captured = _captures_outside(cursor, root, skips, len(data))
        for cap, nodes in captured.items():
            if region is not None:
                nodes = [n for n in nodes if n.start_byte >= lo and n.end_byte <= hi]
            if cap.startswith("definition."):
                kind = cap[11:]
                entries.extend((n.start_byte, -n.end_byte, kind, n) for n in nodes)
            elif cap in ("use", "doc.inner"):
                kind = "inner_doc" if cap == "doc.inner" else cap
                entries.extend((n.start_byte, -n.end_byte, kind, n) for n in nodes)
            elif cap == "attribute":
                pre.extend((n.start_byte, n.end_byte, "attr", _text(data, n)) for n in nodes)
            elif cap == "doc.outer":
                pre.extend((n.start_byte, n.end_byte, "doc", _doc_text(data, n)) for n in nodes)
            elif cap == "error":
                self.error_nodes.extend((n.start_byte, n.end_byte, n.start_point.row)
                                        for n in nodes)
        self.error_nodes.sort()
        if region is None:
            if self.keep_leaves:
                self.leaves = [(a, b, _tokens(data, a, b)) for a, b in spans]
                self.references = _references(self.leaves)
            else:
                self.references = _span_references(data, spans)
        pre.sort(key=lambda p: p[1])
        self._pre = pre
        self._pre_end = [p[1] for p in pre]
        entries.sort(key=lambda e: (e[0], e[1]))
        self._sweep(entries, list(frames))

    def _sweep(self, entries: list[tuple[int, int, str, Node]], stack: list[_Frame]) -> None:
        floor = len(stack)          # frames of enclosing items outside the region stay open
        for start, _neg_end, kind, node in entries:
            while len(stack) > floor and stack[-1].end <= start:
                self._close(stack.pop())
            top = stack[-1] if stack else None
            module = top.module if top else self.module
            if kind == "use":
                self._use(node, module)
            elif kind == "inner_doc":
                text = _doc_text(self.data, node)
                if top is None:
                    self.file_doc.append((node.start_byte, node.end_byte, text))
                elif top.inner_doc is not None:
                    top.inner_doc.append(text)
            else:
                frame = self._item(kind, node, top, module)
                if frame is not None:
                    stack.append(frame)
        while len(stack) > floor:
            self._close(stack.pop())

    def _close(self, frame: _Frame) -> None:
        """Attach a module's `//!` docs to its Item when its frame closes."""
        if frame.inner_doc and frame.index >= 0:
            from dataclasses import replace
            it = self.items[frame.index]
            doc = "\n".join(d for d in (it.doc, *frame.inner_doc) if d)
            self.items[frame.index] = replace(it, doc=doc)

    def _preamble(self, start: int) -> tuple[str, tuple[str, ...], int]:
        """Doc text, attributes and outer start byte of the item starting at `start`."""
        docs: list[str] = []
        attrs: list[str] = []
        i = bisect.bisect_right(self._pre_end, start) - 1
        cur = start
        while i >= 0:
            p_start, p_end, p_kind, p_text = self._pre[i]
            if self.data[p_end:cur].strip():
                break
            (docs if p_kind == "doc" else attrs).append(p_text)
            cur = p_start
            i -= 1
        docs.reverse()
        attrs.reverse()
        return "\n".join(docs), tuple(attrs), cur

    def _item(self, kind: str, node: Node, top: _Frame | None, module: str) -> _Frame | None:
        data = self.data
        parent = trait_name = self_type = None
        top_kind = top.kind if top else None
        if kind == "field" and top_kind not in ("struct", "union"):
            return None
        if kind == "impl":
            trait_name = _trait_path(node.child_by_field_name("trait"), data)
            self_type = _type_name(node.child_by_field_name("type"), data)
            name = self_type or ""
        else:
            name_node = node.child_by_field_name("name")
            name = _text(data, name_node) if name_node is not None else ""
        if top is not None and top_kind in ("impl", "trait", "enum", "struct", "union"):
            parent = top.self_type if top_kind == "impl" else top.name
            trait_name, self_type = (top.trait_name, top.self_type) if top_kind == "impl" \
                else (trait_name, self_type)
            if kind == "fn":
                kind = "method" if top_kind == "impl" else "trait_fn"
        is_pub = _is_pub(node, data)
        if kind == "variant" or (kind in ("trait_fn", "type", "const") and top_kind == "trait"):
            is_pub = is_pub or bool(top and top.index >= 0 and self.items[top.index].is_pub)
        doc, attrs, outer_start = self._preamble(node.start_byte)
        body = node.child_by_field_name("body")
        if kind == "mod":
            path_attr = next((m.group(1) for a in attrs if (m := _PATH_ATTR.match(a))), None)
            self.mods.append((node.start_byte, node.end_byte, ModDecl(
                name=name, inline=body is not None, path_attr=path_attr,
                line=node.start_point.row, module=module)))
        item = Item(
            kind=kind, name=name, path=self.path, module=module,
            signature=self._signature(kind, node, body), doc=doc, attrs=attrs,
            start_byte=node.start_byte, end_byte=node.end_byte,
            start_line=node.start_point.row, end_line=node.end_point.row,
            parent=parent, trait_name=trait_name, self_type=self_type, is_pub=is_pub,
            outer_start_byte=outer_start,
            outer_start_line=node.start_point.row - data.count(b"\n", outer_start,
                                                                 node.start_byte),
        )
        self.items.append(item)
        if kind not in _CONTAINERS and kind not in ("method", "trait_fn"):
            return None
        child_module = f"{module}::{name}" if kind == "mod" and body is not None else module
        return _Frame(end=node.end_byte, kind=kind, name=name, module=child_module,
                      trait_name=trait_name if kind == "impl" else None,
                      self_type=self_type if kind == "impl" else None,
                      index=len(self.items) - 1, inner_doc=[] if kind == "mod" else None)

    def _signature(self, kind: str, node: Node, body: Node | None) -> str:
        data = self.data
        if kind == "macro":
            name = node.child_by_field_name("name")
            sig = "macro_rules! " + (_text(data, name) if name is not None else "")
        elif body is not None and (kind in _BODY_KINDS or kind in ("method", "trait_fn")) and (
                kind != "struct" or body.type == "field_declaration_list"):
            sig = data[node.start_byte:body.start_byte].decode("utf-8", "replace")
        elif kind in ("const", "static") and (value := node.child_by_field_name("value")) \
                is not None and (value.end_byte - value.start_byte > MAX_INLINE_VALUE_CHARS
                                 or b"\n" in data[value.start_byte:value.end_byte]):
            sig = data[node.start_byte:value.start_byte].decode("utf-8", "replace")
            sig = sig.rstrip().removesuffix("=")
        else:
            sig = _text(data, node)
        sig = sig.strip().removesuffix(";").rstrip().removesuffix(",").rstrip()
        if len(sig) > MAX_SIGNATURE_CHARS:
            sig = sig[:MAX_SIGNATURE_CHARS] + " …"
        return sig

    def _use(self, node: Node, module: str) -> None:
        """Expand one `use` tree into UseDecls (explicit stack: trees can nest deeply)."""
        data = self.data
        is_pub = _is_pub(node, data)
        line = node.start_point.row
        arg = node.child_by_field_name("argument")
        if arg is None:
            return
        stack: list[tuple[Node, tuple[str, ...]]] = [(arg, ())]
        out: list[UseDecl] = []
        while stack:
            n, prefix = stack.pop()
            t = n.type
            if t == "use_list":
                stack.extend((c, prefix) for c in reversed(n.named_children)
                             if c.type not in ("line_comment", "block_comment"))
            elif t == "scoped_use_list":
                p = n.child_by_field_name("path")
                lst = n.child_by_field_name("list")
                new_prefix = prefix + (_path_segments(_text(data, p)) if p is not None else ())
                if lst is not None:
                    stack.append((lst, new_prefix))
            elif t == "use_as_clause":
                p = n.child_by_field_name("path")
                alias = n.child_by_field_name("alias")
                segs = _path_segments(_text(data, p)) if p is not None else ()
                if segs == ("self",) and prefix:
                    segs = ()
                out.append(UseDecl(path=prefix + segs,
                                   alias=_text(data, alias) if alias is not None else None,
                                   is_pub=is_pub, line=line, module=module))
            elif t == "use_wildcard":
                p = n.named_child(0) if n.named_child_count else None  # `use *;`
                segs = _path_segments(_text(data, p)) if p is not None else ()
                out.append(UseDecl(path=prefix + segs, glob=True, is_pub=is_pub, line=line,
                                   module=module))
            elif t in ("identifier", "scoped_identifier", "self", "super", "crate",
                       "metavariable"):
                segs = _path_segments(_text(data, n))
                if segs == ("self",) and prefix:
                    segs = ()
                out.append(UseDecl(path=prefix + segs, is_pub=is_pub, line=line, module=module))
            elif t == "ERROR":
                continue
        self.uses.extend((node.start_byte, node.end_byte, u) for u in out)


# -- incremental re-parse of editor buffers ------------------------------------------------

#: Node types an item's preamble (docs, attributes) is made of.
_PRE_TYPES = frozenset({"attribute_item", "line_comment", "block_comment"})
#: Items whose `body` item list the incremental update descends into.
_LIST_OWNERS = frozenset({"mod_item", "impl_item", "trait_item"})
#: Open buffers' trees are kept up to this size; larger buffers are parsed afresh.
INCREMENTAL_MAX_BYTES = 4 << 20


def common_affixes(old: bytes, new: bytes) -> tuple[int, int]:
    """Lengths of the common prefix and (non-overlapping) common suffix of two texts."""
    n = min(len(old), len(new))
    pre = _match_len(old, new, n, forward=True)
    suf = _match_len(old, new, n - pre, forward=False)
    return pre, suf


def _match_len(a: bytes, b: bytes, limit: int, *, forward: bool) -> int:
    """How many bytes match from the start (or end) of a and b, at most `limit`:
    blocks of 4096, then 64, then 1 byte, each compared by C-level slice equality."""
    k = 0
    la, lb = len(a), len(b)
    for step in (4096, 64, 1):
        while k + step <= limit:
            if forward:
                same = a[k:k + step] == b[k:k + step]
            else:
                same = a[la - k - step:la - k] == b[lb - k - step:lb - k]
            if not same:
                break
            k += step
    return k


def _point(data: bytes, offset: int) -> tuple[int, int]:
    """(row, byte column) of a byte offset."""
    row = data.count(b"\n", 0, offset)
    return row, offset - (data.rfind(b"\n", 0, offset) + 1)


def _shift_item(it: Item, db: int, dl: int) -> Item:
    return Item(it.kind, it.name, it.path, it.module, it.signature, it.doc, it.attrs,
                it.start_byte + db, it.end_byte + db, it.start_line + dl, it.end_line + dl,
                it.parent, it.trait_name, it.self_type, it.is_pub, it.outer_start_byte + db,
                it.outer_start_line + dl)


def _regroup(old: Sequence[tuple[int, int, Any]], rs: int, re_old: int, db: int,
             new: Sequence[tuple[int, int, Any]], shift: Callable[[Any], Any]
             ) -> list[tuple[int, int, Any]] | None:
    """Positional records (start, end, record): the old ones before the region `[rs,
    re_old)` (those enclosing it get their end moved), the region's new ones, the old ones
    after it shifted by `db` bytes. None when an old record straddles a boundary."""
    head: list[tuple[int, int, Any]] = []
    tail: list[tuple[int, int, Any]] = []
    for s, e, x in old:
        if s < rs:
            if e <= rs:
                head.append((s, e, x))
            elif e >= re_old:
                head.append((s, e + db, x))      # encloses the region
            else:
                return None
        elif s >= re_old:
            tail.append((s + db, e + db, shift(x)))
        elif e > re_old:
            return None
    return [*head, *new, *tail]


_RETRY = object()


class IncrementalFile:
    """One open editor buffer: the last tree and extraction, updated edit by edit.

    `update(source)` diffs the new bytes against the last ones (common prefix/suffix: one
    edit), `tree.edit`s and re-parses with the old tree, then re-runs the tags query only
    over the innermost item list that holds the edit and the syntax changes
    (`Tree.changed_ranges`): whole children of `source_file` or of a mod/impl/trait body,
    with the attributes/docs glued to them (and the next child, whose docs may change).
    Items outside keep their records, shifted. Whatever looks unsafe (inner docs in the
    region, a record straddling it) falls back to a full extraction; the result equals a
    full extraction of the same tree (tests/indexer/test_incremental.py).
    """

    def __init__(self, path: str, *, module: str | None = None, crate: str = "",
                 read_only: bool = False, deadline_s: float | None = PARSE_DEADLINE_S) -> None:
        self.path, self.crate, self.read_only, self.deadline_s = path, crate, read_only, \
            deadline_s
        self.module = module if module is not None else module_for_path(path)
        self._parser = Parser(language())
        self._data: bytes | None = None          # bytes the tree was parsed from
        self._tree = None
        self._ex: _Extractor | None = None
        self.text: str | None = None             # the caller's text of the buffer
        self.full_extractions = 0                 # counters for tests and the benchmark
        self.region_extractions = 0

    def update(self, source: bytes, digest: str | None = None) -> FileIndex:
        """Index the buffer's new bytes (never raises; like `parse_file`); `digest` is
        their `content_hash` when the caller has it."""
        try:
            fi = self._update(source, digest or content_hash(source))
        except Exception:  # an incremental surprise: index the text afresh
            log.exception("incremental update of %s failed; parsing afresh", self.path)
            fi = None
        if fi is None:
            self._reset()
            fi = parse_file(self.path, source, module=self.module, crate=self.crate,
                            read_only=self.read_only, deadline_s=self.deadline_s)
        return fi

    def forget_tree(self) -> None:
        """Drop the kept tree (memory); the next update parses afresh."""
        self._data = self._tree = self._ex = None

    _reset = forget_tree

    def _update(self, source: bytes, digest: str) -> FileIndex | None:
        if is_binary(source) or len(source) > INCREMENTAL_MAX_BYTES:
            return None
        data, _text, errors = decode_source(source)
        if errors:
            return None
        base = FileIndex(path=self.path, content_hash=digest, size=len(source),
                         read_only=self.read_only, crate=self.crate)
        parse_data = b"   " + data[3:] if data.startswith(_BOM) else data
        old_data, old_tree, old_ex = self._data, self._tree, self._ex
        if old_tree is None or old_ex is None or old_data is None:
            tree, why = self._parse(parse_data, None)
            if tree is None:
                return None
            ex = _Extractor(self.path, data, self.module)
            ex.run(tree.root_node)
            self.full_extractions += 1
        else:
            pre, suf = common_affixes(old_data, parse_data)
            start, old_end, new_end = pre, len(old_data) - suf, len(parse_data) - suf
            sp, oep, nep = _point(old_data, start), _point(old_data, old_end), \
                _point(parse_data, new_end)
            old_tree.edit(start, old_end, new_end, sp, oep, nep)
            tree, why = self._parse(parse_data, old_tree)
            if tree is None:
                return None
            lo, hi = start, new_end
            for r in old_tree.changed_ranges(tree):
                lo, hi = min(lo, r.start_byte), max(hi, r.end_byte)
            ex = self._region(tree, data, old_data, old_ex, lo, hi, new_end - old_end,
                              nep[0] - oep[0])
            if ex is None:
                ex = _Extractor(self.path, data, self.module)
                ex.run(tree.root_node)
                self.full_extractions += 1
            else:
                self.region_extractions += 1
        self._data, self._tree, self._ex = parse_data, tree, ex
        return ex.file_index(base, [], tree.root_node.has_error)

    def _parse(self, data: bytes, old_tree: Tree | None) -> tuple[Tree | None, str]:
        deadline = None if self.deadline_s is None else time.monotonic() + self.deadline_s

        def progress(_offset: int, _has_error: bool) -> bool:
            try:
                return deadline is not None and time.monotonic() > deadline
            except Exception:
                return True

        def read(offset: int, _point: tuple[int, int]) -> bytes:
            return data[offset:offset + _READ_CHUNK]

        try:
            if old_tree is None:
                return self._parser.parse(read, progress_callback=progress), ""
            return self._parser.parse(read, old_tree, progress_callback=progress), ""
        except ValueError:
            self._parser.reset()
            return None, "parse deadline exceeded"

    def _region(self, tree: Tree, data: bytes, old_data: bytes, old: _Extractor, lo: int, hi: int,
                db: int, dl: int) -> _Extractor | None:
        """Re-extract the smallest item-list region holding [lo, hi] (new bytes); None
        when a full extraction is needed."""
        ex = self._region_try(tree, data, old_data, old, lo, hi, db, dl, False)
        if ex is _RETRY:
            ex = self._region_try(tree, data, old_data, old, lo, hi, db, dl, True)
        return None if ex is _RETRY else ex

    def _region_try(self, tree: Tree, data: bytes, old_data: bytes, old: _Extractor, lo: int,
                    hi: int, db: int, dl: int, with_next: bool) -> Any:
        """One try of `_region`; `_RETRY` when the child after an edit between children
        must be re-extracted too (its docs/attributes changed)."""
        node = tree.root_node
        owners: list[Node] = []
        while True:
            kids = node.named_children
            if not kids:
                rs, re_new, region_kids = lo, hi, []
                break
            # Kids the edit and the syntax changes touch; in a gap, the kid after it.
            i = next((k for k, c in enumerate(kids) if c.end_byte >= lo), len(kids))
            j = next((k for k in range(len(kids) - 1, -1, -1) if kids[k].start_byte <= hi), -1)
            if i >= len(kids) or (j < i and not with_next and not (
                    i > 0 and _ends_with_pre(kids[i - 1]))):
                rs, re_new, region_kids = lo, hi, []    # whitespace between children
                break
            j = max(i, j)
            if i == j and kids[i].type in _LIST_OWNERS:
                body = kids[i].child_by_field_name("body")
                if body is not None and body.type == "declaration_list" and \
                        body.start_byte < lo and hi < body.end_byte:
                    owners.append(kids[i])
                    node = body
                    continue
            while i > 0 and _ends_with_pre(kids[i - 1]):
                i -= 1
            while j < len(kids) - 1 and _ends_with_pre(kids[j]):
                j += 1
            rs, re_new = min(lo, kids[i].start_byte), max(hi, kids[j].end_byte)
            region_kids = kids[i:j + 1]
            break
        re_old = re_new - db
        if re_old < rs:
            return None
        if any(m in old_data[rs:re_old] or m in data[rs:re_new] for m in (b"//!", b"/*!")):
            return None                      # inner docs change an enclosing item's doc
        # Old items: before the region (the owners among them end after it), in it, after.
        head = [it for it in old.items if it.start_byte < rs]
        tail = [it for it in old.items if it.start_byte >= re_old]
        inside = [it for it in old.items if rs <= it.start_byte < re_old]
        enclosing = [k for k, it in enumerate(head) if it.end_byte > rs]
        if any(it.outer_start_byte < re_old for it in tail):
            return None if with_next else _RETRY
        if any(it.end_byte > re_old for it in inside) or \
                [(head[k].kind, head[k].start_byte, head[k].end_byte + db)
                 for k in enclosing] != [(o.type.removesuffix("_item"), o.start_byte,
                                           o.end_byte) for o in owners]:
            return None
        ex = _Extractor(self.path, data, self.module)
        frames: list[_Frame] = []
        for k, owner in zip(enclosing, owners, strict=True):
            it = head[k]
            it = head[k] = Item(it.kind, it.name, it.path, it.module, it.signature, it.doc,
                                it.attrs, it.start_byte, it.end_byte + db, it.start_line,
                                it.end_line + dl, it.parent, it.trait_name, it.self_type,
                                it.is_pub, it.outer_start_byte, it.outer_start_line)
            kind = owner.type.removesuffix("_item")
            frames.append(_Frame(
                end=owner.end_byte, kind=kind, name=it.name,
                module=f"{it.module}::{it.name}" if kind == "mod" else it.module,
                trait_name=it.trait_name if kind == "impl" else None,
                self_type=it.self_type if kind == "impl" else None, index=k))
        ex.items = head
        ex.run(tree.root_node, (rs, re_new), frames)
        new_items = ex.items[len(head):]
        uses = _regroup(old.uses, rs, re_old, db, ex.uses, lambda u: _replace_line(u, dl))
        mods = _regroup(old.mods, rs, re_old, db, ex.mods, lambda m: _replace_line(m, dl))
        docs = _regroup(old.file_doc, rs, re_old, db, ex.file_doc, lambda d: d)
        errs = _regroup(old.error_nodes, rs, re_old, db, ex.error_nodes, lambda r: r + dl)
        leaves = _regroup(old.leaves, rs, re_old, db, _leaf_tokens(region_kids, data),
                          lambda t: t)
        if uses is None or mods is None or docs is None or errs is None or leaves is None:
            return None
        ex.leaves = leaves
        ex.references = old.references if leaves == old.leaves else _references(leaves)
        ex.items = [*head, *new_items, *(_shift_item(it, db, dl) for it in tail)]
        ex.uses, ex.mods, ex.file_doc = uses, mods, docs
        ex.error_nodes = errs
        return ex


def _ends_with_pre(node: Node, max_depth: int = 64) -> bool:
    """Whether `node` ends with an attribute or comment (error recovery can nest them):
    then the item after it may take its docs and attributes. True when too deep to tell."""
    for _ in range(max_depth):
        if node.type in _PRE_TYPES:
            return True
        k = node.child_count - 1
        while k >= 0 and (last := node.child(k)) is not None and \
                last.start_byte == last.end_byte:
            k -= 1                      # zero-width MISSING tokens
        if k < 0 or last is None:
            return False
        node = last
    return True


def _replace_line(rec: Any, dl: int) -> Any:
    """A UseDecl or ModDecl moved by `dl` lines."""
    from dataclasses import replace
    return replace(rec, line=rec.line + dl) if dl else rec
