"""The Kubernetes overlays of deploy/k8s as built by `kubectl kustomize`, for the deployment
tests: each built once per run, its documents by kind, each server's container and
environment."""

from __future__ import annotations

import dataclasses
import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
KUBECTL = shutil.which("kubectl")
KUBECTL_MISSING = (
    "kubectl is not installed: the Kubernetes overlays were not built, validated or checked "
    "(install kubectl, which has kustomize built in, to run these tests)"
)
# Every server serves Prometheus metrics on this port (QTMESH_METRICS_PORT in qtmesh.env).
METRICS_PORT = 9464


@dataclasses.dataclass
class Overlay:
    name: str
    documents: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.documents if d["kind"] == kind]

    @functools.cached_property
    def deployments(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for d in self.of_kind("Deployment"):
            assert d["metadata"]["name"] not in found, f"{d['metadata']['name']} deployed twice"
            found[d["metadata"]["name"]] = d
        return found

    def config_map(self, name: str) -> dict[str, str]:
        (found,) = [c for c in self.of_kind("ConfigMap") if c["metadata"]["name"] == name]
        return found.get("data", {})

    def server(self, service: str) -> dict[str, Any]:
        (container,) = self.deployments[service]["spec"]["template"]["spec"]["containers"]
        assert container["name"] == "server"
        return container

    def env(self, service: str) -> dict[str, Any]:
        """The server's environment: its ConfigMaps, then its own variables (a value, or the
        ``valueFrom`` mapping of a variable from a Secret)."""
        container = self.server(service)
        env: dict[str, Any] = {}
        for source in container.get("envFrom", []):
            env.update(self.config_map(source["configMapRef"]["name"]))
        for variable in container.get("env", []):
            env[variable["name"]] = variable.get("value", variable.get("valueFrom"))
        return env


def built(overlay: str) -> Overlay:
    if KUBECTL is None:
        pytest.skip(KUBECTL_MISSING)
    return _build(overlay)


@functools.cache
def _build(overlay: str) -> Overlay:
    assert KUBECTL is not None
    built = subprocess.run(
        [KUBECTL, "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    return Overlay(overlay, [d for d in yaml.safe_load_all(built.stdout) if d])
