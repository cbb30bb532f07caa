"""The docs match the code: the settings reference is current, every link resolves, and every
import a doc shows works."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from qtmesh.runtime.settings import settings_markdown

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "deploy" / "README.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
CODE = re.compile(r"```python\n(.*?)```", re.S)


def test_the_settings_reference_is_generated_from_the_current_code():
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == settings_markdown(), "docs/configuration.md is stale: run `make docs`"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_of_a_doc_resolves(doc):
    for target in LINK.findall(doc.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to {target}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_import_a_doc_shows_works(doc):
    for block in CODE.findall(doc.read_text()):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(
                        f"{node.module}.{alias.name}"
                    ), f"{doc.relative_to(ROOT)}: {node.module} has no {alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)
