"""Refactor suggestions: find what applies at a cursor, then compute the edit (lazily).

`find_actions(text, offset)` is cheap (one parse) and says which actions apply;
`implement_trait` and `fill_match` compute their insertion from syntax alone. Trait
signatures come from the workspace sources handed in (`sources`: path -> text; the index
replaces this once it exists) or, for common std traits, from `STD_TRAITS`. Enum
variants come from the same sources. Every edit is checked by the caller: it must not
add tree-sitter errors to the file (`postprocess.error_count`).

Model-written parts (doc comments, function bodies) are produced by the server through
the engine; `body_or_todo` keeps a model body only if it parses, else `todo!()`.

Positions are Python string offsets into `text`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

import tree_sitter_rust
from tree_sitter import Language, Node, Parser

from hybrid_lsp.postprocess import error_count

IMPLEMENT_TRAIT, FILL_MATCH = "implementTrait", "fillMatch"
ADD_DOC, COMPLETE_BODY = "addDoc", "completeBody"

#: Required items of std traits, as they are written in an impl (`{T}`: the first type
#: argument of the trait in the impl, e.g. `From<u8>`).
STD_TRAITS: dict[str, tuple[tuple[str, str], ...]] = {
    "Display": (("fmt", "fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result"),),
    "Debug": (("fmt", "fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result"),),
    "Iterator": (("Item", "type Item"), ("next", "fn next(&mut self) -> Option<Self::Item>")),
    "Default": (("default", "fn default() -> Self"),),
    "Clone": (("clone", "fn clone(&self) -> Self"),),
    "PartialEq": (("eq", "fn eq(&self, other: &Self) -> bool"),),
    "Drop": (("drop", "fn drop(&mut self)"),),
    "From": (("from", "fn from(value: {T}) -> Self"),),
    "FromStr": (("Err", "type Err"),
                ("from_str", "fn from_str(s: &str) -> Result<Self, Self::Err>")),
    "Deref": (("Target", "type Target"), ("deref", "fn deref(&self) -> &Self::Target")),
}
TODO_BODY = "todo!()"


@dataclass(frozen=True)
class Found:
    """An action that applies at the cursor: its kind, title and the node's range."""

    kind: str
    title: str
    start: int
    end: int


@dataclass(frozen=True)
class Insertion:
    """Replace `text[at:end]` (whitespace before a closing brace) with `text`."""

    at: int
    end: int
    text: str


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_rust.language()))


class _Src:
    """A parsed text with byte <-> string offset helpers."""

    def __init__(self, text: str) -> None:
        self.text, self.data = text, text.encode("utf-8")
        self.tree = _parser().parse(self.data)

    def s(self, byte: int) -> int:
        return len(self.data[:byte].decode("utf-8", errors="ignore"))

    def b(self, offset: int) -> int:
        return len(self.text[:offset].encode("utf-8"))

    def node_text(self, node: Node | None) -> str:
        return "" if node is None else self.data[node.start_byte:node.end_byte].decode(
            "utf-8", errors="replace")

    def enclosing(self, offset: int, kinds: set[str]) -> Node | None:
        node = self.tree.root_node.named_descendant_for_byte_range(self.b(offset),
                                                                   self.b(offset))
        while node is not None and node.type not in kinds:
            node = node.parent
        return node


def _walk(root: Node) -> Iterable[Node]:
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.named_children))


def indent_of(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    line = text[start:]
    return line[:len(line) - len(line.lstrip(" \t"))]


# -- finding ------------------------------------------------------------------------------

def find_actions(text: str, offset: int) -> list[Found]:
    """Actions that apply at `offset`, innermost syntax first."""
    src = _Src(text)
    out: list[Found] = []
    match = src.enclosing(offset, {"match_expression"})
    if match is not None:
        out.append(Found(FILL_MATCH, "Fill missing match arms", match.start_byte, match.end_byte))
    impl = src.enclosing(offset, {"impl_item"})
    if impl is not None and impl.child_by_field_name("trait") is not None:
        trait = src.node_text(impl.child_by_field_name("trait"))
        out.append(Found(IMPLEMENT_TRAIT, f"Implement missing items of {trait}",
                         impl.start_byte, impl.end_byte))
    fn = src.enclosing(offset, {"function_item"})
    if fn is not None:
        name = src.node_text(fn.child_by_field_name("name"))
        body = src.node_text(fn.child_by_field_name("body"))
        inner = body.strip()[1:-1].strip().rstrip(";")
        if inner in ("", "todo!()", "unimplemented!()"):
            out.append(Found(COMPLETE_BODY, f"Complete the body of {name}",
                             fn.start_byte, fn.end_byte))
        out.append(Found(ADD_DOC, f"Add a doc comment to {name}", fn.start_byte, fn.end_byte))
    return [Found(f.kind, f.title, src.s(f.start), src.s(f.end)) for f in out]


# -- implement a trait --------------------------------------------------------------------

def trait_items(name: str, sources: Mapping[str, str],
                type_arg: str = "") -> list[tuple[str, str]]:
    """(item name, signature) of the required items of trait `name`, in declaration order."""
    for text in sources.values():
        if f"trait {name}" not in text:
            continue
        src = _Src(text)
        for node in _walk(src.tree.root_node):
            if node.type == "trait_item" and src.node_text(
                    node.child_by_field_name("name")) == name:
                return _required(src, node.child_by_field_name("body"))
    base = STD_TRAITS.get(name, ())
    return [(n, sig.replace("{T}", type_arg or "T")) for n, sig in base]


def _required(src: _Src, body: Node | None) -> list[tuple[str, str]]:
    out = []
    for item in body.named_children if body is not None else ():
        name = src.node_text(item.child_by_field_name("name"))
        if item.type == "function_signature_item":
            out.append((name, src.node_text(item).rstrip().rstrip(";").strip()))
        elif item.type == "associated_type" and "=" not in src.node_text(item):
            out.append((name, src.node_text(item).rstrip().rstrip(";").strip()))
        elif item.type == "const_item" and item.child_by_field_name("value") is None:
            out.append((name, src.node_text(item).rstrip().rstrip(";").strip()))
    return out


def implement_trait(text: str, offset: int, sources: Mapping[str, str],
                    bodies: Mapping[str, str] | None = None) -> Insertion | None:
    """Insert the trait's missing items at the end of the impl block at `offset`."""
    src = _Src(text)
    impl = src.enclosing(offset, {"impl_item"})
    if impl is None or impl.child_by_field_name("trait") is None:
        return None
    trait_node = impl.child_by_field_name("trait")
    trait = src.node_text(trait_node)
    base, _, args = trait.partition("<")
    base = base.split("::")[-1].strip()
    body = impl.child_by_field_name("body")
    have = {src.node_text(c.child_by_field_name("name")) for c in
            (body.named_children if body is not None else ())}
    known = {"<this file>": text, **sources}
    missing = [(n, sig) for n, sig in trait_items(base, known, args.rstrip(">").strip())
               if n not in have]
    if not missing or body is None:
        return None
    outer = indent_of(text, src.s(impl.start_byte))
    pieces = [_item_text(sig, (bodies or {}).get(n, TODO_BODY), outer + "    ")
              for n, sig in missing]
    close = src.s(body.end_byte) - 1  # the closing brace
    before = text[:close].rstrip()
    lead = "\n" if before.endswith("{") else "\n\n"
    return Insertion(len(before), close, lead + "\n\n".join(pieces) + "\n" + outer)


def _item_text(sig: str, body: str, indent: str) -> str:
    if sig.startswith("type "):
        return f"{indent}{sig} = ();"
    if sig.startswith("const "):
        return f"{indent}{sig} = {TODO_BODY};"
    lines = body.strip().splitlines() or [TODO_BODY]
    inner = "\n".join(f"{indent}    {ln.strip()}" if ln.strip() else "" for ln in lines)
    return f"{indent}{sig} {{\n{inner}\n{indent}}}"


# -- fill a match -------------------------------------------------------------------------

def enum_variants(name: str, sources: Mapping[str, str]) -> list[tuple[str, str]]:
    """(variant, pattern tail) of enum `name`: ("A", "(..)"), ("B", " { .. }"), ("C", "")."""
    for text in sources.values():
        if f"enum {name}" not in text:
            continue
        src = _Src(text)
        for node in _walk(src.tree.root_node):
            if node.type == "enum_item" and src.node_text(
                    node.child_by_field_name("name")) == name:
                out = []
                for v in node.child_by_field_name("body").named_children:
                    if v.type != "enum_variant":
                        continue
                    kind = getattr(v.child_by_field_name("body"), "type", None)
                    tail = {"ordered_field_declaration_list": "(..)",
                            "field_declaration_list": " { .. }"}.get(kind, "")
                    out.append((src.node_text(v.child_by_field_name("name")), tail))
                return out
    return []


def fill_match(text: str, offset: int, sources: Mapping[str, str]) -> Insertion | None:
    """Add an arm `Enum::Variant.. => todo!(),` for each variant no arm names, in order."""
    src = _Src(text)
    match = src.enclosing(offset, {"match_expression"})
    block = match.child_by_field_name("body") if match is not None else None
    if block is None:
        return None
    arms = [a for a in block.named_children if a.type == "match_arm"]
    patterns = [src.node_text(a.child_by_field_name("pattern")) for a in arms]
    if any(p.strip() == "_" for p in patterns):
        return None
    enum = next((p.split("::")[-2].split()[-1] for p in patterns if "::" in p), None)
    if enum is None:
        return None
    named = {p.split("::")[-1].split("(")[0].split("{")[0].strip() for p in patterns}
    missing = [(v, t) for v, t in enum_variants(enum, {**sources, "<this file>": text})
               if v not in named]
    if not missing:
        return None
    outer = indent_of(text, src.s(match.start_byte))
    indent = indent_of(text, src.s(arms[0].start_byte)) if arms else outer + "    "
    close = src.s(block.end_byte) - 1
    before = text[:close].rstrip()
    comma = "" if not arms or before.endswith((",", "}", "{")) else ","
    body = "\n".join(f"{indent}{enum}::{v}{t} => {TODO_BODY}," for v, t in missing)
    return Insertion(len(before), close, f"{comma}\n{body}\n{outer}")


# -- model-written parts ------------------------------------------------------------------

def body_or_todo(body: str) -> tuple[str, bool]:
    """(body, from_model): the model's body if it parses inside a function, else todo!()."""
    text = body.strip().strip("{}").strip()
    if text and error_count(f"fn __f() {{\n{text}\n}}\n") == 0:
        return text, True
    return TODO_BODY, False


def apply(text: str, ins: Insertion) -> str:
    return text[:ins.at] + ins.text + text[ins.end:]


def no_new_errors(text: str, ins: Insertion) -> bool:
    """True if inserting leaves no more tree-sitter errors than before."""
    return error_count(apply(text, ins)) <= error_count(text)
