"""Workspace discovery: Cargo layout, .gitignore, skips, dependencies, std, module paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from indexer.items import FileIndex
from indexer.parse import parse_file
from indexer.workspace import (
    STD_STUB,
    ScanOptions,
    SourceFile,
    discover,
    relocate,
    resolve_path_modules,
)

FIX = Path(__file__).parent / "fixtures"
NO_EXTRAS = ScanOptions(include_deps=False, include_std=False)


def by_path(files: list[SourceFile]) -> dict[str, SourceFile]:
    return {f.path: f for f in files}


def test_cargo_workspace_members_crates_and_modules() -> None:
    d = discover([FIX / "cargo_ws"], NO_EXTRAS)
    files = by_path(d.files)
    assert sorted(files) == [
        "crates/tool/lib.rs", "crates/tool/main_tool.rs",
        "crates/word-core/src/a.rs", "crates/word-core/src/a/b.rs",
        "crates/word-core/src/gen/p.rs", "crates/word-core/src/gen/q.rs",
        "crates/word-core/src/inline/x.rs", "crates/word-core/src/lib.rs",
    ]   # vendor/ next to Cargo.toml is not workspace source
    assert {c.name for c in d.crates} == {"tool", "word_core"}
    assert files["crates/word-core/src/a/b.rs"].crate == "word_core"
    assert files["crates/word-core/src/a/b.rs"].module == "crate::a::b"
    # Explicit [lib] / [[bin]] paths are crate roots.
    assert files["crates/tool/lib.rs"].module == "crate"
    assert files["crates/tool/main_tool.rs"].module == "crate"
    assert all(not f.read_only for f in d.files)
    assert all(Path(f.abspath).is_file() for f in d.files)


def test_mod_tree_resolution_path_attr_inline_and_non_mod_rs() -> None:
    d = discover([FIX / "cargo_ws"], NO_EXTRAS)
    parsed = [parse_file(f.path, Path(f.abspath).read_bytes(), module=f.module)
              for f in d.files]
    moved = resolve_path_modules(parsed)
    core = "crates/word-core/src/"
    assert moved[core + "a.rs"] == "crate::a"
    assert moved[core + "a/b.rs"] == "crate::a::b"              # beside a non-mod-rs file
    assert moved[core + "inline/x.rs"] == "crate::inline::x"    # `mod x;` in an inline mod
    assert moved[core + "gen/p.rs"] == "crate::p"               # #[path = "gen/p.rs"]
    assert moved[core + "gen/q.rs"] == "crate::p::q"            # a #[path] file owns its dir
    fi = next(f for f in parsed if f.path == core + "gen/q.rs")
    assert fi.module == "crate::gen::q"
    moved_fi = relocate(fi, moved[fi.path])
    assert moved_fi.module == "crate::p::q"
    assert [it.module for it in moved_fi.items] == ["crate::p::q"]


def test_fixture_crate_path_attr() -> None:
    d = discover([FIX / "wordcount"], NO_EXTRAS)
    parsed = [parse_file(f.path, Path(f.abspath).read_bytes(), module=f.module)
              for f in d.files]
    moved = resolve_path_modules(parsed)
    assert moved["src/weird/other_name.rs"] == "crate::renamed"
    assert moved["src/text/lexer.rs"] == "crate::text::lexer"
    assert "src/lib.rs" not in moved


def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_gitignore_hidden_target_env_and_size_limit(tmp_path: Path) -> None:
    make_tree(tmp_path, {
        "Cargo.toml": '[package]\nname = "w"\n',
        ".gitignore": "/generated/\nsecret_*.rs\n!secret_ok.rs\n",
        "src/lib.rs": "pub fn a() {}\n",
        "src/secret_key.rs": "const KEY: &str = \"CANARY\";\n",
        "src/secret_ok.rs": "fn ok() {}\n",
        "src/sub/.gitignore": "local.rs\n",
        "src/sub/local.rs": "fn l() {}\n",
        "src/sub/kept.rs": "fn k() {}\n",
        "src/target/mod.rs": "fn t() {}\n",      # a module named target is source
        "generated/g.rs": "fn g() {}\n",
        "target/debug/build/out.rs": "fn o() {}\n",
        ".hidden/h.rs": "fn h() {}\n",
        ".env": "TOKEN=CANARY\n",
        ".env.rs": "fn e() {}\n",
        "src/big.rs": "// " + "x" * 2000 + "\n",
        "README.md": "not rust\n",
    })
    d = discover([tmp_path], ScanOptions(max_file_bytes=1000, include_deps=False,
                                         include_std=False))
    assert sorted(f.path for f in d.files) == [
        "src/lib.rs", "src/secret_ok.rs", "src/sub/kept.rs", "src/target/mod.rs"]
    skipped = {s.path: s.reason for s in d.skipped}
    assert skipped["src/secret_key.rs"] == "gitignored"
    assert skipped["src/sub/local.rs"] == "gitignored"
    assert skipped["src/big.rs"].startswith("too large (2004 bytes > 1000)")


def test_multi_root_and_folder_without_cargo(tmp_path: Path) -> None:
    make_tree(tmp_path / "one", {"main.rs": "fn main() {}\n", "util/helpers.rs": "fn h() {}\n"})
    make_tree(tmp_path / "two", {"Cargo.toml": '[package]\nname = "two"\n',
                                 "src/lib.rs": "fn t() {}\n"})
    d = discover([tmp_path / "one", tmp_path / "two"], NO_EXTRAS)
    files = by_path(d.files)
    assert sorted(files) == ["one/main.rs", "one/util/helpers.rs", "two/src/lib.rs"]
    assert files["one/util/helpers.rs"].module == "crate::util::helpers"
    assert files["one/main.rs"].module == "crate"
    assert (files["two/src/lib.rs"].crate, files["two/src/lib.rs"].module) == ("two", "crate")
    single = discover([tmp_path / "one"], NO_EXTRAS)
    assert sorted(f.path for f in single.files) == ["main.rs", "util/helpers.rs"]


def test_dependencies_from_registry_and_vendor_read_only() -> None:
    d = discover([FIX / "cargo_ws"], ScanOptions(include_std=False,
                                                 cargo_home=str(FIX / "cargo_home")))
    deps = {f.path: f for f in d.files if f.read_only}
    assert sorted(deps) == ["<dep:fakedep-0.1.0>/src/lib.rs", "<dep:vend-0.2.0>/src/lib.rs"]
    fake = deps["<dep:fakedep-0.1.0>/src/lib.rs"]
    assert (fake.crate, fake.module) == ("fakedep", "crate")
    assert deps["<dep:vend-0.2.0>/src/lib.rs"].crate == "vend"
    # Without a cargo home only vendor/ is searched.
    d2 = discover([FIX / "cargo_ws"], ScanOptions(include_std=False))
    assert [f.path for f in d2.files if f.read_only] == ["<dep:vend-0.2.0>/src/lib.rs"]


def test_std_from_rust_src_or_stub() -> None:
    d = discover([FIX / "wordcount"], ScanOptions(include_deps=False,
                                                  rust_src=str(FIX / "rust_src" / "library")))
    std = {f.path: f for f in d.files if f.read_only}
    assert sorted(std) == ["<std>/alloc/src/lib.rs", "<std>/core/src/fmt/mod.rs",
                           "<std>/core/src/lib.rs", "<std>/std/src/lib.rs"]
    assert (std["<std>/core/src/fmt/mod.rs"].crate,
            std["<std>/core/src/fmt/mod.rs"].module) == ("core", "crate::fmt")
    stub = discover([FIX / "wordcount"], ScanOptions(include_deps=False))
    assert [(f.path, f.crate, f.read_only) for f in stub.files if f.read_only] == [
        ("<std-stub>/lib.rs", "std", True)]


def test_std_stub_has_core_traits_with_real_signatures() -> None:
    fi = parse_file("<std-stub>/lib.rs", (STD_STUB / "lib.rs").read_bytes(), module="crate",
                    read_only=True)
    assert fi.errors == ()
    kinds = {(it.kind, it.name) for it in fi.items}
    for trait in ("Display", "Debug", "Iterator", "IntoIterator", "From", "Into", "Default",
                  "Clone", "Copy", "PartialEq", "Eq", "PartialOrd", "Ord", "Hash", "Drop",
                  "Deref", "AsRef", "FromStr", "Error", "Add", "Sub", "Mul", "Div", "Neg",
                  "Index"):
        assert ("trait", trait) in kinds, trait
    for enum in ("Option", "Result", "Ordering", "Cow"):
        assert ("enum", enum) in kinds, enum

    def sig(kind: str, name: str, parent: str) -> str:
        return next(it.signature for it in fi.items
                    if (it.kind, it.name, it.parent) == (kind, name, parent))

    assert sig("trait_fn", "fmt", "Display") == "fn fmt(&self, f: &mut Formatter<'_>) -> Result"
    assert sig("trait_fn", "next", "Iterator") == "fn next(&mut self) -> Option<Self::Item>"
    assert sig("trait_fn", "from", "From") == "fn from(value: T) -> Self"
    assert sig("trait_fn", "from_str", "FromStr") == \
        "fn from_str(s: &str) -> Result<Self, Self::Err>"
    assert sig("trait_fn", "partial_cmp", "PartialOrd") == \
        "fn partial_cmp(&self, other: &Rhs) -> Option<Ordering>"
    assert [it.name for it in fi.items if it.parent == "Option" and it.kind == "variant"] == \
        ["None", "Some"]
    display = next(it for it in fi.items if it.name == "Display" and it.kind == "trait")
    assert display.module == "crate::fmt"


def test_symlinks_loop_outside_and_broken(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    make_tree(ws, {"src/lib.rs": "fn a() {}\n", "src/inner/m.rs": "fn m() {}\n"})
    outside = tmp_path / "outside"
    make_tree(outside, {"o.rs": "fn o() {}\n"})
    os.symlink("..", ws / "src" / "inner" / "up")            # loop a/b -> ..
    os.symlink(str(outside), ws / "src" / "out")             # leaves the workspace
    os.symlink("self.rs", ws / "src" / "self.rs")            # file loop
    os.symlink("gone.rs", ws / "src" / "dangling.rs")
    os.symlink("lib.rs", ws / "src" / "alias.rs")            # inside: indexed
    d = discover([ws], NO_EXTRAS)
    paths = [f.path for f in d.files]
    assert sorted(paths) == ["src/alias.rs", "src/inner/m.rs", "src/lib.rs"]
    assert len(paths) == len(set(paths))
    skipped = {s.path: s.reason for s in d.skipped}
    assert skipped["src/out"] == "symlink leads outside the root"
    assert "symlink loop" in skipped["src/inner/up"]
    assert skipped["src/dangling.rs"] == "broken symlink"
    assert skipped["src/self.rs"].startswith("unreadable")


def test_copy_of_fixture_is_stable(tmp_path: Path) -> None:
    shutil.copytree(FIX / "wordcount", tmp_path / "wc")
    a = [f.path for f in discover([tmp_path / "wc"], NO_EXTRAS).files]
    b = [f.path for f in discover([FIX / "wordcount"], NO_EXTRAS).files]
    assert a == b == sorted(a)


def test_relocate_is_identity_for_same_module() -> None:
    fi = FileIndex(path="src/a.rs", content_hash="", size=0, module="crate::a")
    assert relocate(fi, "crate::a") is fi
