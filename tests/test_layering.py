"""Dependencies point one way: tesla -> norm -> alc.  alc and norm never import tesla;
alc never imports norm.  Checked on the source (every import, including function-local ones)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {"alc": {"norm", "tesla"}, "norm": {"tesla"}}


def _imported_packages(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add((alias.name.split(".")[0], node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upwards(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources found for {package}"
    offences = [
        f"{f.relative_to(ROOT)}:{line} imports {mod}"
        for f in files
        for mod, line in _imported_packages(f)
        if mod in FORBIDDEN[package]
    ]
    assert not offences, "layering violated:\n" + "\n".join(offences)
