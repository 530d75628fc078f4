"""JSON encoding of `FileIndex` records: the store's row format and the workers' reply format.

Positional lists in dataclass field order keep rows small; `FINGERPRINT` (the field names)
is stored beside them, so a changed record layout rebuilds the database instead of
misreading it. JSON rather than pickle: nothing unpickles data derived from workspace files
(reliability-notes §7, "0 pickle.find_class").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields

from indexer.items import FileIndex, Item, ModDecl, UseDecl

_ITEM = tuple(f.name for f in fields(Item))
_USE = tuple(f.name for f in fields(UseDecl))
_MOD = tuple(f.name for f in fields(ModDecl))
_FILE = tuple(f.name for f in fields(FileIndex))
_NESTED = {"items", "uses", "mods", "references", "errors"}
#: Changes whenever a record gains, loses or reorders a field.
FINGERPRINT = hashlib.sha256(repr((_ITEM, _USE, _MOD, _FILE)).encode()).hexdigest()[:16]


def encode(fi: FileIndex) -> str:
    """One FileIndex as compact JSON."""
    return json.dumps({
        **{k: getattr(fi, k) for k in _FILE if k not in _NESTED},
        "items": [[None if k == "path" else getattr(it, k) for k in _ITEM] for it in fi.items],
        "uses": [[getattr(u, k) for k in _USE] for u in fi.uses],
        "mods": [[getattr(m, k) for k in _MOD] for m in fi.mods],
        "references": fi.references,
        "errors": fi.errors,
    }, ensure_ascii=False, separators=(",", ":"))


def encode_mods(fi: FileIndex) -> str:
    """Only the `mod` declarations (what module resolution needs)."""
    return json.dumps([[getattr(m, k) for k in _MOD] for m in fi.mods], separators=(",", ":"))


def decode_mods(text: str) -> tuple[ModDecl, ...]:
    return tuple(ModDecl(*m) for m in json.loads(text))


def _item_value(key: str, value: object, path: str) -> object:
    if key == "path":
        return path             # items always live in their file; not repeated per row
    return tuple(value) if key == "attrs" else value


def decode(text: str) -> FileIndex:
    """Inverse of `encode`. Raises ValueError/TypeError/KeyError on a malformed row."""
    d = json.loads(text)
    return FileIndex(
        **{k: d[k] for k in _FILE if k not in _NESTED and k in d},
        items=tuple(Item(*(_item_value(k, v, d["path"]) for k, v in zip(_ITEM, row,
                                                                           strict=True)))
                    for row in d["items"]),
        uses=tuple(UseDecl(*(tuple(v) if k == "path" else v for k, v in zip(_USE, row,
                                                                         strict=True)))
                   for row in d["uses"]),
        mods=tuple(ModDecl(*row) for row in d["mods"]),
        references=tuple(d["references"]),
        errors=tuple(d["errors"]),
    )
