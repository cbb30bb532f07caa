"""The tests are laid out like the code: one folder per package, shared fakes only in
tests/helpers, and no test module importing another."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_test_module_imports_another():
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("tests.") and not name.startswith("tests.helpers"):
                    raise AssertionError(f"{path.relative_to(TESTS)} imports {name}")


def test_test_modules_live_in_package_folders():
    loose = [p.name for p in TESTS.glob("test_*.py")]
    assert loose == [], f"tests/ holds {loose}: put them in the folder of their package"
