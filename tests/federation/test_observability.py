"""What an operator sees of a planning cycle across the mesh: one trace per GAP cycle (a span for
each agent's Recommend and each ExecuteAction on its owner), one request id across its hops in
every call's log line, and the federation's figures on a real scrape of its /metrics."""

from __future__ import annotations

import asyncio
import urllib.request

import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_trace_id
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from federation.client import FederationClient
from qtmesh.api.federation.v1 import federation_pb2 as pb
from qtmesh.api.federation.v1 import federation_pb2_grpc as pb_grpc
from qtmesh.base import contract as c
from qtmesh.runtime.server import ServerConfig
from tests.helpers.federation import EVOLVE, TUNE, FakeAgent, mesh, rec

RECOMMEND = "/qtmesh.api.agent.v1.AgentService/Recommend"
EXECUTE = "/qtmesh.api.agent.v1.AgentService/ExecuteAction"
GENERATE = "/qtmesh.api.federation.v1.FederationService/GeneratePlan"


def two_agents() -> list[FakeAgent]:
    return [
        FakeAgent(
            "owner",
            [
                rec("tune", TUNE, 0.6, c.Priority.LOW),
                rec("evolve", EVOLVE, 0.8, c.Priority.HIGH, ("tune",)),
            ],
        ),
        FakeAgent("quiet"),
    ]


async def completions(client: FederationClient, count: int) -> None:
    """Returns once ``count`` actions have completed (from the start of the history)."""
    done = 0
    async for _sequence, event in client.subscribe(after_sequence=0):
        if getattr(event, "status", None) is c.ActionStatus.COMPLETED:
            done += 1
            if done == count:
                return


async def test_one_gap_cycle_is_one_trace_with_a_span_per_recommend_and_execute(tmp_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agents = two_agents()
    merged = capture_logs(processors=[structlog.contextvars.merge_contextvars])
    with merged as logs:
        async with mesh(tmp_path, agents, tracer_provider=provider) as fed:
            client = FederationClient(fed.channel)
            done = asyncio.ensure_future(completions(client, 2))
            plan = await client.generate_plan(execute=True)
            await asyncio.wait_for(done, timeout=10)
            await fed.server.stop()  # every span of the cycle has ended
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == _cycle(exporter)]
    by_id = {s.context.span_id: s for s in spans}

    def parent(span):
        return by_id.get(span.parent.span_id) if span.parent is not None else None

    [root] = [s for s in spans if s.parent is None]
    assert (root.name, root.kind) == (GENERATE, SpanKind.SERVER)
    [cycle] = [s for s in spans if s.name == "gap.cycle"]
    assert parent(cycle) is root
    assert cycle.attributes["qtmesh.plan.sequence"] == plan.sequence
    assert cycle.attributes["qtmesh.plan.actions"] == 2

    asked = [s for s in spans if s.name == RECOMMEND and s.kind == SpanKind.CLIENT]
    assert len(asked) == 2
    assert all(parent(s) is cycle for s in asked)
    answered = [s for s in spans if s.name == RECOMMEND and s.kind == SpanKind.SERVER]
    assert sorted(id(parent(s)) for s in answered) == sorted(id(s) for s in asked)

    sent = [s for s in spans if s.name == EXECUTE and s.kind == SpanKind.CLIENT]
    assert len(sent) == 2
    assert all(_descends(s, cycle, parent) for s in sent)
    executed = [s for s in spans if s.name == EXECUTE and s.kind == SpanKind.SERVER]
    assert sorted(id(parent(s)) for s in executed) == sorted(id(s) for s in sent)
    # Health checks (probes) are never traced.
    assert not any("grpc.health" in s.name for s in exporter.get_finished_spans())

    # Each agent's log line of the call carries the trace id beside its request id.
    trace_id = format_trace_id(root.context.trace_id)
    lines = [e for e in logs if e["event"] == "rpc" and e["method"] in (RECOMMEND, EXECUTE)]
    assert len(lines) == 4
    assert {e["trace_id"] for e in lines} == {trace_id}


def _cycle(exporter: InMemorySpanExporter) -> int:
    [cycle] = [s for s in exporter.get_finished_spans() if s.name == "gap.cycle"]
    return cycle.context.trace_id


def _descends(span, ancestor, parent) -> bool:
    while span is not None:
        if span is ancestor:
            return True
        span = parent(span)
    return False


async def test_a_request_id_crosses_every_hop_of_a_cycle_and_each_call_is_logged(tmp_path):
    agents = two_agents()
    merged = capture_logs(processors=[structlog.contextvars.merge_contextvars])
    with merged as logs:
        async with mesh(tmp_path, agents) as fed:
            client = FederationClient(fed.channel)
            done = asyncio.ensure_future(completions(client, 2))
            stub = pb_grpc.FederationServiceStub(fed.channel)
            await stub.GeneratePlan(
                pb.GeneratePlanRequest(execute=True), metadata=(("x-request-id", "req-gap"),)
            )
            await asyncio.wait_for(done, timeout=10)
    calls = [e for e in logs if e["event"] == "rpc" and e.get("request_id") == "req-gap"]
    methods = sorted(e["method"] for e in calls)
    # The caller's call, both agents asked, both actions executed: one id, at info level.
    assert methods == sorted([GENERATE, RECOMMEND, RECOMMEND, EXECUTE, EXECUTE])
    assert {e["log_level"] for e in calls} == {"info"}
    assert all(e["code"] == "OK" and e["elapsed_ms"] >= 0 for e in calls)


async def test_a_cycle_on_the_timer_gives_its_hops_one_request_id_of_its_own(tmp_path):
    agents = two_agents()
    merged = capture_logs(processors=[structlog.contextvars.merge_contextvars])
    with merged as logs:
        async with mesh(tmp_path, agents, gap_update_interval_seconds=0.05) as fed:
            async for _sequence, _event in FederationClient(fed.channel).subscribe(
                after_sequence=0
            ):
                break  # the first plan of the timer's first cycle
    first = [e for e in logs if e["event"] == "rpc" and e["method"] == RECOMMEND][:2]
    assert len(first) == 2
    assert first[0]["request_id"] == first[1]["request_id"]
    assert first[0]["request_id"]
    [planned] = [e for e in logs if e["event"] == "plan"][:1]
    assert planned["request_id"] == first[0]["request_id"]


async def test_a_scrape_of_the_federation_shows_its_cycles_agents_actions_and_calls(tmp_path):
    agents = two_agents()
    config = ServerConfig(port=0, metrics_port=0, grace_seconds=1.0)
    async with mesh(tmp_path, agents, dead=("dead",), server_config=config) as fed:
        client = FederationClient(fed.channel)
        done = asyncio.ensure_future(completions(client, 2))
        await client.generate_plan(execute=True)
        await asyncio.wait_for(done, timeout=10)
        text = await asyncio.to_thread(_scrape, fed.server.endpoints["metrics"])
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("qtmesh_gap_cycle_seconds_count") == 1
    assert value("qtmesh_plans_total") == 1
    assert value("qtmesh_agent_calls_total", agent="owner", outcome="ok") == 1
    assert value("qtmesh_agent_calls_total", agent="quiet", outcome="ok") == 1
    assert value("qtmesh_agent_calls_total", agent="dead", outcome="unavailable") == 1
    for kind in ("tune_learning", "run_evolution"):
        for status in ("pending", "executing", "completed"):
            assert value("qtmesh_actions_total", type=kind, status=status) == 1, (kind, status)
    rpc = {"grpc_service": "qtmesh.api.federation.v1.FederationService", "grpc_type": "UNARY"}
    assert value("grpc_server_started_total", grpc_method="GeneratePlan", **rpc) == 1
    assert (
        value("grpc_server_handled_total", grpc_method="GeneratePlan", grpc_code="OK", **rpc) == 1
    )
    assert value("grpc_server_handling_seconds_count", grpc_method="GeneratePlan", **rpc) == 1
    agent = {"grpc_service": "qtmesh.api.agent.v1.AgentService", "grpc_type": "UNARY"}
    assert value("grpc_client_handled_total", grpc_method="Recommend", grpc_code="OK", **agent) == 2
    assert (
        value("grpc_client_handled_total", grpc_method="ExecuteAction", grpc_code="OK", **agent)
        == 2
    )
    unavailable = value(
        "grpc_client_handled_total", grpc_method="Recommend", grpc_code="Unavailable", **agent
    )
    assert unavailable == 2  # the dead agent, asked twice
    names = {name for name, _ in samples}
    assert {"qtmesh_plan_subscribers", "qtmesh_plan_subscriber_lag"} <= names
    assert "process_resident_memory_bytes" in names


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        return response.read().decode()
