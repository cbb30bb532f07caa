"""The schemas of the objects kubernetes-validate has none for: the prometheus-operator custom
resources and Grafana's dashboard, from the npm packages tests/deploy/schemas/package.json pins
(schemas/README.md says what each holds). `make` installs them with `npm ci` into
.tools/deploy-schemas; schemas/check.mjs validates documents against them with node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "deploy" / "schemas"
PREFIX = ROOT / ".tools" / "deploy-schemas"
# The Makefile's target that installs them (`make test` does, before pytest).
MAKE_TARGET = ".tools/deploy-schemas/node_modules/.package-lock.json"
# The API groups of the custom resources validated here rather than by kubernetes-validate.
CUSTOM_GROUPS = frozenset({"monitoring.coreos.com"})
# The prometheus-operator release whose CRDs @kubernetes-models/prometheus-operator was
# generated from (its package.json, "crd-generate"), and the file of that release it read.
PROMETHEUS_OPERATOR = "v0.90.1"
CRD_FILE = "stripped-down-crds.yaml"

Schema = Literal["kubernetes", "grafana-dashboard"]


def is_custom_resource(document: Mapping[str, Any]) -> bool:
    group, slash, _ = str(document.get("apiVersion", "")).partition("/")
    return bool(slash) and group in CUSTOM_GROUPS


def pinned() -> dict[str, str]:
    """Each package and its version, as package.json pins them."""
    return dict(json.loads((SOURCE / "package.json").read_text())["dependencies"])


def locked() -> dict[str, str]:
    """The version package-lock.json records for each pinned package."""
    packages = json.loads((SOURCE / "package-lock.json").read_text())["packages"]
    return {name: packages[f"node_modules/{name}"]["version"] for name in pinned()}


def installed_manifest(name: str) -> dict[str, Any]:
    """The package.json of the installed package ``name``; fails when it is not installed."""
    manifest = PREFIX / "node_modules" / name / "package.json"
    if not manifest.exists():
        pytest.fail(f"{name} is not installed in {PREFIX}: run `make {MAKE_TARGET}`")
    return dict(json.loads(manifest.read_text()))


def installed() -> dict[str, str]:
    return {name: installed_manifest(name)["version"] for name in pinned()}


def check(
    documents: Iterable[tuple[str, Schema, Mapping[str, Any]]],
) -> dict[str, list[str]]:
    """The problems of each document (``(id, schema, body)``) by id: none, an empty list."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (it comes with npm, which `make test` needs)")
    if installed() != pinned():
        pytest.fail(f"{PREFIX} holds other versions than package.json: run `make {MAKE_TARGET}`")
    payload = {
        "documents": [
            {"id": id_, "schema": schema, "body": body} for id_, schema, body in documents
        ]
    }
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "documents.json"
        source.write_text(json.dumps(payload))
        result = subprocess.run(
            [node, str(SOURCE / "check.mjs"), str(PREFIX), str(source)],
            capture_output=True,
            text=True,
            check=False,
            timeout=90,
        )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))
