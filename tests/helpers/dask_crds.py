"""The Dask operator's custom resources checked against its CRDs' schemas, as strictly as the API
server's strict field validation: the openAPIV3Schema's types, enums and required fields
(jsonschema), and no field the schema does not declare, except under
``x-kubernetes-preserve-unknown-fields``. The CRDs come from the dask-kubernetes wheel the
Makefile pins (DASK_KUBERNETES, with its sha256), unpacked into .tools/dask-crds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / ".tools" / "dask-crds"
MAKE_TARGET = ".tools/dask-crds/daskcluster.yaml"
GROUP = "kubernetes.dask.org"


def is_dask_resource(document: Mapping[str, Any]) -> bool:
    return str(document.get("apiVersion", "")).partition("/")[0] == GROUP


def schema_of(kind: str, version: str) -> dict[str, Any]:
    path = CRDS / f"{kind.lower()}.yaml"
    if not path.is_file():
        pytest.fail(f"no CRD for {kind} in {CRDS}: run `make {MAKE_TARGET}`")
    crd = yaml.safe_load(path.read_text())
    assert crd["spec"]["group"] == GROUP
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            return dict(served["schema"]["openAPIV3Schema"])
    raise AssertionError(f"the {kind} CRD serves no version {version}")


def _unknown(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is None:
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for key, item in value.items():
                    found += _unknown(item, extra, f"{path}.{key}")
            return found
        for key, item in value.items():
            if key not in properties:
                found.append(f"{path}.{key}: unknown field")
            else:
                found += _unknown(item, properties[key], f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += _unknown(item, schema["items"], f"{path}[{i}]")
    return found


def problems(document: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``document`` by its CRD's schema; an empty list when nothing is."""
    version = str(document["apiVersion"]).partition("/")[2]
    schema = schema_of(str(document["kind"]), version)
    # apiVersion, kind and metadata are the API server's to check, not the CRD's.
    body = {k: v for k, v in document.items() if k not in ("apiVersion", "kind", "metadata")}
    validator = jsonschema.Draft7Validator(schema)
    found = [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(body)
    ]
    return found + _unknown(body, schema, "")
