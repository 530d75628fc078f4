"""Refactor suggestions: find what applies at a cursor, then compute the edit (lazily).

`find_actions(text, offset)` is cheap (one parse) and says which actions apply;
`implement_trait` and `fill_match` compute their insertion from syntax alone. Trait
signatures and enum variants come from the sources handed in (`sources`: path -> text;
the server passes the files the index names for the trait or enum) and, for std traits
and enums, from the index's std stub (`indexer/std_stub`, `std_sources()`); names a std
signature uses from its own module are qualified (`Formatter` -> `std::fmt::Formatter`)
and the trait's type parameters are replaced by the impl's arguments (or their defaults).

Model-written parts (function bodies, doc comments) are produced by the server through
the engine. A model body is kept only if it parses as exactly one block body
(`body_or_todo`); otherwise the item gets `todo!()` and the insertion records it in
`Insertion.fallbacks`, so the action's title can say so. Every edit is checked by the
caller: it must not add tree-sitter errors to the file (`no_new_errors`).

Positions are Python string offsets into `text`.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache

import tree_sitter_rust
from tree_sitter import Language, Node, Parser

from hybrid_lsp.postprocess import error_count

IMPLEMENT_TRAIT, FILL_MATCH = "implementTrait", "fillMatch"
ADD_DOC, COMPLETE_BODY = "addDoc", "completeBody"
TODO_BODY = "todo!()"
#: Key prefix of std sources (the index keys the stub `<std-stub>/lib.rs`).
STD_PREFIX = "<std"
_TYPE_ITEMS = {"struct_item", "enum_item", "type_item", "trait_item", "union_item"}
_PATH_PAIR = re.compile(r"\b([A-Za-z_]\w*)\s*::\s*([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Found:
    """An action that applies at the cursor: its kind, title and the node's range."""

    kind: str
    title: str
    start: int
    end: int


@dataclass(frozen=True)
class Insertion:
    """Replace `text[at:end]` (whitespace before a closing brace) with `text`.

    `fallbacks`: items that got `todo!()` although a model body was asked for.
    """

    at: int
    end: int
    text: str
    fallbacks: tuple[str, ...] = ()


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


@cache
def std_sources() -> dict[str, str]:
    """The index's std stub (`indexer/std_stub/*.rs`), keyed as the index keys it."""
    from indexer.workspace import STD_STUB, STD_STUB_KEY

    return {f"{STD_STUB_KEY}/{p.name}": p.read_text(encoding="utf-8")
            for p in sorted(STD_STUB.glob("*.rs"))}


def _ordered(sources: Mapping[str, str]) -> list[tuple[str, str]]:
    """Workspace sources first, then std sources (a workspace item shadows std's)."""
    own = [(k, v) for k, v in sources.items() if not k.startswith(STD_PREFIX)]
    std = [(k, v) for k, v in sources.items() if k.startswith(STD_PREFIX)]
    return own + std


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


def target_name(kind: str, text: str, offset: int) -> str | None:
    """The trait (implement-trait) or enum (fill-match) an action at `offset` needs."""
    src = _Src(text)
    if kind == IMPLEMENT_TRAIT:
        impl = src.enclosing(offset, {"impl_item"})
        trait = impl.child_by_field_name("trait") if impl is not None else None
        return None if trait is None else _base_name(src.node_text(trait))
    if kind == FILL_MATCH:
        match = src.enclosing(offset, {"match_expression"})
        block = match.child_by_field_name("body") if match is not None else None
        arms = [a for a in block.named_children if a.type == "match_arm"] if block else []
        for arm in arms:
            for enum, _ in _PATH_PAIR.findall(src.node_text(arm.child_by_field_name("pattern"))):
                return enum
    return None


def _base_name(trait: str) -> str:
    return trait.partition("<")[0].split("::")[-1].strip()


# -- implement a trait --------------------------------------------------------------------

def _split_args(args: str) -> list[str]:
    """Top-level comma-separated generic arguments: "u8, Vec<(A, B)>" -> ["u8", "Vec<(A, B)>"]."""
    out, depth, cur = [], 0, ""
    for ch in args:
        if ch in "<([":
            depth += 1
        elif ch in ">)]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _module_path(src: _Src, node: Node) -> list[str]:
    """Names of the inline `mod` blocks around `node`, outermost first."""
    mods = []
    parent = node.parent
    while parent is not None:
        if parent.type == "mod_item":
            mods.append(src.node_text(parent.child_by_field_name("name")))
        parent = parent.parent
    return mods[::-1]


def _substitute(sig: str, names: Mapping[str, str]) -> str:
    """Replace whole identifiers (not after `::`, `.` or `'`) by their mapped text."""
    if not names:
        return sig
    pattern = re.compile(r"(?<![\w:.'])(" + "|".join(map(re.escape, names)) + r")\b")
    return pattern.sub(lambda m: names[m.group(1)], sig)


def trait_items(name: str, sources: Mapping[str, str],
                type_args: str = "") -> list[tuple[str, str]]:
    """(item name, signature) of the required items of trait `name`, in declaration order.

    `type_args`: the trait's arguments as written in the impl ("u8" for `From<u8>`).
    """
    for key, text in _ordered(sources):
        if f"trait {name}" not in text:
            continue
        src = _Src(text)
        for node in _walk(src.tree.root_node):
            if node.type == "trait_item" and src.node_text(
                    node.child_by_field_name("name")) == name:
                names = _generic_map(src, node, _split_args(type_args))
                if key.startswith(STD_PREFIX):
                    names = {**_std_qualifiers(src, node), **names}
                return [(n, _substitute(sig, names)) for n, sig in
                        _required(src, node.child_by_field_name("body"))]
    return []


def _generic_map(src: _Src, trait: Node, args: list[str]) -> dict[str, str]:
    """Trait type parameter -> the impl's argument (or the parameter's default)."""
    params = trait.child_by_field_name("type_parameters")
    out: dict[str, str] = {}
    k = 0
    for p in params.named_children if params is not None else ():
        if p.type == "lifetime_parameter" or p.type == "lifetime":
            continue
        pname = src.node_text(p.child_by_field_name("name")) if p.type != "type_identifier" \
            else src.node_text(p)
        default = src.node_text(p.child_by_field_name("default_type")) or None
        value = args[k] if k < len(args) else default
        k += 1
        if pname and value and value != pname:
            out[pname] = value
    return out


def _std_qualifiers(src: _Src, trait: Node) -> dict[str, str]:
    """Type names declared in the std trait's own module -> `std::<module>::Name`."""
    mods = _module_path(src, trait)
    if not mods or trait.parent is None:
        return {}
    prefix = "std::" + "::".join(mods) + "::"
    out = {}
    for sibling in trait.parent.named_children:
        if sibling.type in _TYPE_ITEMS:
            n = src.node_text(sibling.child_by_field_name("name"))
            if n:
                out[n] = prefix + n
    return out


def _required(src: _Src, body: Node | None) -> list[tuple[str, str]]:
    out = []
    for item in body.named_children if body is not None else ():
        name = src.node_text(item.child_by_field_name("name"))
        if item.type == "function_signature_item":
            out.append((name, src.node_text(item).rstrip().rstrip(";").strip()))
        elif item.type == "associated_type" and item.child_by_field_name("type") is None:
            out.append((name, f"type {name}"))  # bounds are not written in impls
        elif item.type == "const_item" and item.child_by_field_name("value") is None:
            out.append((name, src.node_text(item).rstrip().rstrip(";").strip()))
    return out


@dataclass(frozen=True)
class ImplPlan:
    """The missing items of an impl block and where they go (`implement_trait`'s parts)."""

    trait: str
    missing: tuple[tuple[str, str], ...]   # (item name, signature)
    at: int                                # replace text[at:end] ...
    end: int
    lead: str                              # ... with lead + items + "\n" + outer
    outer: str                             # the impl's indentation
    functions: tuple[str, ...] = field(default=())

    @property
    def inner(self) -> str:
        return self.outer + "    "


def plan_impl(text: str, offset: int, sources: Mapping[str, str]) -> ImplPlan | None:
    """What `implement_trait` would insert at `offset`, or None if nothing is missing."""
    src = _Src(text)
    impl = src.enclosing(offset, {"impl_item"})
    if impl is None or impl.child_by_field_name("trait") is None:
        return None
    trait = src.node_text(impl.child_by_field_name("trait"))
    base, _, args = trait.partition("<")
    base = base.split("::")[-1].strip()
    body = impl.child_by_field_name("body")
    if body is None:
        return None
    have = {src.node_text(c.child_by_field_name("name")) for c in body.named_children}
    known = {"<this file>": text, **sources, **std_sources()}
    missing = tuple((n, sig) for n, sig in trait_items(base, known, args.rpartition(">")[0])
                    if n not in have)
    if not missing:
        return None
    outer = indent_of(text, src.s(impl.start_byte))
    close = src.s(body.end_byte) - 1  # the closing brace
    before = text[:close].rstrip()
    lead = "\n" if before.endswith("{") else "\n\n"
    fns = tuple(n for n, sig in missing if _is_fn(sig))
    return ImplPlan(base, missing, len(before), close, lead, outer, fns)


def _is_fn(sig: str) -> bool:
    return not sig.startswith(("type ", "const "))


def render_impl(plan: ImplPlan, bodies: Mapping[str, str | None] | None = None) -> Insertion:
    """The insertion for `plan`; `bodies` (fn name -> model text or None) are kept only if
    they parse, else that fn gets `todo!()` and is listed in `fallbacks`."""
    pieces, fallbacks = [], []
    for name, sig in plan.missing:
        body = TODO_BODY
        if bodies is not None and _is_fn(sig) and name in bodies:
            body, ok = body_or_todo(bodies[name] or "")
            if not ok:
                fallbacks.append(name)
        pieces.append(_item_text(sig, body, plan.inner))
    return Insertion(plan.at, plan.end, plan.lead + "\n\n".join(pieces) + "\n" + plan.outer,
                     tuple(fallbacks))


def body_slots(text: str, plan: ImplPlan) -> dict[str, tuple[str, str]]:
    """fn name -> (prefix, suffix) around its body in the all-`todo!()` skeleton, for FIM."""
    skeleton = render_impl(plan)
    applied = apply(text, skeleton)
    out: dict[str, tuple[str, str]] = {}
    pos = skeleton.at
    for name, sig in plan.missing:
        piece = _item_text(sig, TODO_BODY, plan.inner)
        start = applied.index(piece, pos)
        pos = start + len(piece)
        if not _is_fn(sig):
            continue
        open_end = start + piece.index("{\n") + 2
        body_at = open_end + len(plan.inner) + 4
        out[name] = (applied[:body_at], applied[body_at + len(TODO_BODY):])
    return out


def implement_trait(text: str, offset: int, sources: Mapping[str, str],
                    bodies: Mapping[str, str | None] | None = None) -> Insertion | None:
    """Insert the trait's missing items at the end of the impl block at `offset`."""
    plan = plan_impl(text, offset, sources)
    return None if plan is None else render_impl(plan, bodies)


def _item_text(sig: str, body: str, indent: str) -> str:
    if sig.startswith("type "):
        return f"{indent}{sig} = ();"
    if sig.startswith("const "):
        return f"{indent}{sig} = {TODO_BODY};"
    return f"{indent}{sig} {{\n{reindent(body, indent + '    ')}\n{indent}}}"


def reindent(body: str, indent: str) -> str:
    """`body` (its first line may lack its indentation) re-indented under `indent`."""
    lines = body.strip("\n").splitlines() or [TODO_BODY]
    first, rest = lines[0].strip(), textwrap.dedent("\n".join(lines[1:])).splitlines()
    return "\n".join(indent + ln if ln.strip() else "" for ln in [first, *rest]).rstrip()


# -- fill a match -------------------------------------------------------------------------

def enum_variants(name: str, sources: Mapping[str, str]) -> list[tuple[str, str]]:
    """(variant, pattern tail) of enum `name`: ("A", "(..)"), ("B", " { .. }"), ("C", "")."""
    for _, text in _ordered(sources):
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


def _catch_all(src: _Src, pattern: Node) -> bool:
    """`_` or a bare binding (`other`) without a guard: the match is already exhaustive."""
    if pattern.child_by_field_name("condition") is not None:
        return False
    inner = [c for c in pattern.named_children]
    return len(inner) == 1 and (src.node_text(inner[0]) == "_" or inner[0].type == "identifier")


def fill_match(text: str, offset: int, sources: Mapping[str, str]) -> Insertion | None:
    """Add an arm `Enum::Variant.. => todo!(),` for each variant no arm names, in order.

    A guarded arm (`X if c =>`) does not count as covering its variant; or-patterns and
    `name @ Enum::X` bindings do.
    """
    src = _Src(text)
    match = src.enclosing(offset, {"match_expression"})
    block = match.child_by_field_name("body") if match is not None else None
    if block is None:
        return None
    arms = [a for a in block.named_children if a.type == "match_arm"]
    patterns = [a.child_by_field_name("pattern") for a in arms]
    if any(p is not None and _catch_all(src, p) for p in patterns):
        return None
    enum = target_name(FILL_MATCH, text, offset)
    if enum is None:
        return None
    named: set[str] = set()
    for p in patterns:
        if p is None or p.child_by_field_name("condition") is not None:
            continue
        named |= {v for e, v in _PATH_PAIR.findall(src.node_text(p)) if e == enum}
    known = {**sources, "<this file>": text, **std_sources()}
    missing = [(v, t) for v, t in enum_variants(enum, known) if v not in named]
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
    """(body, from_model): the model's text if it parses as exactly one function body.

    The text must parse with no error inside `fn __f() { ... }` and must not close that
    body early (`x } fn other() {` parses, but would add an item): the wrapper must stay
    the only item, ending at its own closing brace.
    """
    text = body.strip()
    if text.startswith("{") and text.endswith("}"):
        inner = text[1:-1].strip()
        if inner and body_or_todo(inner)[1]:
            text = inner
    if not text:
        return TODO_BODY, False
    wrapped = f"fn __f() {{\n{text}\n}}\n"
    root = _parser().parse(wrapped.encode("utf-8")).root_node
    items = root.named_children
    ok = (error_count(wrapped) == 0 and len(items) == 1 and items[0].type == "function_item"
          and items[0].end_byte == len(wrapped.encode("utf-8")) - 1)
    return (text, True) if ok else (TODO_BODY, False)


def fallback_note(fallbacks: Iterable[str], bodies: Mapping[str, str | None], *,
                  named: bool = True) -> str:
    """The title suffix saying which items got `todo!()` and why ("" when none did).

    A body of None means the model gave no answer (engine unavailable); any text that
    was rejected "did not parse".
    """
    fallbacks = list(fallbacks)
    bad = [n for n in fallbacks if bodies.get(n) is not None]
    silent = [n for n in fallbacks if bodies.get(n) is None]
    parts = []
    for names, why in ((bad, "the model's body did not parse"), (silent, "no model answer")):
        if names:
            parts.append(f"{', '.join(names)}: {why}" if named else why)
    if not parts:
        return ""
    return f" (todo!() in {'; '.join(parts)})" if named else f" (todo!(): {'; '.join(parts)})"


def apply(text: str, ins: Insertion) -> str:
    return text[:ins.at] + ins.text + text[ins.end:]


def no_new_errors(text: str, ins: Insertion) -> bool:
    """True if inserting leaves no more tree-sitter errors than before."""
    return error_count(apply(text, ins)) <= error_count(text)
