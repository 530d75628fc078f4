"""Rendering items as context text: file skeletons (bodies elided) and single definitions.

A skeleton shows the chosen items of one file in source order, nested in their containers
(`impl X for Y {`, `trait T {`, `mod m {`), with doc comments (first lines), `#[derive]`
attributes and signatures; bodies become `{ ... }`. A selected struct, enum, union or trait
brings its fields, variants or associated items along: they are part of its definition.

`FileSkeleton` is built once per file version (the caller caches it by content hash) and
renders any selection without touching the source again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from indexer.items import FileIndex, Item

#: Doc comment lines shown per item in a skeleton (the summary line, usually).
DOC_MAX_LINES = 2
#: Attributes shown in skeletons (others are noise for completion).
SHOWN_ATTR_PREFIXES = ("#[derive",)
_CONTAINERS = frozenset({"struct", "enum", "union", "trait", "impl", "mod"})
#: Containers whose members come along when the container is chosen.
_WHOLE = frozenset({"struct", "enum", "union", "trait"})
_MEMBERS = frozenset({"field", "variant", "trait_fn", "type", "const"})
_INDENT = "    "


@dataclass(frozen=True, slots=True)
class _Node:
    item: Item
    parent: int          # index of the container item, -1 at top level
    depth: int


class FileSkeleton:
    """The items of one file version, with their nesting, ready to render."""

    def __init__(self, fi: FileIndex) -> None:
        self.path = fi.path
        self.content_hash = fi.content_hash
        items = sorted(fi.items, key=lambda it: (it.start_byte, -it.end_byte))
        nodes: list[_Node] = []
        stack: list[int] = []
        for it in items:
            while stack and nodes[stack[-1]].item.end_byte <= it.start_byte:
                stack.pop()
            parent = stack[-1] if stack else -1
            # Items nested in a fn body (local fns, consts) are not part of the skeleton.
            if parent >= 0 and nodes[parent].item.kind not in _CONTAINERS:
                nodes.append(_Node(it, -2, 0))
                continue
            depth = nodes[parent].depth + 1 if parent >= 0 else 0
            nodes.append(_Node(it, parent, depth))
            if it.kind in _CONTAINERS and (it.end_line > it.start_line or it.kind != "mod"):
                stack.append(len(nodes) - 1)
        self.nodes = nodes
        self.children: list[list[int]] = [[] for _ in nodes]
        for i, n in enumerate(nodes):
            if n.parent >= 0:
                self.children[n.parent].append(i)
        self._leaves: dict[int, list[str]] = {}     # rendered lines of non-containers
        self._heads: dict[int, list[str]] = {}      # doc and attribute lines, in place
        self._by_name: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            if n.parent != -2:
                self._by_name.setdefault(n.item.name, []).append(i)
                if n.item.kind == "impl" and n.item.trait_name:
                    trait = n.item.trait_name.rsplit("::", 1)[-1]
                    self._by_name.setdefault(trait, []).append(i)

    def indices(self, names: Collection[str]) -> set[int]:
        """Node indices of the items called `names` (impls count under both of their names;
        fields, variants and modules only come along with their container)."""
        out: set[int] = set()
        for name in names:
            out.update(i for i in self._by_name.get(name, ())
                       if self.nodes[i].item.kind not in ("field", "variant", "mod"))
        return out

    def item_lines(self, i: int) -> list[str]:
        """The lines one item contributes alone (its container headers not included)."""
        return self._render_node(i, set(), {i}, standalone=True)

    def ancestors(self, i: int) -> list[int]:
        """Indices of the containers around node `i`, innermost first."""
        out = []
        p = self.nodes[i].parent
        while p >= 0:
            out.append(p)
            p = self.nodes[p].parent
        return out

    def own_lines(self, i: int) -> list[str]:
        """The lines node `i` adds to a skeleton: a container's header and closing lines, or
        an item with the members that come along with it (fields, variants, trait items)."""
        it = self.nodes[i].item
        if it.kind in _WHOLE:
            return list(self._render_node(i, {i}, {i}))
        return list(self._render_node(i, set(), {i}))

    def render(self, names: Collection[str]) -> str:
        """Skeleton of the items called `names`, in source order."""
        return self.render_indices(self.indices(names))

    def render_indices(self, chosen: set[int]) -> str:
        """Skeleton of the chosen nodes (plus their containers and whole-type members)."""
        # An inherent impl says nothing without its methods.
        chosen = {i for i in chosen if self.nodes[i].item.kind != "impl"
                  or self.nodes[i].item.trait_name
                  or any(k in chosen for k in self.children[i])}
        shown = set(chosen)
        for i in chosen:
            p = self.nodes[i].parent
            while p >= 0:
                shown.add(p)
                p = self.nodes[p].parent
        lines: list[str] = []
        nodes = self.nodes
        for i in sorted(i for i in shown if nodes[i].parent == -1):
            lines.extend(self._render_node(i, shown, chosen))
        return "".join(lines)

    def _render_node(self, i: int, shown: set[int], chosen: set[int], *,
                     standalone: bool = False) -> list[str]:
        n = self.nodes[i]
        it = n.item
        leaf = not standalone and it.kind not in _CONTAINERS
        if leaf and (got := self._leaves.get(i)) is not None:
            return got  # the same lines whatever is shown around it
        ind = "" if standalone else _INDENT * n.depth
        if standalone:
            out = self._head_lines(it, ind)
        else:
            head = self._heads.get(i)
            if head is None:
                head = self._heads[i] = self._head_lines(it, ind)
            out = list(head)
        sig = it.signature
        kids = self.children[i]
        whole = i in chosen and it.kind in _WHOLE
        inner = [k for k in kids if k in shown or (whole and self.nodes[k].item.kind in _MEMBERS)]
        if it.kind in _CONTAINERS and (inner or it.kind in ("enum", "trait", "impl")
                                       or (kids and it.kind != "mod")):
            out.append(f"{ind}{sig} {{\n")
            if standalone:
                inner = []
            nodes = self.nodes
            for k in inner:
                if nodes[k].item.kind not in _CONTAINERS:
                    # A leaf renders the same whatever is shown or chosen around it.
                    out.extend(self._render_node(k, shown, chosen))
                elif whole:
                    out.extend(self._render_node(k, shown | {k}, chosen | {k}))
                else:
                    out.extend(self._render_node(k, shown, chosen))
            if standalone or (kids and len(inner) < len(kids) and it.kind != "enum"):
                out.append(f"{ind}{_INDENT}...\n" if standalone or it.kind != "struct"
                           else f"{ind}{_INDENT}// other fields elided\n")
            out.append(f"{ind}}}\n")
        elif it.kind == "field":
            out.append(f"{ind}{sig},\n")
        elif it.kind == "variant":
            out.append(f"{ind}{sig},\n")
        elif it.kind in ("fn", "method", "macro"):
            out.append(f"{ind}{sig} {{ ... }}\n")
        elif it.kind == "mod":
            out.append(f"{ind}{sig};\n")
        else:
            out.append(f"{ind}{sig};\n")
        if leaf:
            self._leaves[i] = out
        return out

    @staticmethod
    def _head_lines(it: Item, ind: str) -> list[str]:
        """An item's doc comment (first lines) and shown attributes."""
        out = [f"{ind}/// {d}\n" if d else f"{ind}///\n"
               for d in it.doc.split("\n")[:DOC_MAX_LINES] if it.doc]
        out += [f"{ind}{a}\n" for a in it.attrs if a.startswith(SHOWN_ATTR_PREFIXES)]
        return out

    def container_of(self, item: Item) -> Item | None:
        """The impl, trait, enum or struct an item is declared in."""
        for n in self.nodes:
            if n.item is item or n.item == item:
                return self.nodes[n.parent].item if n.parent >= 0 else None
        return None


def definition_text(item: Item, source: bytes, container: Item | None, *, full: bool) -> str:
    """One item as a context chunk: its source (docs, attributes, body) when `full`, else
    its signature; a method or trait fn is wrapped in its `impl`/`trait` header."""
    if full:
        start = source.rfind(b"\n", 0, item.outer_start_byte or item.start_byte) + 1
        body = source[start:item.end_byte].decode("utf-8", "replace")
    else:
        docs = "".join(f"/// {d}\n" for d in item.doc.split("\n")[:DOC_MAX_LINES] if item.doc)
        attrs = "".join(f"{a}\n" for a in item.attrs if a.startswith(SHOWN_ATTR_PREFIXES))
        end = ";" if item.kind in ("trait_fn", "const", "static", "type", "field") else (
            " { ... }")
        body = f"{docs}{attrs}{item.signature}{end}"
    if container is not None and item.kind in ("method", "trait_fn", "type", "const"):
        if full:
            return f"{container.signature} {{\n{body}\n}}"
        return f"{container.signature} {{\n{_INDENT}" + body.replace("\n", "\n" + _INDENT) + "\n}"
    return body
