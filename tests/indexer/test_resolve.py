"""Name resolution: module tree, `use` paths, re-exports, globs, super/self, std, by name."""

from __future__ import annotations

import logging
import posixpath
import time

import pytest

from indexer import resolve
from indexer.items import MemoryIndex
from indexer.parse import parse_file
from indexer.resolve import Resolver, crate_of
from tests.indexer.ctx_fixtures import STD_PATH, load_crate


@pytest.fixture(scope="module")
def geo() -> Resolver:
    return Resolver(load_crate("ctx_geo"))


def where(res) -> list[tuple[str, str, str]]:
    return [(it.kind, it.name, it.path) for it in res.items] if res else []


@pytest.mark.parametrize(("path", "module"), [
    ("src/lib.rs", ("geo",)),
    ("src/units.rs", ("geo", "units")),                      # mod x; as x.rs
    ("src/shapes/mod.rs", ("geo", "shapes")),                # mod x; as x/mod.rs
    ("src/shapes/circle.rs", ("geo", "shapes", "circle")),   # nested under mod.rs
    ("src/support/colour_impl.rs", ("geo", "colour")),       # #[path = "..."]
    (STD_PATH, ("std",)),
])
def test_module_tree(geo: Resolver, path: str, module: tuple) -> None:
    assert geo.module_of(path) == module


@pytest.mark.parametrize(("path", "name", "expected", "how"), [
    ("src/render.rs", "Shape", ("enum", "Shape", "src/shapes/mod.rs"), "use crate::shapes::Shape"),
    ("src/render.rs", "blend", ("fn", "blend", "src/support/colour_impl.rs"), "use crate::colour"),
    ("src/render.rs", "Colour", ("struct", "Rgb", "src/support/colour_impl.rs"),
     "pub use crate::colour::Rgb"),
    ("src/render.rs", "Meters", ("struct", "Meters", "src/units.rs"), "glob use crate::units::*"),
    ("src/render.rs", "Circle", ("struct", "Circle", "src/shapes/circle.rs"),
     "pub use crate::shapes::circle::Circle"),
    ("src/shapes/circle.rs", "Area", ("trait", "Area", "src/shapes/mod.rs"), "use super::Area"),
    ("src/shapes/polygon.rs", "Shape", ("enum", "Shape", "src/shapes/mod.rs"),
     "glob use super::*"),
    ("src/render.rs", "Option", ("enum", "Option", STD_PATH), "std prelude"),
    ("src/render.rs", "Some", ("enum", "Option", STD_PATH), "std prelude"),
    ("src/lib.rs", "VERSION", ("const", "VERSION", "src/lib.rs"), "same module"),
])
def test_resolve_name(geo: Resolver, path: str, name: str, expected: tuple, how: str) -> None:
    res = geo.resolve_name(name, path)
    assert res is not None and not res.by_name
    assert where(res)[0] == expected
    assert how in res.how


@pytest.mark.parametrize(("path", "segs", "expected"), [
    ("src/render.rs", ("fmt", "Display"), ("trait", "Display", STD_PATH)),
    ("src/render.rs", ("std", "fmt", "Debug"), ("trait", "Debug", STD_PATH)),
    ("src/render.rs", ("core", "fmt", "Debug"), ("trait", "Debug", STD_PATH)),  # core -> std
    ("src/shapes/circle.rs", ("super", "Shape"), ("enum", "Shape", "src/shapes/mod.rs")),
    ("src/shapes/circle.rs", ("super", "Shape", "Circle"), ("enum", "Shape", "src/shapes/mod.rs")),
    ("src/shapes/mod.rs", ("self", "circle", "Circle"), ("struct", "Circle",
                                                         "src/shapes/circle.rs")),
    ("src/shapes/mod.rs", ("circle", "Circle"), ("struct", "Circle", "src/shapes/circle.rs")),
    ("src/render.rs", ("crate", "Shape"), ("enum", "Shape", "src/shapes/mod.rs")),  # pub use
    ("src/render.rs", ("crate", "prelude", "Colour"), ("struct", "Rgb",
                                                       "src/support/colour_impl.rs")),
])
def test_resolve_path(geo: Resolver, path: str, segs: tuple, expected: tuple) -> None:
    assert where(geo.resolve_path(segs, path))[:1] == [expected]


def test_unknown_names_fall_back_to_by_name_or_nothing(geo: Resolver) -> None:
    res = geo.resolve_name("to_feet", "src/lib.rs")
    assert res is not None and res.by_name and where(res)[0][2] == "src/units.rs"
    assert geo.resolve_name("NoSuchThing", "src/lib.rs") is None
    assert geo.resolve_path(("crate", "nope", "X"), "src/lib.rs") is None


def _index(files: dict[str, str], crate: str = "c") -> MemoryIndex:
    index = MemoryIndex()
    for p, t in files.items():
        index.put(parse_file(p, t.encode(), crate=crate), t)
    return index


def test_glob_and_re_export_cycles_terminate() -> None:
    r = Resolver(_index({
        "src/lib.rs": "mod a;\nmod b;\npub use a::*;\n",
        "src/a.rs": "pub use crate::b::*;\npub use crate::b::Loop as Alias;\n",
        "src/b.rs": "pub use crate::a::*;\npub use crate::a::Alias as Loop;\n",
    }))
    assert r.resolve_name("Missing", "src/lib.rs") is None
    assert r.resolve_path(("crate", "a", "Alias"), "src/lib.rs") is None


def test_inline_modules_and_use_self_in_a_list() -> None:
    r = Resolver(_index({
        "src/lib.rs": "pub mod outer {\n    pub mod inner {\n        pub struct Deep;\n    }\n}\n"
                      "use outer::inner::{self};\nfn f() -> inner::Deep { todo!() }\n",
    }))
    assert r.module_of_item(r.items_named("Deep")[0]) == ("c", "outer", "inner")
    assert where(r.resolve_path(("inner", "Deep"), "src/lib.rs")) == [
        ("struct", "Deep", "src/lib.rs")]


def test_mod_in_inline_module_and_path_attr_in_subfolder() -> None:
    r = Resolver(_index({
        "src/main.rs": "mod net;\n",
        "src/net/mod.rs": "#[path = \"../wire/codec.rs\"]\npub mod codec;\npub mod tcp;\n",
        "src/wire/codec.rs": "pub fn encode() {}\n",
        "src/net/tcp.rs": "use super::codec::encode;\n",
    }))
    assert r.module_of("src/wire/codec.rs") == ("c", "net", "codec")
    assert r.module_of("src/net/tcp.rs") == ("c", "net", "tcp")
    assert where(r.resolve_name("encode", "src/net/tcp.rs")) == [
        ("fn", "encode", "src/wire/codec.rs")]


def test_crate_names_from_paths() -> None:
    from indexer.items import FileIndex
    assert crate_of(FileIndex("x", "h", 0, crate="my-crate")) == "my_crate"
    assert crate_of(FileIndex("<dep:serde-1.0.2>/src/lib.rs", "h", 0)) == "serde"
    assert crate_of(FileIndex("<std>/core/src/lib.rs", "h", 0)) == "core"
    assert crate_of(FileIndex("tool/src/main.rs", "h", 0)) == "tool"


# -- glob re-export cycles and chains (openssl-sys, gtk4, rsass patterns) --------------------

#: Far above what the memoised resolver needs (milliseconds); the unmemoised one took
#: 10+ seconds on a single missing name in `ctx_globs`.
GLOB_TIME_LIMIT_S = 1.0


@pytest.fixture(scope="module")
def globs() -> Resolver:
    return Resolver(load_crate("ctx_globs"))


@pytest.mark.parametrize(("path", "name", "expected", "how"), [
    ("src/ffi/ssl.rs", "BIO_CTX", ("struct", "BIO_CTX", "src/ffi/bio.rs"), "glob use"),
    ("src/ffi/x509.rs", "aes_new", ("fn", "aes_new", "src/ffi/aes.rs"), "glob use"),
    ("src/ffi/aes.rs", "Button", ("struct", "Button", "src/auto/button.rs"),
     "pub use self::button::Button"),
    ("src/auto/button.rs", "WidgetExt", ("trait", "WidgetExt", "src/auto/widget.rs"),
     "glob use crate::auto::traits::*"),
    ("src/lib.rs", "Deepest", ("struct", "Deepest", "src/chain.rs"), "glob use self::c20::*"),
    ("src/ffi/rsa.rs", "Deepest", ("struct", "Deepest", "src/chain.rs"), "glob use self::c20::*"),
    ("src/prelude.rs", "Root", ("struct", "Root", "src/lib.rs"), "glob use crate::*"),
])
def test_glob_cycles_and_chains_resolve(globs: Resolver, path: str, name: str, expected: tuple,
                                        how: str) -> None:
    t0 = time.perf_counter()
    res = globs.resolve_name(name, path)
    assert time.perf_counter() - t0 < GLOB_TIME_LIMIT_S
    assert res is not None and not res.by_name
    assert where(res)[0] == expected
    assert how in res.how


def test_glob_cycles_missing_names_are_fast_from_every_module() -> None:
    t0 = time.perf_counter()
    r = Resolver(load_crate("ctx_globs"))
    for path in sorted(p for p in r._file_module if p.startswith("src/")):
        assert r.resolve_name("NoSuchThing", path) is None
        assert r.resolve_path(("crate", "ffi", "NoSuchThing"), path) is None
        assert r.resolve_path(("crate", "chain", "c1", "c2", "Deepest"), path) is not None
    assert time.perf_counter() - t0 < GLOB_TIME_LIMIT_S


def test_cycle_cut_results_are_not_memoised_as_misses() -> None:
    # Resolving from the root first explores `a` while the root is being expanded (a cycle
    # cut): `a`'s miss there must not be kept for a later query that reaches `a` afresh.
    r = Resolver(_index({
        "src/lib.rs": "mod a;\nmod b;\nmod c;\npub use a::*;\npub use b::*;\n",
        "src/a.rs": "pub use crate::*;\n",
        "src/b.rs": "pub struct Thing;\n",
        "src/c.rs": "use crate::a::*;\n",
    }))
    assert where(r.resolve_name("Thing", "src/lib.rs")) == [("struct", "Thing", "src/b.rs")]
    assert where(r.resolve_name("Thing", "src/c.rs")) == [("struct", "Thing", "src/b.rs")]
    assert where(r.resolve_name("Thing", "src/a.rs")) == [("struct", "Thing", "src/b.rs")]
    assert not r.resolve_name("Thing", "src/c.rs").by_name


def _glob_tree(n: int) -> dict[str, str]:
    """`n` modules in a binary tree, each `pub use super::*;` and `pub use child::*;`."""
    files: dict[str, str] = {}
    path = {0: "src/lib.rs"}
    for i in range(n):
        kids = [k for k in (2 * i + 1, 2 * i + 2) if k < n]
        own = posixpath.dirname(path[i]) if i == 0 else path[i][:-3]
        lines = [] if i == 0 else ["pub use super::*;"]
        for k in kids:
            path[k] = f"{own}/m{k}.rs"
            lines += [f"pub mod m{k};", f"pub use m{k}::*;", f"pub use self::m{k}::*;"]
        lines.append(f"pub struct Item{i};")
        files[path[i]] = "\n".join(lines) + "\n"
    return files


def test_synthetic_200_module_glob_tree_is_fast() -> None:
    t0 = time.perf_counter()
    r = Resolver(_index(_glob_tree(200), crate="tree"))
    paths = sorted(r._file_module)
    assert len(paths) == 200
    for p in paths:
        assert r.resolve_name("Missing", p) is None
    for p in paths[::17]:
        res = r.resolve_name("Item199", p)
        assert res is not None and not res.by_name and res.items[0].name == "Item199"
        res = r.resolve_name("Item0", p)
        assert res is not None and not res.by_name and res.items[0].path == "src/lib.rs"
    assert time.perf_counter() - t0 < 2.0


def test_step_budget_degrades_to_by_name_and_logs(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(resolve, "STEP_BUDGET", 3)
    r = Resolver(load_crate("ctx_globs"))
    with caplog.at_level(logging.INFO, logger="indexer.resolve"):
        res = r.resolve_name("Deepest", "src/ffi/rsa.rs")
        path_res = r.resolve_path(("crate", "nope", "Deepest"), "src/ffi/rsa.rs")
    assert res is not None and res.by_name and "budget" in res.how
    assert where(res)[0] == ("struct", "Deepest", "src/chain.rs")
    assert path_res is not None and path_res.by_name
    assert any("gave up" in rec.getMessage() for rec in caplog.records)
