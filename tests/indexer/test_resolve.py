"""Name resolution: module tree, `use` paths, re-exports, globs, super/self, std, by name."""

from __future__ import annotations

import pytest

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
