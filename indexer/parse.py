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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

import tree_sitter_rust
from tree_sitter import Language, Node, Parser, Query, QueryCursor

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
_IDENT = re.compile(rb"(?<![\w'])[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset(w.encode() for w in (
    "as async await break const continue crate dyn else enum extern false fn for if impl in "
    "let loop match mod move mut pub ref return self Self static struct super trait true "
    "type union unsafe use where while macro_rules _ r").split())
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
    ex = _Extractor(path, data, module if module is not None else module_for_path(path))
    ex.run(tree.root_node)
    errors.extend(ex.errors)
    return FileIndex(
        path=path, content_hash=digest, size=len(source), items=tuple(ex.items),
        uses=tuple(ex.uses), mods=tuple(ex.mods), references=ex.references,
        errors=tuple(errors), read_only=read_only, crate=crate, module=ex.module,
        doc="\n".join(ex.file_doc))


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


def _references(data: bytes) -> tuple[str, ...]:
    """Distinct identifier tokens outside comments, strings and char literals, keywords
    excluded (a lexer-level pass: the syntax tree adds nothing here but cost)."""
    code = _NOT_CODE.sub(b" ", data)
    names = set(_IDENT.findall(code)) - _KEYWORDS
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

    def __init__(self, path: str, data: bytes, module: str) -> None:
        self.path, self.data, self.module = path, data, module
        self.items: list[Item] = []
        self.uses: list[UseDecl] = []
        self.mods: list[ModDecl] = []
        self.errors: list[str] = []
        self.file_doc: list[str] = []
        self.references: tuple[str, ...] = ()
        # Preamble nodes (attributes, outer docs) sorted by end byte, for lookups.
        self._pre_end: list[int] = []
        self._pre: list[tuple[int, int, str, str]] = []   # (start, end, kind, text)

    def run(self, root: Node) -> None:
        data = self.data
        entries: list[tuple[int, int, str, Node]] = []
        pre: list[tuple[int, int, str, str]] = []
        for cap, nodes in QueryCursor(_query("rust-tags.scm")).captures(root).items():
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
                nodes = sorted(nodes, key=lambda n: n.start_byte)
                self.errors.extend(f"syntax error at line {n.start_point.row + 1}"
                                   for n in nodes[:MAX_ERRORS])
                if len(nodes) > MAX_ERRORS:
                    self.errors.append(f"... {len(nodes) - MAX_ERRORS} more syntax errors")
        if not self.errors and root.has_error:
            self.errors.append("syntax error (missing token)")
        self.references = _references(data)
        pre.sort(key=lambda p: p[1])
        self._pre = pre
        self._pre_end = [p[1] for p in pre]
        entries.sort(key=lambda e: (e[0], e[1]))
        self._sweep(entries)

    def _sweep(self, entries: list[tuple[int, int, str, Node]]) -> None:
        stack: list[_Frame] = []
        for start, _neg_end, kind, node in entries:
            while stack and stack[-1].end <= start:
                self._close(stack.pop())
            top = stack[-1] if stack else None
            module = top.module if top else self.module
            if kind == "use":
                self._use(node, module)
            elif kind == "inner_doc":
                text = _doc_text(self.data, node)
                if top is None:
                    self.file_doc.append(text)
                elif top.inner_doc is not None:
                    top.inner_doc.append(text)
            else:
                frame = self._item(kind, node, top, module)
                if frame is not None:
                    stack.append(frame)
        while stack:
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
            self.mods.append(ModDecl(name=name, inline=body is not None, path_attr=path_attr,
                                     line=node.start_point.row, module=module))
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
        self.uses.extend(out)
