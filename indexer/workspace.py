"""Workspace discovery: which Rust files the index holds, which crate and module each is in.

A walk of each root (several for LSP multi-root) finds `.rs` files and `Cargo.toml`
packages, honouring `.gitignore` files (pathspec), skipping hidden folders, `target/`,
`vendor/` next to a Cargo.toml, `.env*` files and files over the size limit. Dependencies
come read-only from Cargo.lock + the local cargo registry or `vendor/`; the standard library
from an installed `rust-src`, else from `std_stub/` (core traits and enums with their real
signatures). Nothing here runs cargo or rustc.

Invariants: the walk never follows a link out of its root, visits each directory once
(`(st_dev, st_ino)` set) and is iterative with a depth cap (reliability-notes §5); gitignored
files never enter the index (secrets, §7).
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pathspec

from indexer.items import FileIndex, SkippedFile
from indexer.parse import module_for_path

log = logging.getLogger(__name__)

#: Default per-file size limit (issue 4). Larger files are skipped with a reason.
MAX_FILE_BYTES = 1_000_000
#: Deepest folder nesting walked below a root (real crates stay far below; loops stop).
MAX_DEPTH = 64
#: Folder names never walked (besides hidden ones).
SKIP_DIRS = frozenset({"node_modules", "__pycache__"})
STD_STUB = Path(__file__).with_name("std_stub")
STD_STUB_KEY = "<std-stub>"
_STD_CRATES = ("core", "alloc", "std")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file to index: its index key, where it lives, and what it belongs to."""

    path: str                   # index key: workspace-relative POSIX, `<dep:...>/`, `<std>/`
    abspath: str
    crate: str = ""
    module: str = "crate"       # module implied by its place in the crate
    read_only: bool = False
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True, slots=True)
class Crate:
    name: str
    root: str                   # absolute folder holding Cargo.toml (or the root folder)
    key_prefix: str             # index-key prefix of the crate's folder ("" at the root)
    read_only: bool = False
    targets: tuple[str, ...] = ()   # index keys of explicit [lib]/[[bin]] paths (crate roots)


@dataclass
class Discovery:
    """The result of a scan: files to index, files skipped and why, crates found."""

    roots: list[str]
    files: list[SourceFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    crates: list[Crate] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """What a scan covers. `cargo_home`/`rust_src` None: not searched (see `default_*`)."""

    max_file_bytes: int = MAX_FILE_BYTES
    include_deps: bool = True
    include_std: bool = True
    cargo_home: str | None = None
    rust_src: str | None = None     # .../lib/rustlib/src/rust/library


def default_cargo_home() -> str | None:
    """`~/.cargo` when it exists (callers may pass `$CARGO_HOME` instead)."""
    p = Path.home() / ".cargo"
    return str(p) if p.is_dir() else None


def default_rust_src() -> str | None:
    """The `library/` folder of an installed rust-src component (stable toolchain first)."""
    toolchains = Path.home() / ".rustup" / "toolchains"
    if not toolchains.is_dir():
        return None
    for tc in sorted(toolchains.iterdir(), key=lambda p: (not p.name.startswith("stable"),
                                                          p.name)):
        lib = tc / "lib" / "rustlib" / "src" / "rust" / "library"
        if (lib / "core" / "src" / "lib.rs").is_file():
            return str(lib)
    return None


def root_keys(roots: Sequence[str]) -> list[str]:
    """Index-key prefix per root: "" for a single root, else a unique folder name + "/"."""
    if len(roots) <= 1:
        return [""] * len(roots)
    seen: dict[str, int] = {}
    out = []
    for r in roots:
        name = Path(r).name or "root"
        n = seen.get(name, 0)
        seen[name] = n + 1
        out.append(f"{name}/" if n == 0 else f"{name}~{n}/")
    return out


def discover(roots: Sequence[str | os.PathLike[str]],
             options: ScanOptions = ScanOptions()) -> Discovery:
    """Scan the roots (and dependencies, std) for the files to index."""
    abs_roots = [os.path.realpath(os.fspath(r)) for r in roots]
    result = Discovery(roots=abs_roots)
    for root, prefix in zip(abs_roots, root_keys(abs_roots), strict=True):
        _walk(root, prefix, options, result, read_only=False, crate_hint="")
    if options.include_deps:
        for root in abs_roots:
            _add_dependencies(root, options, result)
    if options.include_std:
        _add_std(options, result)
    _assign_crates(result)
    return result


def _read_gitignore(folder: str) -> pathspec.PathSpec | None:
    try:
        with open(os.path.join(folder, ".gitignore"), encoding="utf-8",
                  errors="replace") as f:
            return pathspec.GitIgnoreSpec.from_lines(f)
    except OSError:
        return None


def _ignored(specs: list[tuple[str, pathspec.PathSpec]], rel: str, is_dir: bool) -> bool:
    """True when the innermost .gitignore deciding `rel` ignores it (negations count)."""
    verdict = False
    for base, spec in specs:
        sub = rel[len(base):] if base else rel
        if is_dir:
            sub += "/"
        res = spec.check_file(sub)
        if res.include is not None:
            verdict = res.include
    return verdict


def _walk(root: str, prefix: str, options: ScanOptions, result: Discovery, *,
          read_only: bool, crate_hint: str, only_src: bool = False) -> None:
    """Iterative walk of one root; files and skips go into `result`."""
    try:
        st = os.stat(root)
    except OSError as exc:
        result.skipped.append(SkippedFile(prefix or root, f"root unreadable: {exc.strerror}"))
        return
    visited = {(st.st_dev, st.st_ino)}
    root_specs: list[tuple[str, pathspec.PathSpec]] = []
    if not read_only and (spec := _read_gitignore(root)) is not None:
        root_specs.append(("", spec))
    # (absolute folder, key-relative folder with trailing "/", depth, gitignore specs)
    stack: list[tuple[str, str, int, list[tuple[str, pathspec.PathSpec]]]] = [
        (root, "", 0, root_specs)]
    while stack:
        folder, rel, depth, specs = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            result.skipped.append(SkippedFile(prefix + rel or ".",
                                              f"folder unreadable: {exc.strerror}"))
            continue
        has_cargo = any(e.name == "Cargo.toml" for e in entries)
        if has_cargo:
            _add_crate(folder, prefix + rel, result, read_only, crate_hint)
        subdirs = []
        for e in entries:
            name = e.name
            erel = rel + name
            key = prefix + erel
            if name.startswith(".") or (not read_only and name in SKIP_DIRS):
                continue            # hidden folders and files, .env*, .git
            is_link = False
            try:
                is_link = e.is_symlink()
                est = e.stat(follow_symlinks=True)
            except OSError as exc:
                if name.endswith(".rs"):
                    result.skipped.append(SkippedFile(key, _os_reason(exc, is_link=True)))
                continue
            is_dir = stat.S_ISDIR(est.st_mode)
            if specs and _ignored(specs, erel, is_dir):
                if name.endswith(".rs"):
                    result.skipped.append(SkippedFile(key, "gitignored"))
                continue
            if is_link and not _inside(os.path.realpath(e.path), root):
                if is_dir or name.endswith(".rs"):
                    result.skipped.append(SkippedFile(key, "symlink leads outside the root"))
                continue
            if is_dir:
                if (name == "target" and has_cargo) or (name == "vendor" and has_cargo):
                    continue        # build output; vendored deps come in read-only
                if only_src and depth == 0 and name != "src":
                    continue
                ident = (est.st_dev, est.st_ino)
                if ident in visited:
                    result.skipped.append(SkippedFile(key, "folder already visited "
                                                      "(symlink loop or duplicate)"))
                    continue
                if depth + 1 > MAX_DEPTH:
                    result.skipped.append(SkippedFile(key, f"deeper than {MAX_DEPTH} folders"))
                    continue
                visited.add(ident)
                sub_specs = specs
                if not read_only and (spec := _read_gitignore(e.path)) is not None:
                    sub_specs = [*specs, (erel + "/", spec)]
                subdirs.append((e.path, erel + "/", depth + 1, sub_specs))
            elif name.endswith(".rs"):
                if only_src and not erel.startswith("src/"):
                    continue
                if not stat.S_ISREG(est.st_mode):
                    result.skipped.append(SkippedFile(key, "not a regular file"))
                elif est.st_size > options.max_file_bytes:
                    result.skipped.append(SkippedFile(
                        key, f"too large ({est.st_size} bytes > {options.max_file_bytes})"))
                else:
                    result.files.append(SourceFile(
                        path=key, abspath=e.path, read_only=read_only, size=est.st_size,
                        mtime_ns=est.st_mtime_ns, crate=crate_hint,
                        module=module_for_path(erel)))
        stack.extend(reversed(subdirs))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _os_reason(exc: OSError, *, is_link: bool = False) -> str:
    if is_link and isinstance(exc, FileNotFoundError):
        return "broken symlink"
    if exc.errno is not None and exc.strerror:
        return f"unreadable: {exc.strerror}"
    return f"unreadable: {exc}"


def _load_toml(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {}


def _add_crate(folder: str, key_prefix: str, result: Discovery, read_only: bool,
               crate_hint: str) -> None:
    manifest = _load_toml(os.path.join(folder, "Cargo.toml"))
    package = manifest.get("package")
    if not isinstance(package, dict):
        return                      # a virtual workspace manifest: members are walked anyway
    name = str(package.get("name") or crate_hint or Path(folder).name)
    targets = []
    for section in ("lib", "bin", "test", "example", "bench"):
        entries = manifest.get(section)
        for t in entries if isinstance(entries, list) else [entries]:
            if isinstance(t, dict) and isinstance(t.get("path"), str):
                targets.append(key_prefix + posixpath.normpath(t["path"]))
    result.crates.append(Crate(name=name.replace("-", "_"), root=folder, key_prefix=key_prefix,
                               read_only=read_only, targets=tuple(targets)))


def _assign_crates(result: Discovery) -> None:
    """Crate and module of each file from the innermost crate folder holding it."""
    crates = sorted(result.crates, key=lambda c: len(c.key_prefix), reverse=True)
    roots = {t for c in crates for t in c.targets}
    out = []
    for f in result.files:
        crate = next((c for c in crates if f.path.startswith(c.key_prefix)
                      and (c.key_prefix or not f.path.startswith("<"))), None)
        if crate is None or f.path.startswith(STD_STUB_KEY):
            out.append(f)           # no Cargo.toml above: module from the walked root
            continue
        rel = f.path[len(crate.key_prefix):]
        module = "crate" if f.path in roots else module_for_path(rel)
        out.append(replace(f, crate=crate.name, module=module))
    result.files = out


def _add_dependencies(root: str, options: ScanOptions, result: Discovery) -> None:
    """Registry/vendored sources of the packages in Cargo.lock, read-only."""
    lock = _load_toml(os.path.join(root, "Cargo.lock"))
    packages = lock.get("package", [])
    if not isinstance(packages, list):
        return
    registry = Path(options.cargo_home) / "registry" / "src" if options.cargo_home else None
    registry_dirs = sorted(registry.iterdir()) if registry and registry.is_dir() else []
    vendor = Path(root) / "vendor"
    seen = {c.key_prefix for c in result.crates}
    for pkg in packages:
        if not isinstance(pkg, dict) or "source" not in pkg:
            continue                # path dependencies are part of the workspace walk
        name, version = str(pkg.get("name", "")), str(pkg.get("version", ""))
        key = f"<dep:{name}-{version}>/"
        if not name or key in seen:
            continue
        candidates = [d / f"{name}-{version}" for d in registry_dirs]
        candidates += [vendor / f"{name}-{version}", vendor / name]
        folder = next((c for c in candidates if (c / "Cargo.toml").is_file()), None)
        if folder is None:
            continue
        seen.add(key)
        result.crates.append(Crate(name=name.replace("-", "_"), root=str(folder),
                                   key_prefix=key, read_only=True))
        _walk(str(folder), key, options, result, read_only=True,
              crate_hint=name.replace("-", "_"), only_src=True)


def _add_std(options: ScanOptions, result: Discovery) -> None:
    """rust-src's core/alloc/std when given, else the built-in stub."""
    if options.rust_src and Path(options.rust_src, "core", "src", "lib.rs").is_file():
        for crate in _STD_CRATES:
            folder = Path(options.rust_src) / crate
            if not folder.is_dir():
                continue
            key = f"<std>/{crate}/"
            result.crates.append(Crate(name=crate, root=str(folder), key_prefix=key,
                                       read_only=True))
            _walk(str(folder), key, options, result, read_only=True, crate_hint=crate,
                  only_src=True)
        return
    for p in sorted(STD_STUB.glob("*.rs")):
        st = p.stat()
        result.files.append(SourceFile(
            path=f"{STD_STUB_KEY}/{p.name}", abspath=str(p), crate="std", module="crate",
            read_only=True, size=st.st_size, mtime_ns=st.st_mtime_ns))


def resolve_path_modules(files: Iterable[FileIndex]) -> dict[str, str]:
    """Module of each file reached from a crate root through `mod` declarations.

    Follows `mod x;` from every file whose module is `crate` (a crate root): `x.rs` /
    `x/mod.rs` beside a mod-rs file (lib.rs, main.rs, mod.rs, or one loaded by `#[path]`),
    in the file's own folder otherwise, and `#[path = "..."]` relative to the declaring
    file's folder. `FileIndex.module` and its mods' modules are taken as parsed. Returns
    the module of every file reached (crate roots excluded); others keep their own.
    """
    by_path = {fi.path: fi for fi in files}
    out: dict[str, str] = {}
    queue = [(p, fi.module, True) for p, fi in by_path.items() if fi.module == "crate"]
    seen = {p for p, _m, _r in queue}
    while queue:
        path, module, mod_rs = queue.pop()
        fi = by_path[path]
        folder = posixpath.dirname(path)
        stem = posixpath.basename(path).removesuffix(".rs")
        own = folder if mod_rs or stem in ("lib", "main", "mod") else posixpath.join(folder,
                                                                                     stem)
        for decl in fi.mods:
            if decl.inline:
                continue
            # Inline modules between the file and the declaration add folders.
            suffix = decl.module[len(fi.module):] if decl.module.startswith(fi.module) else ""
            inner = [s for s in suffix.split("::") if s]
            child_module = f"{module}{suffix}::{decl.name}"
            if decl.path_attr is not None:
                base = posixpath.join(folder, *inner) if inner else folder
                targets = [posixpath.normpath(posixpath.join(base, decl.path_attr))]
                child_mod_rs = True
            else:
                base = posixpath.join(own, *inner)
                targets = [posixpath.join(base, decl.name + ".rs"),
                           posixpath.join(base, decl.name, "mod.rs")]
                child_mod_rs = False
            target = next((t for t in targets if t in by_path), None)
            if target is None or target in seen:
                continue
            seen.add(target)
            out[target] = child_module
            queue.append((target, child_module, child_mod_rs))
    return out


def relocate(fi: FileIndex, module: str) -> FileIndex:
    """The same parse with its module path changed (items, uses, mods follow)."""
    old = fi.module
    if old == module:
        return fi

    def move(m: str) -> str:
        return module + m[len(old):] if m == old or m.startswith(old + "::") else m

    return replace(
        fi, module=module,
        items=tuple(replace(it, module=move(it.module)) for it in fi.items),
        uses=tuple(replace(u, module=move(u.module)) for u in fi.uses),
        mods=tuple(replace(d, module=move(d.module)) for d in fi.mods))
