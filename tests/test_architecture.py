"""Architecture invariants: the import direction between our top-level packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"hybrid_lsp", "engine", "kernels", "indexer"}
ALLOWED = {
    "hybrid_lsp": {"hybrid_lsp", "engine", "indexer", "kernels"},
    "engine": {"engine", "kernels"},
    "kernels": {"kernels"},
    "indexer": {"indexer"},
}
THIRD_PARTY_KERNELS = {"torch", "triton", "math", "functools", "os", "typing", "dataclasses",
                       "__future__", "itertools", "collections", "argparse", "sys", "time",
                       "json", "pathlib", "platform", "statistics", "datetime", "random",
                       "warnings", "contextlib", "subprocess", "re", "numpy"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_direction(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for root in imported_roots(path) & OURS:
            if root not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {root}")
    assert not bad, "\n".join(bad)


def test_kernels_import_only_torch_and_triton() -> None:
    bad = []
    for path in sorted((ROOT / "kernels").rglob("*.py")):
        extra = imported_roots(path) - THIRD_PARTY_KERNELS - {"kernels"}
        if extra:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not bad, "\n".join(bad)


def test_detector_sees_a_violation(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("import engine.model\nfrom hybrid_lsp import cli\n")
    assert imported_roots(f) >= {"engine", "hybrid_lsp"}
