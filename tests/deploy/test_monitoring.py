"""The mesh's monitoring (deploy/k8s/monitoring, a component the prod overlay includes): the
ServiceMonitor scrapes every service's metrics port, every PromQL expression of the alerts and of
the Grafana dashboard parses and queries only metrics and labels the mesh exports, the alerts say
what to do, and the dashboard is well formed and matches Grafana's dashboard schema.

test_manifests.py validates the built objects against the prometheus-operator CRDs' schemas;
the packages those schemas come from (tests/helpers/deploy_schemas.py) are checked here. The
metric names are a contract with the code (qtmesh/runtime/metrics.py and the services' own
figures): renaming one there without renaming it here fails these tests.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from qtmesh.runtime.channels import DEFAULT_PORTS
from qtmesh.runtime.metrics import GRPC_CODES
from tests.helpers import deploy_schemas
from tests.helpers.deploy import METRICS_PORT, ROOT, Overlay, built

MONITORING = ROOT / "deploy" / "k8s" / "monitoring"
DASHBOARD = MONITORING / "qtmesh-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"

# ---- the metrics the mesh exports ---------------------------------------------------------------

RPC = frozenset({"grpc_service", "grpc_method", "grpc_type"})


@dataclasses.dataclass(frozen=True)
class Metric:
    kind: str  # counter, gauge or histogram
    labels: frozenset[str] = frozenset()


METRICS = {
    # RPCs, server and client side (the grpc-ecosystem names; qtmesh/runtime/metrics.py).
    **{
        f"grpc_{side}_{name}": Metric(kind, labels)
        for side in ("server", "client")
        for name, kind, labels in (
            ("started_total", "counter", RPC),
            ("handled_total", "counter", RPC | {"grpc_code"}),
            ("handling_seconds", "histogram", RPC),
        )
    },
    # The services' own figures.
    "qtmesh_gap_cycle_seconds": Metric("histogram"),
    "qtmesh_agent_calls_total": Metric("counter", frozenset({"agent", "outcome"})),
    "qtmesh_actions_total": Metric("counter", frozenset({"type", "status"})),
    "qtmesh_plans_total": Metric("counter"),
    "qtmesh_plan_subscribers": Metric("gauge"),
    "qtmesh_plan_subscriber_lag": Metric("gauge"),
    "qtmesh_evolution_generations_total": Metric("counter"),
    "qtmesh_evaluations_total": Metric("counter"),
    "qtmesh_evolutions_running": Metric("gauge"),
    "qtmesh_fleet_equity": Metric("gauge", frozenset({"sector"})),
    "qtmesh_fleet_drawdown": Metric("gauge", frozenset({"sector"})),
    "qtmesh_meta_parameter": Metric("gauge", frozenset({"name"})),
    "qtmesh_ledger_verifications_total": Metric("counter", frozenset({"result"})),
    "qtmesh_reports_rejected_total": Metric("counter", frozenset({"reason"})),
    "qtmesh_trading_halted": Metric("gauge"),
    # prometheus_client's process collector, in every server's registry.
    "process_cpu_seconds_total": Metric("counter"),
    "process_resident_memory_bytes": Metric("gauge"),
    # Prometheus's own, one per target.
    "up": Metric("gauge"),
}
# Label values the code sets, where it sets a closed set.
LABEL_VALUES = {
    "grpc_type": {"UNARY", "CLIENT_STREAM", "SERVER_STREAM", "BIDI_STREAM"},
    "grpc_code": set(GRPC_CODES.values()),
    "outcome": {"ok", "timed_out", "unavailable", "error"},
    "result": {"ok", "failed"},
    # The Services' label, which the ServiceMonitor copies onto every series (targetLabels).
    "app_kubernetes_io_part_of": {"qtmesh"},
}
# The labels Prometheus's Kubernetes service discovery gives every target of a ServiceMonitor;
# its targetLabels add more (target_labels()).
DISCOVERY_LABELS = frozenset(
    {"job", "instance", "namespace", "service", "pod", "container", "endpoint"}
)


def series() -> dict[str, frozenset[str]]:
    """Every series name the metrics expose, with its labels: a histogram is three."""
    found = {}
    for name, metric in METRICS.items():
        if metric.kind == "histogram":
            found[f"{name}_bucket"] = metric.labels | {"le"}
            found[f"{name}_sum"] = found[f"{name}_count"] = metric.labels
        else:
            found[name] = metric.labels
    return found


def source(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((MONITORING / name).read_text()))


@functools.cache
def target_labels() -> frozenset[str]:
    """The labels every scraped series of the mesh carries: discovery's and the ServiceMonitor's
    targetLabels, as Prometheus spells label names."""
    copied = source("servicemonitor.yaml")["spec"].get("targetLabels", [])
    return DISCOVERY_LABELS | {re.sub(r"[^A-Za-z0-9_]", "_", label) for label in copied}


# ---- PromQL --------------------------------------------------------------------------------------

# What Grafana puts in place of its built-in variables (a duration each), and of a dashboard's
# own variables (a label value: they only stand in label matchers here).
GRAFANA_DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def from_grafana(expr: str, variables: set[str]) -> tuple[str, list[str]]:
    """``expr`` with Grafana's variables replaced, and the variables it uses that do not
    exist."""
    unknown = []

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name in GRAFANA_DURATIONS:
            return GRAFANA_DURATIONS[name]
        if name not in variables:
            unknown.append(name)
        return "value"

    return GRAFANA_VARIABLE.sub(replace, expr), unknown


def nodes(expr: promql_parser.Expr) -> list[promql_parser.Expr]:
    found: list[promql_parser.Expr] = []
    promql_parser.walk(expr, found.append)
    return found


def metric_name(selector: promql_parser.VectorSelector) -> str | None:
    if selector.name:
        return str(selector.name)
    names = [
        m.value
        for m in selector.matchers.matchers
        if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
    ]
    return names[0] if names else None


def labels_of(expr: promql_parser.Expr) -> frozenset[str]:
    """The labels of the series the metrics inside ``expr`` have (target labels included)."""
    known = series()
    found = set(target_labels())
    for node in nodes(expr):
        if isinstance(node, promql_parser.VectorSelector):
            found |= known.get(metric_name(node) or "", frozenset())
    return frozenset(found)


def output_labels(expr: promql_parser.Expr) -> frozenset[str]:
    """The labels the results of ``expr`` have (for the functions and operators used here)."""
    if isinstance(expr, promql_parser.VectorSelector | promql_parser.MatrixSelector):
        return labels_of(expr)
    if isinstance(expr, promql_parser.ParenExpr | promql_parser.UnaryExpr):
        return output_labels(expr.expr)
    if isinstance(expr, promql_parser.NumberLiteral | promql_parser.StringLiteral):
        return frozenset()
    if isinstance(expr, promql_parser.AggregateExpr):
        modifier = expr.modifier
        if modifier is None:
            return frozenset()
        grouped = frozenset(modifier.labels)
        if modifier.type == promql_parser.AggModifierType.By:
            return grouped
        return output_labels(expr.expr) - grouped
    if isinstance(expr, promql_parser.Call):
        vectors = [a for a in expr.args if not isinstance(a, promql_parser.NumberLiteral)]
        labels = output_labels(vectors[-1]) if vectors else frozenset()
        return labels - {"le"} if expr.func.name == "histogram_quantile" else labels
    if isinstance(expr, promql_parser.BinaryExpr):
        if isinstance(expr.lhs, promql_parser.NumberLiteral):
            return output_labels(expr.rhs)
        return output_labels(expr.lhs)
    raise AssertionError(f"no rule for the labels of {type(expr).__name__}: {expr}")


def _alternatives(regex: str) -> set[str] | None:
    """The values a regex matcher lists (``A|B|C``), or None if it is more than a list."""
    return set(regex.split("|")) if re.fullmatch(r"\w+(\|\w+)*", regex) else None


def promql_problems(text: str, *, variables: Collection[str] = ()) -> list[str]:
    """What is wrong with the PromQL ``text`` (Grafana's variables allowed): it does not parse,
    or uses a metric, a label or a label value the mesh does not export."""
    expr_text, unknown = from_grafana(text, set(variables))
    problems = [f"unknown Grafana variable ${name}" for name in unknown]
    try:
        expr = promql_parser.parse(expr_text)
    except ValueError as e:
        return [*problems, f"does not parse: {e}"]
    known = series()
    for node in nodes(expr):
        if isinstance(node, promql_parser.VectorSelector):
            name = metric_name(node)
            if name not in known:
                problems.append(f"{name or node}: not a metric the mesh exports")
                continue
            allowed = known[name] | target_labels()
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    continue
                if matcher.name not in allowed:
                    problems.append(f"{name} has no label {matcher.name}")
                    continue
                values = LABEL_VALUES.get(matcher.name)
                if values is None:
                    continue
                if matcher.op in (promql_parser.MatchOp.Equal, promql_parser.MatchOp.NotEqual):
                    listed: set[str] | None = {matcher.value}
                else:
                    listed = _alternatives(matcher.value)
                if listed is not None and not listed <= values:
                    problems.append(f"{name}: {matcher.name} is never {sorted(listed - values)}")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            missing = set(node.modifier.labels) - labels_of(node.expr)
            if missing:
                problems.append(f"{node.op} groups by {sorted(missing)}, which no series has")
    return problems


# ---- the alerts ----------------------------------------------------------------------------------


def alerts() -> list[dict[str, Any]]:
    groups = source("prometheusrule.yaml")["spec"]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown``."""
    found = set()
    for line in markdown.read_text().splitlines():
        heading = re.match(r"#+\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


# The alerts the mesh needs, each by the metric it watches.
WATCHED = {
    "up": "a service down",
    "grpc_server_handled_total": "the gRPC error ratio",
    "qtmesh_agent_calls_total": "agent timeouts",
    "qtmesh_gap_cycle_seconds_bucket": "the GAP cycle's latency",
    "qtmesh_plan_subscriber_lag": "the plan stream's lag",
    "qtmesh_ledger_verifications_total": "ledger verification failures",
    "qtmesh_reports_rejected_total": "rejected alpha reports",
    "qtmesh_trading_halted": "trading halts",
}


def metrics_of(text: str) -> set[str]:
    expr = promql_parser.parse(from_grafana(text, set())[0])
    return {
        metric_name(n) or "" for n in nodes(expr) if isinstance(n, promql_parser.VectorSelector)
    }


def test_alerts_watch_the_mesh_and_say_what_to_do():
    rules = alerts()
    names = [rule.get("alert") for rule in rules]
    assert all(name and name.startswith("Qtmesh") for name in names), "alerting rules only"
    assert len(set(names)) == len(names)
    watched = set().union(*(metrics_of(rule["expr"]) for rule in rules))
    assert {m: WATCHED[m] for m in set(WATCHED) - watched} == {}
    documented = anchors(OPERATIONS)
    for rule in rules:
        name = rule["alert"]
        assert promql_problems(rule["expr"]) == [], name
        assert promql_parser.parse_duration(rule["for"]).total_seconds() >= 60, name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description"}, name
        runbooks = re.findall(r"docs/operations\.md#([\w-]+)", annotations["description"])
        assert runbooks, f"{name}: the description names its runbook in docs/operations.md"
        assert set(runbooks) <= documented, (name, set(runbooks) - documented)
        # A label an annotation shows must survive the expression's aggregations.
        shown = set(re.findall(r"\$labels\.(\w+)", " ".join(annotations.values())))
        labels = output_labels(promql_parser.parse(rule["expr"]))
        assert shown <= labels, (name, shown - labels)


# ---- the dashboard -------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def all_panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables(board: Mapping[str, Any]) -> set[str]:
    return {v["name"] for v in board.get("templating", {}).get("list", [])}


def expressions(board: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Every PromQL expression of the dashboard, with where it is: the panels' queries and the
    variables' (``label_values(SELECTOR, LABEL)`` is Grafana's; its selector is PromQL)."""
    for panel in all_panels(board):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('id')} {target.get('refId')}", target.get("expr", "")
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        values = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", text, re.DOTALL)
        yield f"variable {variable['name']}", values.group(1) if values else text


def _overlap(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def dashboard_problems(board: Mapping[str, Any]) -> list[str]:
    """What keeps ``board`` from being a dashboard whose every panel shows data: ids, layout,
    data sources, queries."""
    problems = []
    for key in ("uid", "title", "schemaVersion", "panels"):
        if key not in board:
            problems.append(f"no {key}")
    ids = [panel.get("id") for panel in all_panels(board)]
    if len(set(ids)) != len(ids) or None in ids:
        problems.append(f"panel ids are not unique: {ids}")
    # Panels of a collapsed row keep where they were when it was open: only the dashboard's
    # own panels may not overlap.
    placed: list[tuple[Any, dict[str, int]]] = []
    top = {id(panel) for panel in board.get("panels", [])}
    for panel in all_panels(board):
        where = f"panel {panel.get('id')} ({panel.get('title')})"
        grid = panel.get("gridPos")
        if not isinstance(grid, dict) or not all(
            type(grid.get(k)) is int for k in ("x", "y", "w", "h")
        ):
            problems.append(f"{where}: no gridPos with x, y, w and h")
        elif grid["x"] < 0 or grid["w"] < 1 or grid["h"] < 1 or grid["x"] + grid["w"] > 24:
            problems.append(f"{where}: gridPos {grid} is off the 24-column grid")
        elif id(panel) in top:
            for other, box in placed:
                if _overlap(grid, box):
                    problems.append(f"{where} overlaps panel {other}")
            placed.append((panel.get("id"), grid))
        if panel.get("type") == "row":
            if panel.get("targets"):
                problems.append(f"{where}: a row has no queries")
            continue
        datasource = panel.get("datasource")
        if not isinstance(datasource, dict) or not datasource.get("uid"):
            problems.append(f"{where}: no datasource")
        targets = panel.get("targets")
        if not targets:
            problems.append(f"{where}: no targets")
            continue
        refs = [target.get("refId") for target in targets]
        if len(set(refs)) != len(refs) or None in refs:
            problems.append(f"{where}: refIds are not unique: {refs}")
        for target in targets:
            if not target.get("expr"):
                problems.append(f"{where}: target {target.get('refId')} has no expr")
            if target.get("datasource", datasource) != datasource:
                problems.append(f"{where}: target {target.get('refId')} queries elsewhere")
    return problems


def test_every_dashboard_query_parses_and_uses_metrics_the_mesh_exports():
    board = dashboard()
    names = variables(board)
    problems = [
        f"{where}: {problem}"
        for where, expr in expressions(board)
        for problem in promql_problems(expr, variables=names)
    ]
    assert problems == []


def test_the_dashboard_is_well_formed_and_shows_every_figure_of_the_mesh():
    board = dashboard()
    assert dashboard_problems(board) == []
    # One Prometheus, chosen by the dashboard's variable, for every panel.
    (source_variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert source_variable["query"] == "prometheus"
    uids = {panel["datasource"]["uid"] for panel in all_panels(board) if panel["type"] != "row"}
    assert uids == {"${" + source_variable["name"] + "}"}
    shown = set().union(*(metrics_of(expr) for _, expr in expressions(board)))
    wanted = {
        name
        for name in series()
        if name.startswith("qtmesh_") and not name.endswith(("_sum", "_count"))
    }
    wanted |= {"grpc_server_handled_total", "grpc_server_handling_seconds_bucket"}
    assert wanted - shown == set()


def test_the_dashboard_checks_find_mistakes():
    board = dashboard()
    panel = next(p for p in all_panels(board) if p["type"] != "row")
    mistakes = {
        "not unique": lambda b, p: b["panels"].append({**p, "gridPos": {**p["gridPos"], "y": 99}}),
        "no datasource": lambda b, p: p.pop("datasource"),
        "no targets": lambda b, p: p.update(targets=[]),
        "no gridPos": lambda b, p: p.pop("gridPos"),
        "overlaps": lambda b, p: p["gridPos"].update(y=p["gridPos"]["y"] + 1),
        "off the 24-column grid": lambda b, p: p["gridPos"].update(w=25),
    }
    assert dashboard_problems(board) == []
    for problem, make in mistakes.items():
        broken = copy.deepcopy(board)
        make(broken, next(p for p in all_panels(broken) if p["id"] == panel["id"]))
        assert any(problem in found for found in dashboard_problems(broken)), problem


def test_the_promql_checks_find_mistakes():
    good = 'sum by (agent) (rate(qtmesh_agent_calls_total{outcome="timed_out"}[5m]))'
    assert promql_problems(good) == []
    mistakes = {
        "does not parse": "sum by (agent) (rate(qtmesh_agent_calls_total[5m])",
        "not a metric the mesh exports": "rate(qtmesh_gap_cycle_second_bucket[5m])",
        "has no label agnt": 'rate(qtmesh_agent_calls_total{agnt="risk"}[5m])',
        "outcome is never ['timeout']": 'qtmesh_agent_calls_total{outcome="timeout"}',
        "grpc_code is never ['INTERNAL']": 'grpc_server_handled_total{grpc_code=~"INTERNAL|OK"}',
        "groups by ['sector']": "sum by (sector) (qtmesh_plans_total)",
        "unknown Grafana variable $nope": 'up{namespace="$nope"}',
    }
    for problem, expr in mistakes.items():
        assert any(problem in found for found in promql_problems(expr)), problem


def test_the_dashboard_matches_grafanas_dashboard_schema():
    assert deploy_schemas.check([("dashboard", "grafana-dashboard", dashboard())]) == {
        "dashboard": []
    }


# ---- the pinned schemas --------------------------------------------------------------------------


def test_the_pinned_schemas_are_installed_as_pinned_and_name_their_source():
    assert deploy_schemas.locked() == deploy_schemas.pinned()
    assert deploy_schemas.installed() == deploy_schemas.pinned()
    models = deploy_schemas.installed_manifest("@kubernetes-models/prometheus-operator")
    (crds,) = models["crd-generate"]["input"]
    assert crds.endswith(f"/{deploy_schemas.PROMETHEUS_OPERATOR}/{deploy_schemas.CRD_FILE}")


def _service_monitor(**endpoint: Any) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x", "namespace": "qtmesh"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/part-of": "qtmesh"}},
            "endpoints": [{"port": "metrics", "path": "/metrics", **endpoint}],
        },
    }


def test_the_schemas_reject_unknown_fields_and_bad_values():
    assert deploy_schemas.is_custom_resource(_service_monitor())
    assert not deploy_schemas.is_custom_resource({"apiVersion": "v1", "kind": "ConfigMap"})
    rule = source("prometheusrule.yaml")
    misspelt_rule = copy.deepcopy(rule)
    misspelt_rule["spec"]["groups"][0]["rules"][0]["forr"] = "5m"
    unknown_kind = {**_service_monitor(), "kind": "ServiceMonitors"}
    board = dashboard()
    misspelt_panel = copy.deepcopy(board)
    misspelt_panel["panels"][1]["gridPoss"] = misspelt_panel["panels"][1].pop("gridPos")
    bad_enum = copy.deepcopy(board)
    bad_enum["panels"][1]["fieldConfig"]["defaults"]["thresholds"] = {
        "mode": "absolut",
        "steps": [],
    }
    found = deploy_schemas.check(
        [
            ("valid monitor", "kubernetes", _service_monitor(interval="30s")),
            ("valid rule", "kubernetes", rule),
            ("valid dashboard", "grafana-dashboard", board),
            ("misspelt endpoint", "kubernetes", _service_monitor(pathh="/metrics")),
            ("bad duration", "kubernetes", _service_monitor(interval="30 seconds")),
            ("misspelt rule", "kubernetes", misspelt_rule),
            ("unknown kind", "kubernetes", unknown_kind),
            ("misspelt panel", "grafana-dashboard", misspelt_panel),
            ("bad enum", "grafana-dashboard", bad_enum),
        ]
    )
    assert found.pop("valid monitor") == []
    assert found.pop("valid rule") == []
    assert found.pop("valid dashboard") == []
    expected = {
        "misspelt endpoint": "'\"pathh\"' does not exist",
        "bad duration": "interval must match pattern",
        "misspelt rule": "'\"forr\"' does not exist",
        "unknown kind": "no schema for apiVersion monitoring.coreos.com/v1, kind ServiceMonitors",
        "misspelt panel": "'\"gridPoss\"' does not exist",
        "bad enum": "'\"absolut\"' is not assignable",
    }
    for name, problem in expected.items():
        assert any(problem in p for p in found[name]), (name, found[name])


# ---- the prod overlay ----------------------------------------------------------------------------


def _monitoring(overlay: Overlay) -> list[dict[str, Any]]:
    return [
        d
        for d in overlay.documents
        if deploy_schemas.is_custom_resource(d)
        or d["metadata"].get("labels", {}).get("grafana_dashboard")
    ]


def test_prod_includes_the_monitoring_and_dev_leaves_it_out():
    prod = built("prod")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _monitoring(prod)}
    assert kinds == {
        ("ServiceMonitor", "qtmesh"),
        ("PrometheusRule", "qtmesh"),
        ("ConfigMap", "qtmesh-dashboard"),
    }
    for document in _monitoring(prod):
        assert document["metadata"]["namespace"] == "qtmesh"
        assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "qtmesh"
    # What the tests above read is what prod deploys.
    (rule,) = prod.of_kind("PrometheusRule")
    assert rule["spec"] == source("prometheusrule.yaml")["spec"]
    (monitor,) = prod.of_kind("ServiceMonitor")
    assert monitor["spec"] == source("servicemonitor.yaml")["spec"]
    # Dev applies to a cluster without the Prometheus operator's CRDs.
    assert _monitoring(built("dev")) == []


def test_the_service_monitor_scrapes_every_service_on_its_metrics_port():
    prod = built("prod")
    (monitor,) = prod.of_kind("ServiceMonitor")
    spec = monitor["spec"]
    assert "namespaceSelector" not in spec, "the mesh's own namespace"
    assert set(spec["selector"]) == {"matchLabels"}
    wanted = spec["selector"]["matchLabels"].items()
    services = {
        s["metadata"]["name"]: s
        for s in prod.of_kind("Service")
        if s["metadata"]["namespace"] == monitor["metadata"]["namespace"]
        and wanted <= s["metadata"].get("labels", {}).items()
    }
    assert set(services) == set(DEFAULT_PORTS)
    (endpoint,) = spec["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == (
        "metrics",
        "/metrics",
        "http",
    )
    for name, service in services.items():
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        containers = prod.server(name)["ports"]
        (target,) = [p for p in containers if p["name"] == port["targetPort"]]
        assert target["containerPort"] == METRICS_PORT == int(prod.env(name)["QTMESH_METRICS_PORT"])
        for label in spec.get("targetLabels", []):
            assert label in service["metadata"]["labels"], (name, label)
        assert service["metadata"]["labels"]["app.kubernetes.io/part-of"] == "qtmesh"
    # Alerts and dashboard tell the mesh's series by a label the monitor copies onto them.
    assert "app_kubernetes_io_part_of" in target_labels()


def test_the_dashboard_ships_as_a_config_map_for_grafanas_sidecar():
    (config_map,) = [
        d for d in built("prod").of_kind("ConfigMap") if d["metadata"]["name"] == "qtmesh-dashboard"
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"] == {DASHBOARD.name: DASHBOARD.read_text()}
    # `kubectl apply` keeps the whole object in an annotation, limited to 256 KiB.
    assert len(json.dumps(config_map).encode()) < 256 * 1024
