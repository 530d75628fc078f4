"""Plain records the index holds: items, `use` declarations, modules, one file's parse.

These are the indexer's data model, shared by parsing (`parse.py`), storage
(`store.py`) and context assembly (`context.py`, `rank.py`). Positions: bytes are
offsets into the UTF-8 source, lines are 0-based. Paths are workspace-relative POSIX
strings (dependency and std files: `<dep:crate-version>/src/...`, `<std>/core/src/...`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

#: Item kinds, as stored (`Item.kind`).
ITEM_KINDS = (
    "fn",            # free function
    "method",        # fn inside an impl
    "trait_fn",      # fn declared in a trait (with or without default body)
    "struct", "enum", "variant", "union", "trait", "impl", "mod",
    "const", "static", "type",   # type alias (also associated types in traits/impls)
    "macro",         # macro_rules!
    "field",         # named struct field
)


@dataclass(frozen=True, slots=True)
class Item:
    """One definition. `signature` is its source text with bodies elided."""

    kind: str
    name: str
    path: str
    module: str                     # e.g. "crate::parser::lexer"
    signature: str
    doc: str = ""                   # doc comment text without the /// or //! markers
    attrs: tuple[str, ...] = ()     # e.g. ("#[derive(Debug, Clone)]",)
    start_byte: int = 0
    end_byte: int = 0
    start_line: int = 0
    end_line: int = 0
    parent: str | None = None       # enclosing impl/trait/enum/struct name
    trait_name: str | None = None   # for impl blocks and their items: the trait implemented
    self_type: str | None = None    # for impl blocks and their items: the type implemented on
    is_pub: bool = False
    outer_start_byte: int = 0       # start including the doc comments and attributes above
    outer_start_line: int = 0


@dataclass(frozen=True, slots=True)
class UseDecl:
    """One imported path of a `use` tree, fully expanded: `use a::{b, c as d};` gives two."""

    path: tuple[str, ...]           # ("crate", "foo", "Bar"), ("super", "x"), ("std", "fmt")
    alias: str | None = None        # `as` name; None when the last segment is the name
    glob: bool = False              # `use foo::*;` (path is the module)
    is_pub: bool = False            # `pub use` re-export
    line: int = 0
    module: str = ""                # module the `use` appears in (inline mods count)


@dataclass(frozen=True, slots=True)
class ModDecl:
    """`mod x;` (inline=False, body in x.rs or x/mod.rs or a #[path]) or `mod x { ... }`."""

    name: str
    inline: bool
    path_attr: str | None = None    # value of #[path = "..."]
    line: int = 0
    module: str = ""                # module the declaration appears in


@dataclass(frozen=True, slots=True)
class FileIndex:
    """Everything the index keeps for one file (one parse)."""

    path: str
    content_hash: str
    size: int
    items: tuple[Item, ...] = ()
    uses: tuple[UseDecl, ...] = ()
    mods: tuple[ModDecl, ...] = ()
    references: tuple[str, ...] = ()    # distinct identifiers/type names referenced, sorted
    errors: tuple[str, ...] = ()        # parse problems (the file is still indexed)
    read_only: bool = False             # dependency / std source
    crate: str = ""                     # crate name the file belongs to
    module: str = ""                    # the file's module path, e.g. "crate::a::b"
    doc: str = ""                       # the file's //! module doc


@dataclass(frozen=True, slots=True)
class SkippedFile:
    path: str
    reason: str


class IndexView(Protocol):
    """What context assembly needs from an index (the SQLite store implements it)."""

    generation: int

    def files(self) -> list[str]: ...
    def file(self, path: str) -> FileIndex | None: ...
    def text(self, path: str) -> str | None: ...
    def items_named(self, name: str) -> list[Item]: ...


@dataclass
class MemoryIndex:
    """An in-memory IndexView (tests, and the editor-buffer overlay)."""

    entries: dict[str, FileIndex] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    generation: int = 0

    def put(self, fi: FileIndex, text: str) -> None:
        self.entries[fi.path] = fi
        self.texts[fi.path] = text
        self.generation += 1

    def files(self) -> list[str]:
        return sorted(self.entries)

    def file(self, path: str) -> FileIndex | None:
        return self.entries.get(path)

    def text(self, path: str) -> str | None:
        return self.texts.get(path)

    def items_named(self, name: str) -> list[Item]:
        return [it for fi in self.entries.values() for it in fi.items if it.name == name]
