"""Signals around the cursor: the enclosing item, its identity, and what it uses.

The first step of context assembly (`context.py`): which item encloses the cursor
(`find_enclosing`), its identity while typing inside it (`item_key`), the paths its text uses
(`extract_identifiers`), the types in a function's signature (`signature_types`) and the
enums it matches on (`match_enums`). Pure functions of the text and the file's items; regexes
over the item's source, with comments and string literals skipped.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from indexer.items import FileIndex, Item

_ENCLOSING_KINDS = frozenset({
    "fn", "method", "trait_fn", "struct", "enum", "union", "trait", "impl", "mod",
    "const", "static", "type", "macro",
})
_KEYWORDS = frozenset("""
as async await break const continue crate dyn else enum extern false fn for if impl in let
loop match mod move mut pub ref return self Self static struct super trait true type unsafe
use where while yield macro_rules bool char str u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128
isize f32 f64
""".split())
_LEX = re.compile(r"""
  (?P<comment>//[^\n]*|/\*.*?\*/)
| (?P<string>b?r(?P<h>\#*)".*?"(?P=h)|b?"(?:[^"\\]|\\.)*"|b?'(?:[^'\\\n]|\\.[^'\n]*?)')
| (?P<path>(?:[A-Za-z_][A-Za-z0-9_]*\s*::\s*)*[A-Za-z_][A-Za-z0-9_]*)(?P<after>\s*[!(])?
""", re.S | re.X)
_TYPE_PATH = re.compile(r"\b((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Z][A-Za-z0-9_]*)\b")
_DECLARES = re.compile(
    r"(?:\b(?:fn|struct|enum|union|trait|mod|type|const|static|let|mut|macro_rules!)\s+)$")
_MATCH = re.compile(r"\bmatch\b")
_ARM_PATH = re.compile(r"((?:[A-Za-z_][A-Za-z0-9_]*::)+)([A-Z][A-Za-z0-9_]*)\s*(?=[({,|=]|=>)")
_ARM_PRELUDE = re.compile(r"(?:^|[{,|\n])\s*(Some|None|Ok|Err)\b")


@dataclass(frozen=True, slots=True)
class ItemKey:
    """Identity of the item around the cursor, stable while typing inside it."""

    path: str
    kind: str
    name: str
    module: str = ""
    parent: str | None = None
    trait_name: str | None = None
    self_type: str | None = None
    ordinal: int = 0

    def describe(self) -> str:
        """Human-readable, e.g. `method fmt (impl fmt::Display for Circle)`."""
        where = ""
        if self.trait_name:
            where = f" (impl {self.trait_name} for {self.self_type})"
        elif self.parent:
            where = f" (in {self.parent})"
        return f"{self.kind} {self.name}{where}"



def find_enclosing(fi: FileIndex, line: int) -> Item | None:
    """The innermost item whose lines (doc comments included) contain `line`."""
    best: Item | None = None
    for it in fi.items:
        if it.kind not in _ENCLOSING_KINDS:
            continue
        start = min(it.outer_start_line, it.start_line) if it.outer_start_byte else it.start_line
        if start <= line <= it.end_line and (
                best is None or (it.end_byte - it.start_byte) < (best.end_byte - best.start_byte)):
            best = it
    return best


def item_key(fi: FileIndex, item: Item) -> ItemKey:
    """The identity of `item`: no positions, so typing inside it keeps it."""
    same = [it for it in fi.items
            if (it.kind, it.name, it.parent, it.trait_name, it.self_type, it.module) == (
                item.kind, item.name, item.parent, item.trait_name, item.self_type, item.module)]
    ordinal = next((i for i, it in enumerate(same) if it.start_byte == item.start_byte), 0)
    return ItemKey(fi.path, item.kind, item.name, item.module, item.parent, item.trait_name,
                   item.self_type, ordinal)


def extract_identifiers(text: str) -> Counter[tuple[tuple[str, ...], str]]:
    """Paths used in Rust code with how they are used ("call", "macro", "method", "name").

    Comments and string literals are skipped; lowercase single names that are neither called
    nor macros are taken for local variables and left out.
    """
    out: Counter[tuple[tuple[str, ...], str]] = Counter()
    for m in _LEX.finditer(text):
        raw = m.group("path")
        if raw is None:
            continue
        segs = tuple(s.strip() for s in raw.split("::"))
        if segs[-1] in _KEYWORDS and segs[-1] not in ("Self",):
            continue
        if segs[-1] == "Self" or (len(segs) == 1 and segs[0] in _KEYWORDS):
            continue
        after = (m.group("after") or "").strip()
        before = text[m.start() - 1] if m.start() > 0 else ""
        if _DECLARES.search(text, max(0, m.start() - 16), m.start()):
            continue  # the name being declared, not a use
        if before == "." and len(segs) == 1:
            if after == "(":
                out[(segs, "method")] += 1
            continue
        how = "macro" if after == "!" else "call" if after == "(" else "name"
        last = segs[-1]
        if len(segs) == 1 and how == "name" and not last[:1].isupper():
            continue
        if len(segs) > 1 and segs[0] in ("self", "Self") and len(segs) == 2 and how != "call":
            continue
        out[(segs, how)] += 1
    return out


def signature_types(item: Item) -> list[tuple[str, ...]]:
    """Type paths in a function's parameters and return type, in order, without repeats."""
    sig = item.signature
    at = sig.find("(")
    paths: list[tuple[str, ...]] = []
    for m in _TYPE_PATH.finditer(sig, at if at >= 0 else 0):
        segs = tuple(m.group(1).split("::"))
        if segs[-1] != "Self" and segs not in paths and not segs[-1].isupper():
            paths.append(segs)
    return paths


def match_enums(region: str, item: Item) -> list[tuple[tuple[str, ...], str]]:
    """Enums matched on in `region`: `Enum::Variant` arm paths and prelude variants."""
    code = _LEX.sub(lambda m: " " * len(m.group(0)) if m.group("path") is None else m.group(0),
                    region)
    out: list[tuple[tuple[str, ...], str]] = []
    seen = set()
    for m in _MATCH.finditer(code):
        body = _braced(code, m.end())
        if body is None:
            continue
        scrutinee = " ".join(code[m.end():body[0]].split())
        arms = code[body[0]:body[1]]
        for pm in _ARM_PATH.finditer(arms):
            segs = tuple(s for s in pm.group(1).split("::") if s)
            if segs not in seen:
                seen.add(segs)
                out.append((segs, f"enum matched on in `match {scrutinee}`"))
        for pm in _ARM_PRELUDE.finditer(arms):
            segs = (pm.group(1),)
            if segs not in seen:
                seen.add(segs)
                out.append((segs, f"enum of {pm.group(1)} matched on in `match {scrutinee}`"))
    return out


def _braced(code: str, start: int) -> tuple[int, int] | None:
    """(open, close) offsets of the first `{ ... }` block at or after `start`."""
    open_at = code.find("{", start)
    if open_at < 0:
        return None
    depth = 0
    for i in range(open_at, len(code)):
        ch = code[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return open_at, i
    return open_at, len(code)
